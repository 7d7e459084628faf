//! The JSONPath subset a mapping reads answers with: `$`, then any run of
//! `.name`, `['name']` / `["name"]` and `[index]` (a negative index counts
//! from the end). Filters, wildcards and recursive descent are not offered:
//! a mapping names one value, and a path that could name many would make
//! "which customer is this" a matter of luck.

use alloc::borrow::ToOwned;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde_json::Value;

/// One step of a [`Path`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(i64),
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    text: String,
    steps: Vec<Step>,
}

/// Why a path did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError(pub String);

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Path {
    /// Parses `text`, which must start with `$`.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let err = |why: &str| PathError(alloc::format!("{text:?} is not a path this mapping reads ({why})"));
        let rest = text.strip_prefix('$').ok_or_else(|| err("it must start with $"))?;
        let bytes = rest.as_bytes();
        let mut steps = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'.' => {
                    let start = i + 1;
                    let mut end = start;
                    while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || matches!(bytes[end], b'_' | b'-'))
                    {
                        end += 1;
                    }
                    if end == start {
                        return Err(err("a '.' must be followed by a name; quote other names as ['name']"));
                    }
                    steps.push(Step::Key(rest[start..end].to_owned()));
                    i = end;
                }
                b'[' => {
                    let close = rest[i..].find(']').map(|at| i + at).ok_or_else(|| err("a '[' is not closed"))?;
                    let inner = &rest[i + 1..close];
                    let quoted = |q: char| inner.len() >= 2 && inner.starts_with(q) && inner.ends_with(q);
                    if quoted('\'') || quoted('"') {
                        let name = &inner[1..inner.len() - 1];
                        if name.contains(['\'', '"', '\\']) {
                            return Err(err("a quoted name may not hold quotes or backslashes"));
                        }
                        steps.push(Step::Key(name.to_owned()));
                    } else {
                        let index = inner
                            .parse::<i64>()
                            .map_err(|_| err("[..] holds an index or a quoted name; * and filters are not offered"))?;
                        steps.push(Step::Index(index));
                    }
                    i = close + 1;
                }
                _ => return Err(err("expected '.' or '['")),
            }
        }
        Ok(Self { text: text.to_owned(), steps })
    }

    /// The value the path names in `root`, if any (JSON `null` reads as none).
    pub fn get<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        let mut at = root;
        for step in &self.steps {
            at = match (step, at) {
                (Step::Key(key), Value::Object(map)) => map.get(key)?,
                (Step::Index(index), Value::Array(items)) => {
                    let len = i64::try_from(items.len()).ok()?;
                    let index = if *index < 0 { len + index } else { *index };
                    items.get(usize::try_from(index).ok()?)?
                }
                _ => return None,
            };
        }
        (!at.is_null()).then_some(at)
    }

    /// The named value as text: a string as it is, a number or a boolean
    /// written out; `None` for anything else or an empty string.
    pub fn text(&self, root: &Value) -> Option<String> {
        match self.get(root)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_keys_indexes_and_quoted_names() {
        let doc = json!({"records": [{"Id": "003A", "Tier__c": null}, {"Id": 7}], "x-y": {"a b": true}});
        let text = |p: &str| Path::parse(p).unwrap().text(&doc);
        assert_eq!(text("$.records[0].Id").as_deref(), Some("003A"));
        assert_eq!(text("$.records[-1].Id").as_deref(), Some("7"));
        assert_eq!(text("$['x-y'][\"a b\"]").as_deref(), Some("true"));
        assert_eq!(text("$.records[0].Tier__c"), None, "null is no value");
        assert_eq!(text("$.records[2].Id"), None);
        assert_eq!(text("$.records.Id"), None, "a key of an array names nothing");
        assert!(Path::parse("$").unwrap().get(&doc).is_some());
    }

    #[test]
    fn refuses_what_it_does_not_offer() {
        for bad in ["records[0]", "$.", "$..Id", "$.records[*]", "$.records[?(@.Id)]", "$[0", "$['a'b']", "$x"] {
            assert!(Path::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
