//! Templates: text with `{{name}}` or `{{name|escaper}}` holes, filled at
//! run time from what one call knows (the caller's number, the
//! correlationId, the case's fields) and from secrets bound at start-up.
//!
//! What a hole's value can do is decided by where it lands, never by
//! trusting the value:
//!
//! - a **path segment** is percent-encoded whole (a `/` cannot add a
//!   segment);
//! - a **query value** is form-encoded whole by the caller of
//!   [`Template::render`]; a hole that shares its value with other text (a
//!   query language: SOQL, Zendesk search, a ServiceNow encoded query) must
//!   name the language's escaper, or the mapping is refused at start-up;
//! - a **JSON body** is a tree whose string leaves are templates, so a
//!   value is always one JSON string (or the case's own JSON value, for a
//!   leaf that is a hole alone): JSON's own escaping applies;
//! - a **header** value refuses control characters (no header can be
//!   split).
//!
//! An escaper refuses what its language cannot hold rather than passing it
//! through (a Zendesk phrase cannot hold a `"`; a ServiceNow encoded query
//! has no escape for `^`).

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde_json::Value;

/// Where a hole's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The caller's number, E.164.
    Phone,
    /// The write's correlationId (the case's external reference).
    CorrelationId,
    /// A field of the case being written (`case.subject`), or the whole
    /// case (`case`, a body leaf on its own: the generic contract's body).
    Case(String),
    /// A secret the host holds (`secret.NAME`), bound at start-up; allowed
    /// only in headers and the token request.
    Secret(String),
    /// The customer list's lower bound: `since` (RFC 3339, UTC, whole
    /// seconds), `since_epoch_s` or `since_epoch_ms`; a full pass asks for
    /// everything changed since the epoch's start.
    Since(TimeFormat),
    /// The list's cursor for the next page (`cursor`), from the last answer.
    Cursor,
    /// The list's page size (`page_size`), from the sync's settings.
    PageSize,
}

/// How a time is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFormat {
    /// With milliseconds: `2026-12-07T10:00:00.123Z`.
    Rfc3339,
    /// Whole seconds, rounded down (for a language that takes no fraction,
    /// SOQL): a list asked from a little earlier only reads a record again.
    Rfc3339Seconds,
    EpochSecs,
    EpochMillis,
}

/// How a value is escaped inside a longer text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escaper {
    /// The hole is the whole value (the context escapes it), or plain text
    /// in a context that has no language (a path segment, a header).
    Plain,
    /// Plain text within text that is not a query language, said
    /// explicitly (`{{case.subject|text}}` in a longer subject).
    Text,
    /// A SOQL string literal between single quotes: `\` `'` `"` and the
    /// control escapes `\n \r \t \b \f` are backslash-escaped; other control
    /// characters are refused.
    Soql,
    /// A Zendesk search phrase between double quotes: no escape exists, so a
    /// `"`, a `\` or a control character is refused.
    Zendesk,
    /// A value in a ServiceNow encoded query: `^` (the condition separator)
    /// has no escape and is refused, as are control characters.
    ServiceNow,
    /// A date-time literal written bare (SOQL's `2026-12-07T10:00:00Z`):
    /// digits and `-:T.Z+` only.
    Datetime,
}

impl Escaper {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "text" => Self::Text,
            "soql" => Self::Soql,
            "zendesk" => Self::Zendesk,
            "servicenow" => Self::ServiceNow,
            "datetime" => Self::Datetime,
            _ => return None,
        })
    }

    /// `value` escaped for this language, or why it cannot be.
    pub fn apply(self, value: &str) -> Result<String, &'static str> {
        let control = |c: char| c.is_control();
        match self {
            Self::Plain | Self::Text => Ok(value.to_owned()),
            Self::Soql => {
                let mut out = String::with_capacity(value.len() + 2);
                for c in value.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '\'' => out.push_str("\\'"),
                        '"' => out.push_str("\\\""),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\t' => out.push_str("\\t"),
                        '\u{8}' => out.push_str("\\b"),
                        '\u{c}' => out.push_str("\\f"),
                        c if control(c) => return Err("a control character SOQL cannot escape"),
                        c => out.push(c),
                    }
                }
                Ok(out)
            }
            Self::Zendesk if value.contains(['"', '\\']) || value.chars().any(control) => {
                Err("a quote, backslash or control character, which a Zendesk search phrase cannot hold")
            }
            Self::ServiceNow if value.contains('^') || value.chars().any(control) => {
                Err("a '^' or control character, which a ServiceNow encoded query cannot hold")
            }
            Self::Datetime if !value.bytes().all(|b| b.is_ascii_digit() || b"-:T.Z+".contains(&b)) => {
                Err("a character a bare date-time cannot hold")
            }
            Self::Zendesk | Self::ServiceNow | Self::Datetime => Ok(value.to_owned()),
        }
    }
}

