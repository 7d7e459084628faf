//! Spin's key-value store and variables for `wasmtime serve`, which gives
//! every request a fresh instance: the store lives in files under `/kv`
//! (`wasmtime serve --dir HOST_DIR::/kv`), one per key, so it outlives the
//! instance; a variable `failsoft_x` is the environment variable
//! `FAILSOFT_X` (`wasmtime serve --env FAILSOFT_X=…`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use std::{fs, io};

use exports::fermyon::spin::key_value::{self, Error};
use exports::fermyon::spin::variables;

wit_bindgen::generate!({ world: "shim", path: "wit" });

const ROOT: &str = "/kv";

struct Shim;

pub struct FileStore;

/// A key's file: hex of its bytes, so any key is a safe file name.
fn path(key: &str) -> String {
    let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{ROOT}/{hex}")
}

fn other(e: io::Error) -> Error {
    Error::Other(e.to_string())
}

impl key_value::Guest for Shim {
    type Store = FileStore;
}

impl key_value::GuestStore for FileStore {
    fn open(label: String) -> Result<key_value::Store, Error> {
        if label != "default" {
            return Err(Error::NoSuchStore);
        }
        fs::metadata(ROOT).map_err(|e| Error::Other(format!("{ROOT} is not mounted: {e}")))?;
        Ok(key_value::Store::new(FileStore))
    }

    fn get(&self, key: String) -> Result<Option<Vec<u8>>, Error> {
        match fs::read(path(&key)) {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(other(e)),
        }
    }

    /// Write-then-rename, so a concurrent reader never sees half a value.
    fn set(&self, key: String, value: Vec<u8>) -> Result<(), Error> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let tmp = format!("{ROOT}/.tmp-{nanos}-{}", SEQ.fetch_add(1, Ordering::Relaxed));
        fs::write(&tmp, value).map_err(other)?;
        fs::rename(&tmp, path(&key)).map_err(other)
    }

    fn delete(&self, key: String) -> Result<(), Error> {
        match fs::remove_file(path(&key)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(other(e)),
            _ => Ok(()),
        }
    }

    fn exists(&self, key: String) -> Result<bool, Error> {
        Ok(fs::metadata(path(&key)).is_ok())
    }

    fn get_keys(&self) -> Result<Vec<String>, Error> {
        let mut keys = Vec::new();
        for entry in fs::read_dir(ROOT).map_err(other)? {
            let name = entry.map_err(other)?.file_name().into_string().unwrap_or_default();
            let bytes: Option<Vec<u8>> = (0..name.len())
                .step_by(2)
                .map(|i| name.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .collect();
            if let Some(key) = bytes.and_then(|b| String::from_utf8(b).ok()) {
                keys.push(key);
            }
        }
        Ok(keys)
    }
}

impl variables::Guest for Shim {
    fn get(name: String) -> Result<String, variables::Error> {
        let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(variables::Error::InvalidName(name));
        }
        std::env::var(name.to_ascii_uppercase()).map_err(|_| variables::Error::Undefined(name))
    }
}

export!(Shim);
