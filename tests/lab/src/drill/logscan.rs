//! The drill's check that no phone number reached a log or stored data:
//! every log file of the stack (the edge, the worker, SQS and DynamoDB's
//! stand-ins), and then every item of the DynamoDB tables and every dead
//! letter the drill can read ([`LogScan::add_stored`]), is read, and every
//! run of 8–15 digits in it is looked up among the population's numbers,
//! so `+14170000042`, `14170000042`, `tel:+14170000042`, the national
//! `4170000042` and `(417) 000-0042` are all found. The simulator's own log
//! is left out: it stands in for the CRM, which holds the numbers by
//! design. Only counts are reported, never a number.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The simulator's log: the CRM's, not failsoft's.
const CRM_LOG: &str = "crm-sim.log";

/// Separators a person writes inside a number: `(417) 000-0042`, `417.000.0042`.
const SEPARATORS: &[u8] = b" -.()";

/// What the scan found.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LogScan {
    /// Log files read.
    pub files: u64,
    pub bytes: u64,
    /// DynamoDB items read (the results and last-known tables); `None`:
    /// not read.
    pub items: Option<u64>,
    /// Dead letters read (each handed back); `None`: not read.
    pub dead_letters: Option<u64>,
    /// Phone numbers found, per log file or store (only those with any).
    pub hits: BTreeMap<String, u64>,
}

impl LogScan {
    pub fn total_hits(&self) -> u64 {
        self.hits.values().sum()
    }

    /// Scans `texts` read from the store named `source` (a table, the
    /// dead-letter queue) for `numbers`; returns how many texts were read.
    pub fn add_stored(&mut self, source: &str, texts: &[String], numbers: &Numbers) -> u64 {
        let found: u64 = texts.iter().map(|text| numbers.count_in(text.as_bytes())).sum();
        if found > 0 {
            *self.hits.entry(source.to_owned()).or_default() += found;
        }
        texts.len() as u64
    }
}

/// The population's numbers as digit strings: E.164 without the `+`, and,
/// for a North American number, its 10-digit national form.
pub struct Numbers(HashSet<String>);

impl Numbers {
    pub fn new(phones: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        let mut digits = HashSet::new();
        for phone in phones {
            let e164 = phone.as_ref().trim_start_matches('+');
            if let Some(national) = e164.strip_prefix('1').filter(|n| n.len() == 10) {
                digits.insert(national.to_owned());
            }
            digits.insert(e164.to_owned());
        }
        Self(digits)
    }

    /// How many of the numbers `bytes` holds, in any of the forms above.
    pub fn count_in(&self, bytes: &[u8]) -> u64 {
        let plain = digit_runs(bytes).filter(|run| self.0.contains(*run)).count();
        let written = written_numbers(bytes).filter(|run| self.0.contains(run)).count();
        (plain + written) as u64
    }
}

/// Scans every `*.log` in `dir` and its subfolders (wrangler keeps its own
/// there) except the simulator's for `numbers`.
pub fn scan(dir: &Path, numbers: &Numbers) -> std::io::Result<LogScan> {
    let mut result = LogScan::default();
    let mut entries = Vec::new();
    log_files(dir, 2, &mut entries)?;
    entries.sort();
    for path in entries {
        let name = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().into_owned();
        if name == CRM_LOG {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        result.files += 1;
        result.bytes += bytes.len() as u64;
        let found = numbers.count_in(&bytes);
        if found > 0 {
            result.hits.insert(name, found);
        }
    }
    Ok(result)
}

/// The `*.log` files under `dir`, `depth` folders deep.
fn log_files(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)?.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            if depth > 0 {
                log_files(&path, depth - 1, out)?;
            }
        } else if path.extension().is_some_and(|e| e == "log") {
            out.push(path);
        }
    }
    Ok(())
}

/// Every maximal run of 8–15 ASCII digits (the lengths an E.164 number can have).
fn digit_runs(bytes: &[u8]) -> impl Iterator<Item = &str> {
    bytes
        .split(|b| !b.is_ascii_digit())
        .filter(|run| (8..=15).contains(&run.len()))
        .map(|run| std::str::from_utf8(run).unwrap_or_default())
}