/// A hole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hole {
    pub source: Source,
    pub escaper: Escaper,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Hole(Hole),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// What a template may draw on at run time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Values<'a> {
    pub phone: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    pub case: Option<&'a Value>,
    /// The list's lower bound, milliseconds since the epoch.
    pub since_ms: Option<u64>,
    pub cursor: Option<&'a str>,
    pub page_size: Option<u32>,
}

/// Why a template could not be filled for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// The call has no such value (a phone in a write's template).
    Missing(String),
    /// The value holds what the escaper cannot hold.
    Unescapable { hole: String, why: &'static str },
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(hole) => write!(f, "{{{{{hole}}}}} has no value in this call"),
            Self::Unescapable { hole, why } => write!(f, "the value of {{{{{hole}}}}} holds {why}"),
        }
    }
}

fn source_name(source: &Source) -> String {
    match source {
        Source::Phone => "phone".to_owned(),
        Source::CorrelationId => "correlation_id".to_owned(),
        Source::Case(field) if field.is_empty() => "case".to_owned(),
        Source::Case(field) => alloc::format!("case.{field}"),
        Source::Secret(name) => alloc::format!("secret.{name}"),
        Source::Since(TimeFormat::Rfc3339) => "since".to_owned(),
        Source::Since(TimeFormat::Rfc3339Seconds) => "since_s".to_owned(),
        Source::Since(TimeFormat::EpochSecs) => "since_epoch_s".to_owned(),
        Source::Since(TimeFormat::EpochMillis) => "since_epoch_ms".to_owned(),
        Source::Cursor => "cursor".to_owned(),
        Source::PageSize => "page_size".to_owned(),
    }
}

impl Template {
    /// Parses `text`. `vars` fills `{{vars.NAME}}` now (an operator's own
    /// setting, part of the template's text from here on).
    pub fn parse(text: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            literal.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| alloc::format!("a '{{{{' is not closed in {text:?}"))?;
            let inner = after[..close].trim();
            rest = &after[close + 2..];
            let (name, escaper) = match inner.split_once('|') {
                Some((name, esc)) => {
                    let esc = esc.trim();
                    let escaper = Escaper::parse(esc).ok_or_else(|| {
                        alloc::format!("{{{{{inner}}}}}: no escaper {esc:?} (text, soql, zendesk, servicenow)")
                    })?;
                    (name.trim(), escaper)
                }
                None => (inner, Escaper::Plain),
            };
            let source = match name {
                "phone" => Source::Phone,
                "correlation_id" => Source::CorrelationId,
                "case" => Source::Case(String::new()),
                "since" => Source::Since(TimeFormat::Rfc3339),
                "since_s" => Source::Since(TimeFormat::Rfc3339Seconds),
                "since_epoch_s" => Source::Since(TimeFormat::EpochSecs),
                "since_epoch_ms" => Source::Since(TimeFormat::EpochMillis),
                "cursor" => Source::Cursor,
                "page_size" => Source::PageSize,
                _ if name.starts_with("vars.") => {
                    let var = &name[5..];
                    let value = vars(var).ok_or_else(|| alloc::format!("{{{{{name}}}}}: no such entry in [vars]"))?;
                    literal.push_str(&value);
                    continue;
                }
                _ if name.starts_with("case.") && is_identifier(&name[5..]) => Source::Case(name[5..].to_owned()),
                _ if name.starts_with("secret.") && is_identifier(&name[7..]) => Source::Secret(name[7..].to_owned()),
                _ => {
                    return Err(alloc::format!(
                        "{{{{{name}}}}} is not a value a call has (phone, correlation_id, case, case.FIELD, since, \
                         since_s, since_epoch_s, since_epoch_ms, cursor, page_size, secret.NAME, vars.NAME)"
                    ));
                }
            };
            if !literal.is_empty() {
                pieces.push(Piece::Text(core::mem::take(&mut literal)));
            }
            pieces.push(Piece::Hole(Hole { source, escaper }));
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Self { pieces })
    }

    /// The holes, in order.
    pub fn holes(&self) -> impl Iterator<Item = &Hole> {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Hole(hole) => Some(hole),
            Piece::Text(_) => None,
        })
    }

    /// The single hole, when the template is one hole and nothing else.
    pub fn lone_hole(&self) -> Option<&Hole> {
        match self.pieces.as_slice() {
            [Piece::Hole(hole)] => Some(hole),
            _ => None,
        }
    }

    /// Whether the template is text only.
    pub fn is_literal(&self) -> bool {
        self.holes().next().is_none()
    }

    /// Fills the template. `encode` is applied to each hole's escaped value
    /// (a path segment's percent-encoding; identity elsewhere).
    pub fn render(
        &self,
        values: &Values<'_>,
        secrets: &dyn Fn(&str) -> Option<String>,
        encode: &dyn Fn(&str) -> String,
    ) -> Result<String, RenderError> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Hole(hole) => {
                    let value = hole_value(hole, values, secrets)?;
                    let escaped = hole
                        .escaper
                        .apply(&value)
                        .map_err(|why| RenderError::Unescapable { hole: source_name(&hole.source), why })?;
                    out.push_str(&encode(&escaped));
                }
            }
        }
        Ok(out)
    }
}

