//! The drill's check that no phone number reached a log: every log file of
//! the stack (the edge, the worker, SQS and DynamoDB's stand-ins) is read,
//! and every run of 8–15 digits in it is looked up among the population's
//! numbers, so `+14170000042`, `14170000042` and `tel:+14170000042` are all
//! found. The simulator's own log is left out: it stands in for the CRM,
//! which holds the numbers by design. Only counts are reported, never a
//! number.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The simulator's log: the CRM's, not failsoft's.
const CRM_LOG: &str = "crm-sim.log";

/// What the scan found.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LogScan {
    /// Log files read.
    pub files: u64,
    pub bytes: u64,
    /// Phone numbers found, per file (only files with any).
    pub hits: BTreeMap<String, u64>,
}

impl LogScan {
    pub fn total_hits(&self) -> u64 {
        self.hits.values().sum()
    }
}

/// Scans every `*.log` in `dir` and its subfolders (wrangler keeps its own
/// there) except the simulator's for the digits of `phones` (E.164, with or
/// without the `+`).
pub fn scan(dir: &Path, phones: impl IntoIterator<Item = impl AsRef<str>>) -> std::io::Result<LogScan> {
    let digits: HashSet<String> = phones.into_iter().map(|p| p.as_ref().trim_start_matches('+').to_owned()).collect();
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
        let found = digit_runs(&bytes).filter(|run| digits.contains(*run)).count() as u64;
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

        let scan = scan(&dir, ["+14170000042", "+14170000043"]).unwrap();
        assert_eq!(scan.files, 3);
        let expected = BTreeMap::from([("edge.log".to_owned(), 2), ("wrangler/wrangler-1.log".to_owned(), 1)]);
        assert_eq!(scan.hits, expected);
        assert_eq!(scan.total_hits(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
