//! The committed corpora (`fuzz/corpus/{target}/`), replayed through every
//! target, then a few seconds of fresh inputs mutated from them: what
//! libFuzzer once found stays fixed, and `make test` fuzzes a little too.
//! `make fuzz` is the long run, coverage-guided (README, "Fuzzing").

use std::path::PathBuf;
use std::time::{Duration, Instant};

use failsoft_fuzzing::TARGETS;

/// Fresh mutations per target in `make test`.
const FRESH: Duration = Duration::from_secs(2);
const MAX_INPUT: usize = 4096;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.expect("a corpus entry").path()).expect("a readable corpus file"))
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn every_committed_input_passes_every_target() {
    for (name, target) in TARGETS {
        let inputs = corpus(name);
        assert!(inputs.len() >= 3, "{name}: the corpus has only {} inputs", inputs.len());
        for input in &inputs {
            target(input);
        }
        println!("{name}: {} committed inputs", inputs.len());
    }
}

/// xorshift64*: reproducible from the seed printed with a failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One of libFuzzer's simple mutations of `input`, spliced with `other`.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    const INTERESTING: [&[u8]; 8] =
        [b"\0", b"\xff", b"\"", b"{", b"}", b"-1", b"18446744073709551616", b"\xed\xa0\x80"];
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.insert(at, rng.next() as u8),
            2 if at < out.len() => {
                let end = (at + rng.below(8) + 1).min(out.len());
                out.drain(at..end);
            }
            3 => {
                let token = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(at..at, token.iter().copied());
            }
            4 if !other.is_empty() => {
                let from = rng.below(other.len());
                out.splice(at..at, other[from..].iter().copied().take(64));
            }
            _ => {
                let digits = (rng.next() % 100_000).to_string();
                out.splice(at..at, digits.bytes());
            }
        }
    }
    out.truncate(MAX_INPUT);
    out
}

#[test]
fn fresh_mutations_of_the_corpora_pass_every_target() {
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1;
    for (name, target) in TARGETS {
        let inputs = corpus(name);
        let mut rng = Rng(seed);
        let started = Instant::now();
        let mut runs = 0u64;
        while started.elapsed() < FRESH && runs < 1_000_000 {
            let (a, b) = (rng.below(inputs.len()), rng.below(inputs.len()));
            let input = mutate(&mut rng, &inputs[a], &inputs[b]);
            let outcome = std::panic::catch_unwind(|| target(&input));
            assert!(
                outcome.is_ok(),
                "{name} failed on a fresh input (seed {seed}); add it to fuzz/corpus/{name}/: {:02x?}",
                input
            );
            runs += 1;
        }
        println!("{name}: {runs} fresh inputs in {:.1} s (seed {seed})", started.elapsed().as_secs_f64());
    }
}