/// The hole's raw value as text.
pub(crate) fn hole_value(
    hole: &Hole,
    values: &Values<'_>,
    secrets: &dyn Fn(&str) -> Option<String>,
) -> Result<String, RenderError> {
    let missing = || RenderError::Missing(source_name(&hole.source));
    match &hole.source {
        Source::Phone => values.phone.map(str::to_owned).ok_or_else(missing),
        Source::CorrelationId => values.correlation_id.map(str::to_owned).ok_or_else(missing),
        Source::Secret(name) => secrets(name).ok_or_else(missing),
        Source::Since(format) => Ok(write_time(values.since_ms.unwrap_or(0), *format)),
        Source::Cursor => values.cursor.map(str::to_owned).ok_or_else(missing),
        Source::PageSize => values.page_size.map(|n| alloc::format!("{n}")).ok_or_else(missing),
        Source::Case(field) if field.is_empty() => Err(missing()),
        Source::Case(field) => match values.case.and_then(|case| case.get(field)) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Null) | None => Ok(String::new()),
            Some(other) => Ok(alloc::string::ToString::to_string(other)),
        },
    }
}

/// The case's own JSON value for a lone hole in a body (`"{{case.x}}"`
/// keeps a number a number); `None` leaves the field out.
pub(crate) fn lone_value(hole: &Hole, values: &Values<'_>) -> Option<Value> {
    match &hole.source {
        Source::Case(field) if field.is_empty() => values.case.cloned(),
        Source::Case(field) => values.case.and_then(|case| case.get(field)).filter(|v| !v.is_null()).cloned(),
        Source::Phone => values.phone.map(Value::from),
        Source::CorrelationId => values.correlation_id.map(Value::from),
        Source::Secret(_) => None,
        Source::Since(format) => Some(Value::from(write_time(values.since_ms.unwrap_or(0), *format))),
        Source::Cursor => values.cursor.map(Value::from),
        Source::PageSize => values.page_size.map(Value::from),
    }
}

/// Whether a lone hole has no value in this call (a query pair or a body
/// field is then left out).
pub(crate) fn is_absent(hole: &Hole, values: &Values<'_>) -> bool {
    match hole.source {
        Source::Cursor => values.cursor.is_none(),
        Source::PageSize => values.page_size.is_none(),
        _ => false,
    }
}