/// The digits of every number written with [`SEPARATORS`] between its
/// groups (at most two in a row, as in `) `), 8–15 digits in all. A run
/// with no separator is [`digit_runs`]'s, so nothing is counted twice.
fn written_numbers(bytes: &[u8]) -> impl Iterator<Item = String> + '_ {
    bytes
        .split(|b| !b.is_ascii_digit() && !SEPARATORS.contains(b))
        .flat_map(split_at_gaps)
        .filter(|piece| piece.iter().any(|b| !b.is_ascii_digit()))
        .map(|piece| piece.iter().filter(|b| b.is_ascii_digit()).map(|&b| char::from(b)).collect::<String>())
        .filter(|digits| (8..=15).contains(&digits.len()))
}

/// The pieces of a run of digits and separators that are one number each:
/// split where three or more separators meet, and trimmed of separators.
fn split_at_gaps(run: &[u8]) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let (mut start, mut gap) = (None, 0);
    for (i, b) in run.iter().enumerate() {
        if b.is_ascii_digit() {
            start.get_or_insert(i);
            gap = 0;
            continue;
        }
        gap += 1;
        if gap == 3
            && let Some(from) = start.take()
        {
            pieces.push(&run[from..i - 2]);
        }
    }
    if let Some(from) = start {
        // Fewer than three separators trail it (three would have ended it).
        pieces.push(&run[from..run.len() - gap]);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_number_in_any_form_and_skips_the_crm_log() {
        let dir = std::env::temp_dir().join(format!("failsoft-logscan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        write("edge.log", r#"{"ani":"tel:+14170000042"} and 14170000042 but not 141700000421 or 1795904463734"#);
        write("worker.log", r#"{"message":"delivered","correlation_id":"c-1"}"#);
        write("crm-sim.log", "+14170000042");
        write("notes.txt", "+14170000042");
        std::fs::create_dir_all(dir.join("wrangler")).unwrap();
        write("wrangler/wrangler-1.log", "GET /?ani=%2B14170000043");

        let numbers = Numbers::new(["+14170000042", "+14170000043"]);
        let mut scan = scan(&dir, &numbers).unwrap();
        assert_eq!(scan.files, 3);
        let expected = BTreeMap::from([("edge.log".to_owned(), 2), ("wrangler/wrangler-1.log".to_owned(), 1)]);
        assert_eq!(scan.hits, expected);
        assert_eq!(scan.total_hits(), 3);

        let items = [r#"{"result": S("{\"caseId\":\"CASE-1\",\"createdAt\":1796083200000}")}"#.to_owned()];
        assert_eq!(scan.add_stored("dynamodb failsoft-results", &items, &numbers), 1);
        let letters = [r#"{"case":{"phone":"+14170000043","description":"ring (417) 000-0042"}}"#.to_owned()];
        assert_eq!(scan.add_stored("dead letters", &letters, &numbers), 1);
        assert_eq!(scan.hits.get("dead letters"), Some(&2));
        assert_eq!(scan.hits.get("dynamodb failsoft-results"), None);
        assert_eq!(scan.total_hits(), 5);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_number_is_found_in_national_and_written_forms_once_each() {
        let numbers = Numbers::new(["+14170000042"]);
        let count = |text: &str| numbers.count_in(text.as_bytes());
        assert_eq!(count("4170000042"), 1);
        assert_eq!(count("call (417) 000-0042 now"), 1);
        assert_eq!(count("417.000.0042"), 1);
        assert_eq!(count("+1 417 000 0042"), 1);
        assert_eq!(count("x 14170000042 y"), 1);
        assert_eq!(count("14170000042 5"), 1, "a plain run next to another number is counted once");
        assert_eq!(count("417   000 0042"), 0, "three separators in a row end a number");
        assert_eq!(count("2026-12-07 03:14:14.123 id 41700000421"), 0);
        assert_eq!(Numbers::new(["+442071234567"]).count_in(b"02071234567"), 0, "national forms for +1 only");
    }
}