/// `ms` as `format` writes it; RFC 3339 in UTC, whole seconds.
pub fn write_time(ms: u64, format: TimeFormat) -> String {
    match format {
        TimeFormat::EpochMillis => alloc::format!("{ms}"),
        TimeFormat::EpochSecs => alloc::format!("{}", ms / 1000),
        TimeFormat::Rfc3339 | TimeFormat::Rfc3339Seconds => {
            let secs = ms / 1000;
            let (days, rem) = (secs / 86_400, secs % 86_400);
            let (year, month, day) = civil_from_days(days as i64);
            let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
            match format {
                TimeFormat::Rfc3339 => {
                    alloc::format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z", ms % 1000)
                }
                _ => alloc::format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z"),
            }
        }
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Percent-encodes all but RFC 3986's unreserved characters: a path
/// segment's or a form value's encoding (a space is `%20`, which every
/// server reads in both).
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&alloc::format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_vars(_: &str) -> Option<String> {
        None
    }

    fn render(template: &str, phone: &str) -> Result<String, RenderError> {
        let values = Values { phone: Some(phone), correlation_id: Some("c-1"), ..Values::default() };
        Template::parse(template, &no_vars).unwrap().render(&values, &|_| None, &|s| s.to_owned())
    }

    #[test]
    fn soql_literals_cannot_be_closed_by_a_value() {
        let t = "SELECT Id FROM Contact WHERE Phone = '{{phone|soql}}'";
        assert_eq!(render(t, "+1555").unwrap(), "SELECT Id FROM Contact WHERE Phone = '+1555'");
        assert_eq!(
            render(t, "x' OR Phone != '").unwrap(),
            r"SELECT Id FROM Contact WHERE Phone = 'x\' OR Phone != \''",
            "the quote is escaped, so OR stays inside the literal"
        );
        assert_eq!(render(t, "a\\'b\nc").unwrap(), r"SELECT Id FROM Contact WHERE Phone = 'a\\\'b\nc'");
        assert!(matches!(render(t, "a\u{0}b"), Err(RenderError::Unescapable { .. })));
    }

    #[test]
    fn languages_without_an_escape_refuse_the_value() {
        assert_eq!(render("type:user phone:\"{{phone|zendesk}}\"", "+1555").unwrap(), "type:user phone:\"+1555\"");
        for bad in ["+1\" OR type:ticket", "+1\\", "+1\nx"] {
            assert!(render("phone:\"{{phone|zendesk}}\"", bad).is_err(), "{bad:?}");
        }
        assert_eq!(render("phone={{phone|servicenow}}", "+1555").unwrap(), "phone=+1555");
        assert!(render("phone={{phone|servicenow}}", "+1^ORphoneISNOTEMPTY").is_err());
    }

    #[test]
    fn parses_vars_now_and_refuses_unknown_names() {
        let vars = |name: &str| (name == "v").then(|| "v60.0".to_owned());
        let t = Template::parse("/services/data/{{vars.v}}/query", &vars).unwrap();
        assert!(t.is_literal());
        assert!(Template::parse("{{vars.nope}}", &vars).is_err());
        assert!(Template::parse("{{ssn}}", &vars).is_err());
        assert!(Template::parse("{{phone|sql}}", &vars).is_err());
        assert!(Template::parse("{{phone", &vars).is_err());
        let lone = Template::parse("{{ case.subject }}", &vars).unwrap();
        assert_eq!(lone.lone_hole().unwrap().source, Source::Case("subject".to_owned()));
    }

    #[test]
    fn times_are_written_as_asked() {
        assert_eq!(write_time(0, TimeFormat::Rfc3339), "1970-01-01T00:00:00.000Z");
        // `date -u -d @1796601600` (2026-12-07) and a leap day.
        assert_eq!(write_time(1_796_601_600_123, TimeFormat::Rfc3339), "2026-12-07T00:00:00.123Z");
        assert_eq!(write_time(1_796_601_600_123, TimeFormat::Rfc3339Seconds), "2026-12-07T00:00:00Z");
        assert_eq!(write_time(951_782_400_000, TimeFormat::Rfc3339Seconds), "2000-02-29T00:00:00Z");
        assert_eq!(write_time(1_796_630_400_123, TimeFormat::EpochSecs), "1796630400");
        assert_eq!(write_time(1_796_630_400_123, TimeFormat::EpochMillis), "1796630400123");
        assert!(Escaper::Datetime.apply("2026-12-07T00:00:00Z").is_ok());
        assert!(Escaper::Datetime.apply("2026-12-07 OR Id != null").is_err());
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved() {
        assert_eq!(percent_encode("+1 5/5?&=#'"), "%2B1%205%2F5%3F%26%3D%23%27");
        assert_eq!(percent_encode("a-Z_0.9~"), "a-Z_0.9~");
    }
}
