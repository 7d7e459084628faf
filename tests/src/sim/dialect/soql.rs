//! A small, strict SOQL parser and evaluator: exactly the subset the
//! salesforce dialect serves, refusing everything else as Salesforce
//! refuses a query it cannot parse (`MALFORMED_QUERY`).
//!
//! Grammar (keywords in any case, as in SOQL):
//!
//! ```text
//! query    := SELECT field {, field} FROM object [WHERE cond]
//!             [ORDER BY field [ASC|DESC] {, field [ASC|DESC]}] [LIMIT digits]
//! cond     := unary {AND unary} | unary {OR unary}   (mixing needs parentheses, as in SOQL)
//! unary    := NOT unary | ( cond ) | field (= | != | <>) (string | NULL | datetime)
//!           | field (< | <= | > | >=) datetime
//! string   := ' ... '   with the escapes of "Quoted String Escape Sequences"
//! datetime := YYYY-MM-DDThh:mm:ss[.fff](Z | +hh:mm | -hh:mm)   (unquoted)
//! ```
//!
//! String literals follow
//! <https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_quotedstringescapes.htm>
//! and "Reserved Characters"
//! (<https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_reservedcharacters.htm>):
//! `\n \r \t \b \f` (either case), `\" \' \\` and `\uXXXX`; any other
//! backslash is an error, and an unescaped `'` ends the literal — so a value
//! pasted unescaped into a query can add `OR` terms, which this evaluator
//! evaluates as Salesforce would. `\b` is taken as backspace (U+0008): the
//! English page says "Bell", its Japanese translation and Java (which
//! Salesforce runs on) say backspace. `\_` and `\%` belong to `LIKE`, which
//! is not served, so they are refused here.
//!
//! dateTime literals follow "Date Formats and Date Literals"
//! (<https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_dateformats.htm>):
//! unquoted, `YYYY-MM-DDThh:mm:ssZ` or with a `+hh:mm`/`-hh:mm` offset, here
//! also with fractional seconds (to the millisecond; further digits are
//! dropped). An impossible date or time is refused `MALFORMED_QUERY`.
//!
//! Comparisons of text are case-insensitive and an empty string is the same
//! as `null`, as Salesforce stores text fields (so `Phone = ''` matches
//! records without a phone, and `Phone != ''` those with one). dateTime
//! values compare as instants. `ORDER BY` sorts text without case and
//! dateTimes by instant, nulls first when ascending and last when descending
//! (SOQL's defaults); ties keep the records' own order. Not served (refused
//! `MALFORMED_QUERY`): `LIKE`, `IN`, `<`/`>` on anything but a dateTime
//! literal, date-only literals (`YYYY-MM-DD`) and date literals such as
//! `TODAY`, `NULLS FIRST|LAST`, relationship fields (`Account.Name`),
//! functions, `GROUP BY`, `OFFSET`, subqueries, bind variables.

use std::cmp::Ordering;
use std::fmt;

/// A refusal: Salesforce's `errorCode` and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoqlError {
    pub code: &'static str,
    pub message: String,
}

impl fmt::Display for SoqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl SoqlError {
    /// A refusal pointing at byte `at` of `query`, as Salesforce words them:
    /// the query's line, a caret, `ERROR at Row:r:Column:c` and the detail.
    pub fn at(code: &'static str, query: &str, at: usize, detail: &str) -> Self {
        let at = at.min(query.len());
        let line_start = query[..at].rfind('\n').map_or(0, |i| i + 1);
        let line_end = query[line_start..].find('\n').map_or(query.len(), |i| line_start + i);
        let row = query[..at].matches('\n').count() + 1;
        let column = query[line_start..at].chars().count() + 1;
        let caret = " ".repeat(column - 1);
        let line = &query[line_start..line_end];
        Self { code, message: format!("\n{line}\n{caret}^\nERROR at Row:{row}:Column:{column}\n{detail}") }
    }

    fn malformed(query: &str, at: usize, detail: &str) -> Self {
        Self::at("MALFORMED_QUERY", query, at, detail)
    }
}

/// A name as written in the query, and where (byte offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub at: usize,
}

/// The right-hand side of a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    Text(String),
    Null,
    /// An unquoted dateTime literal: milliseconds since the epoch.
    DateTime(i64),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    /// `!=` or `<>`.
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    /// Whether `actual` compared with the literal (`actual.cmp(literal)`)
    /// satisfies the operator.
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Self::Eq => ordering == Ordering::Equal,
            Self::Ne => ordering != Ordering::Equal,
            Self::Lt => ordering == Ordering::Less,
            Self::Le => ordering != Ordering::Greater,
            Self::Gt => ordering == Ordering::Greater,
            Self::Ge => ordering != Ordering::Less,
        }
    }
}

/// A record's field value, as the evaluator compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    Text(String),
    /// A dateTime field's instant: milliseconds since the epoch.
    DateTime(i64),
}

/// A `WHERE` clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// `field <op> value`.
    Compare {
        field: Ident,
        op: Op,
        value: Literal,
    },
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
}

impl Cond {
    /// Whether a record matches; `value_of` gives a field's value by its
    /// name as written (`None` for null).
    pub fn matches(&self, value_of: &dyn Fn(&str) -> Option<Datum>) -> bool {
        match self {
            Self::Compare { field, op, value } => compare(value_of(&field.name), *op, value),
            Self::All(parts) => parts.iter().all(|part| part.matches(value_of)),
            Self::Any(parts) => parts.iter().any(|part| part.matches(value_of)),
            Self::Not(inner) => !inner.matches(value_of),
        }
    }

    /// Every comparison, in query order.
    pub fn comparisons(&self) -> Vec<(&Ident, &Literal)> {
        match self {
            Self::Compare { field, value, .. } => vec![(field, value)],
            Self::All(parts) | Self::Any(parts) => parts.iter().flat_map(Self::comparisons).collect(),
            Self::Not(inner) => inner.comparisons(),
        }
    }
}

/// One comparison: text without case (empty is null), dateTimes as
/// instants; a null compared with a dateTime satisfies only `!=`.
fn compare(actual: Option<Datum>, op: Op, wanted: &Literal) -> bool {
    match (wanted, actual) {
        (Literal::DateTime(want), Some(Datum::DateTime(have))) => op.holds(have.cmp(want)),
        (Literal::DateTime(_), _) => op == Op::Ne,
        (Literal::Null, actual) => {
            let null = match actual {
                None => true,
                Some(Datum::Text(text)) => text.is_empty(),
                Some(Datum::DateTime(_)) => false,
            };
            op.holds(if null { Ordering::Equal } else { Ordering::Greater })
        }
        (Literal::Text(want), actual) => {
            let have = match actual {
                None => String::new(),
                Some(Datum::Text(text)) => text,
                Some(Datum::DateTime(ms)) => ms.to_string(),
            };
            op.holds(have.to_lowercase().cmp(&want.to_lowercase()))
        }
    }
}

/// How `ORDER BY` places two values of one field: text without case,
/// dateTimes by instant, nulls first (then `descending` reverses it all,
/// putting nulls last, as SOQL does by default).
pub fn order(a: Option<&Datum>, b: Option<&Datum>, descending: bool) -> Ordering {
    let rank = |d: Option<&Datum>| match d {
        None => (0, None, String::new()),
        Some(Datum::Text(text)) if text.is_empty() => (0, None, String::new()),
        Some(Datum::DateTime(ms)) => (1, Some(*ms), String::new()),
        Some(Datum::Text(text)) => (2, None, text.to_lowercase()),
    };
    let ordering = rank(a).cmp(&rank(b));
    if descending { ordering.reverse() } else { ordering }
}

/// One `ORDER BY` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    pub field: Ident,
    pub descending: bool,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub fields: Vec<Ident>,
    pub object: Ident,
    pub filter: Option<Cond>,
    pub order: Vec<OrderBy>,
    pub limit: Option<u64>,
}

/// Escapes `text` for a single-quoted SOQL literal (without the quotes):
/// what a client must do to every value it puts in a query.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c => out.push(c),
        }
    }
    out
}

/// Whether `text` is a plain field or object name.
pub fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

const KEYWORDS: &[&str] = &[
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "LIMIT", "NULL", "ORDER", "GROUP", "BY", "HAVING", "OFFSET", "LIKE",
    "IN", "INCLUDES", "EXCLUDES", "WITH", "FOR", "USING", "TRUE", "FALSE", "ASC", "DESC", "NULLS",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Text(String),
    Digits(String),
    Comma,
    Open,
    Close,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// A dateTime literal: its instant (ms) and its text.
    DateTime(i64, String),
    Other(char),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    at: usize,
}

impl Tok {
    fn shown(&self) -> String {
        match self {
            Self::Word(w) | Self::Digits(w) | Self::DateTime(_, w) => w.clone(),
            Self::Text(t) => format!("'{}'", escape(t)),
            Self::Comma => ",".into(),
            Self::Open => "(".into(),
            Self::Close => ")".into(),
            Self::Eq => "=".into(),
            Self::Ne => "!=".into(),
            Self::Lt => "<".into(),
            Self::Le => "<=".into(),
            Self::Gt => ">".into(),
            Self::Ge => ">=".into(),
            Self::Other(c) => c.to_string(),
            Self::End => "<EOF>".into(),
        }
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self, Self::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
}

fn lex(query: &str) -> Result<Vec<Token>, SoqlError> {
    let mut tokens = Vec::new();
    let mut chars = query.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let tok = match c {
            c if c.is_whitespace() => continue,
            ',' => Tok::Comma,
            '(' => Tok::Open,
            ')' => Tok::Close,
            '=' => Tok::Eq,
            '!' if chars.peek().is_some_and(|&(_, n)| n == '=') => {
                chars.next();
                Tok::Ne
            }
            '<' | '>' => {
                let next = chars.peek().map(|&(_, n)| n);
                let (tok, two) = match (c, next) {
                    ('<', Some('>')) => (Tok::Ne, true),
                    ('<', Some('=')) => (Tok::Le, true),
                    ('<', _) => (Tok::Lt, false),
                    (_, Some('=')) => (Tok::Ge, true),
                    _ => (Tok::Gt, false),
                };
                if two {
                    chars.next();
                }
                tok
            }
            '\'' => Tok::Text(string_literal(query, at, &mut chars)?),
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut word = String::from(c);
                while let Some(&(_, n)) = chars.peek().filter(|&&(_, n)| n.is_ascii_alphanumeric() || n == '_') {
                    word.push(n);
                    chars.next();
                }
                Tok::Word(word)
            }
            c if c.is_ascii_digit() => match datetime_literal(&query[at..]) {
                Some(Ok((len, ms))) => {
                    while chars.peek().is_some_and(|&(i, _)| i < at + len) {
                        chars.next();
                    }
                    Tok::DateTime(ms, query[at..at + len].to_owned())
                }
                Some(Err(detail)) => {
                    let end = query[at..].find(|c: char| c.is_whitespace() || c == ')').map_or(query.len(), |i| at + i);
                    let text = &query[at..end];
                    return Err(SoqlError::malformed(
                        query,
                        at,
                        &format!("invalid dateTime literal '{text}': {detail}"),
                    ));
                }
                None => {
                    let mut digits = String::from(c);
                    while let Some(&(_, n)) = chars.peek().filter(|&&(_, n)| n.is_ascii_alphanumeric()) {
                        digits.push(n);
                        chars.next();
                    }
                    Tok::Digits(digits)
                }
            },
            other => Tok::Other(other),
        };
        tokens.push(Token { tok, at });
    }
    tokens.push(Token { tok: Tok::End, at: query.len() });
    Ok(tokens)
}

/// A dateTime literal at the start of `text`: its length in bytes and its
/// instant (ms since the epoch). `None` when `text` does not begin like one
/// (`YYYY-MM-DDT`), the reason when it begins like one but is not.
fn datetime_literal(text: &str) -> Option<Result<(usize, i64), &'static str>> {
    let b = text.as_bytes();
    let number = |from: usize, len: usize| -> Option<u32> {
        let digits = b.get(from..from + len)?;
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let (year, month, day) = (number(0, 4)?, number(5, 2)?, number(8, 2)?);
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T')) {
        return None;
    }
    Some((|| {
        let (Some(hour), Some(minute), Some(second)) = (number(11, 2), number(14, 2), number(17, 2)) else {
            return Err("the time must be hh:mm:ss");
        };
        if !(at(13, b':') && at(16, b':')) {
            return Err("the time must be hh:mm:ss");
        }
        let mut end = 19;
        let mut millis = 0;
        if at(end, b'.') {
            let start = end + 1;
            end = start;
            while b.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
            if end == start {
                return Err("fractional seconds need digits");
            }
            // Milliseconds: the first three digits, padded with zeros.
            millis = (start..start + 3).fold(0, |n, i| n * 10 + if i < end { u32::from(b[i] - b'0') } else { 0 });
        }
        let offset = match b.get(end) {
            Some(b'Z') => {
                end += 1;
                time::UtcOffset::UTC
            }
            Some(&sign @ (b'+' | b'-')) => {
                let (Some(h), Some(m)) = (number(end + 1, 2), number(end + 4, 2)) else {
                    return Err("the offset must be +hh:mm or -hh:mm");
                };
                if !at(end + 3, b':') {
                    return Err("the offset must be +hh:mm or -hh:mm");
                }
                end += 6;
                let sign = if sign == b'-' { -1 } else { 1 };
                let (Ok(h), Ok(m)) = (i8::try_from(h), i8::try_from(m)) else {
                    return Err("the offset is out of range");
                };
                time::UtcOffset::from_hms(h * sign, m * sign, 0).map_err(|_| "the offset is out of range")?
            }
            _ => return Err("a time zone is required: Z, +hh:mm or -hh:mm"),
        };
        if b.get(end).is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b':' | b'-' | b'+')) {
            return Err("unexpected characters after the time zone");
        }
        let month = u8::try_from(month).ok().and_then(|m| time::Month::try_from(m).ok()).ok_or("no such month")?;
        let year = i32::try_from(year).map_err(|_| "no such year")?;
        let day = u8::try_from(day).map_err(|_| "no such day")?;
        let date = time::Date::from_calendar_date(year, month, day).map_err(|_| "no such date")?;
        let [hour, minute, second] = [hour, minute, second].map(|n| u8::try_from(n).unwrap_or(u8::MAX));
        let millis = u16::try_from(millis).unwrap_or(u16::MAX);
        let clock = time::Time::from_hms_milli(hour, minute, second, millis).map_err(|_| "no such time")?;
        let instant = time::PrimitiveDateTime::new(date, clock).assume_offset(offset);
        let ms = i64::try_from(instant.unix_timestamp_nanos() / 1_000_000).map_err(|_| "out of range")?;
        Ok((end, ms))
    })())
}

/// Reads a literal whose opening quote is at `start`.
fn string_literal(
    query: &str,
    start: usize,
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
) -> Result<String, SoqlError> {
    let mut text = String::new();
    loop {
        let Some((at, c)) = chars.next() else {
            return Err(SoqlError::malformed(query, start, "line 1: unterminated string literal: missing closing '"));
        };
        match c {
            '\'' => return Ok(text),
            '\\' => {
                let Some((_, escaped)) = chars.next() else {
                    return Err(SoqlError::malformed(
                        query,
                        at,
                        "line 1: unterminated string literal: missing closing '",
                    ));
                };
                let decoded = match escaped {
                    'n' | 'N' => '\n',
                    'r' | 'R' => '\r',
                    't' | 'T' => '\t',
                    'b' | 'B' => '\u{8}',
                    'f' | 'F' => '\u{c}',
                    '"' => '"',
                    '\'' => '\'',
                    '\\' => '\\',
                    'u' => {
                        let hex: String = (0..4).filter_map(|_| chars.next().map(|(_, h)| h)).collect();
                        u32::from_str_radix(&hex, 16)
                            .ok()
                            .filter(|_| hex.len() == 4 && hex.chars().all(|h| h.is_ascii_hexdigit()))
                            .and_then(char::from_u32)
                            .ok_or_else(|| {
                                SoqlError::malformed(query, at, &format!("Invalid unicode escape sequence: \\u{hex}"))
                            })?
                    }
                    other => {
                        return Err(SoqlError::malformed(
                            query,
                            at,
                            &format!("Invalid string literal: illegal escape sequence \\{other}"),
                        ));
                    }
                };
                text.push(decoded);
            }
            c => text.push(c),
        }
    }
}

struct Parser<'q> {
    query: &'q str,
    tokens: Vec<Token>,
    next: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if self.next < self.tokens.len() - 1 {
            self.next += 1;
        }
        token
    }

    fn unexpected(&self, token: &Token) -> SoqlError {
        SoqlError::malformed(self.query, token.at, &format!("unexpected token: '{}'", token.tok.shown()))
    }

    fn keyword(&mut self, keyword: &str) -> Result<(), SoqlError> {
        let token = self.advance();
        if token.tok.is_keyword(keyword) { Ok(()) } else { Err(self.unexpected(&token)) }
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.peek().tok.is_keyword(keyword);
        if found {
            self.advance();
        }
        found
    }

    /// A field or object name: a word that is not a keyword.
    fn name(&mut self) -> Result<Ident, SoqlError> {
        let token = self.advance();
        match &token.tok {
            Tok::Word(word) if !KEYWORDS.iter().any(|k| word.eq_ignore_ascii_case(k)) => {
                Ok(Ident { name: word.clone(), at: token.at })
            }
            _ => Err(self.unexpected(&token)),
        }
    }

    fn query(&mut self) -> Result<Query, SoqlError> {
        self.keyword("SELECT")?;
        let mut fields = vec![self.name()?];
        while self.peek().tok == Tok::Comma {
            self.advance();
            fields.push(self.name()?);
        }
        self.keyword("FROM")?;
        let object = self.name()?;
        let filter = if self.eat_keyword("WHERE") { Some(self.cond()?) } else { None };
        let mut order = Vec::new();
        if self.eat_keyword("ORDER") {
            self.keyword("BY")?;
            loop {
                let field = self.name()?;
                let descending = self.eat_keyword("DESC");
                if !descending {
                    self.eat_keyword("ASC");
                }
                order.push(OrderBy { field, descending });
                if self.peek().tok != Tok::Comma {
                    break;
                }
                self.advance();
            }
        }
        let limit = if self.eat_keyword("LIMIT") {
            let token = self.advance();
            match &token.tok {
                Tok::Digits(digits) => Some(digits.parse::<u64>().map_err(|_| self.unexpected(&token))?),
                _ => return Err(self.unexpected(&token)),
            }
        } else {
            None
        };
        let end = self.advance();
        if end.tok != Tok::End {
            return Err(self.unexpected(&end));
        }
        Ok(Query { fields, object, filter, order, limit })
    }

    fn cond(&mut self) -> Result<Cond, SoqlError> {
        let mut parts = vec![self.unary()?];
        let mut joiner: Option<&'static str> = None;
        loop {
            let found = ["AND", "OR"].into_iter().find(|k| self.peek().tok.is_keyword(k));
            let Some(keyword) = found else { break };
            if joiner.is_some_and(|j| j != keyword) {
                // SOQL needs parentheses to mix AND and OR.
                return Err(self.unexpected(&self.peek().clone()));
            }
            joiner = Some(keyword);
            self.advance();
            parts.push(self.unary()?);
        }
        Ok(match joiner {
            None => parts.remove(0),
            Some("AND") => Cond::All(parts),
            Some(_) => Cond::Any(parts),
        })
    }

    fn unary(&mut self) -> Result<Cond, SoqlError> {
        if self.eat_keyword("NOT") {
            return Ok(Cond::Not(Box::new(self.unary()?)));
        }
        if self.peek().tok == Tok::Open {
            self.advance();
            let inner = self.cond()?;
            let close = self.advance();
            return if close.tok == Tok::Close { Ok(inner) } else { Err(self.unexpected(&close)) };
        }
        let field = self.name()?;
        let operator = self.advance();
        let op = match operator.tok {
            Tok::Eq => Op::Eq,
            Tok::Ne => Op::Ne,
            Tok::Lt => Op::Lt,
            Tok::Le => Op::Le,
            Tok::Gt => Op::Gt,
            Tok::Ge => Op::Ge,
            _ => return Err(self.unexpected(&operator)),
        };
        let token = self.advance();
        let value = match (&token.tok, op) {
            (Tok::DateTime(ms, _), _) => Literal::DateTime(*ms),
            (Tok::Text(text), Op::Eq | Op::Ne) => Literal::Text(text.clone()),
            (tok, Op::Eq | Op::Ne) if tok.is_keyword("NULL") => Literal::Null,
            _ => return Err(self.unexpected(&token)),
        };
        Ok(Cond::Compare { field, op, value })
    }
}

/// Parses `query`, or refuses it `MALFORMED_QUERY`.
pub fn parse(query: &str) -> Result<Query, SoqlError> {
    let tokens = lex(query)?;
    Parser { query, tokens, next: 0 }.query()
}

/// The object a query reads (`FROM` what), even from a query this parser
/// refuses: for statistics.
pub fn object_of(query: &str) -> Option<String> {
    if let Ok(parsed) = parse(query) {
        return Some(parsed.object.name);
    }
    let mut words = query.split_whitespace();
    words.find(|w| w.eq_ignore_ascii_case("from"))?;
    let object: String = words.next()?.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    (!object.is_empty()).then_some(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of<'a>(record: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<Datum> + 'a {
        move |name| {
            record
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| (*v).to_owned())
                .filter(|v| !v.is_empty())
                .map(|v| match v.parse::<i64>() {
                    // A `…Date` field holds an instant (ms) here.
                    Ok(ms) if name.ends_with("Date") => Datum::DateTime(ms),
                    _ => Datum::Text(v),
                })
        }
    }

    #[test]
    fn parses_the_served_subset() {
        let q = parse("select Id, Phone,Tier__c FROM Contact where Phone = '+15550001' limit 1").expect("valid");
        assert_eq!(q.fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["Id", "Phone", "Tier__c"]);
        assert_eq!(q.object.name, "Contact");
        assert_eq!(q.limit, Some(1));
        let Some(Cond::Compare { field, op: Op::Eq, value: Literal::Text(v) }) = q.filter else {
            panic!("one comparison")
        };
        assert_eq!((field.name.as_str(), v.as_str()), ("Phone", "+15550001"));
        assert!(parse("SELECT Id FROM Case").is_ok_and(|q| q.filter.is_none() && q.limit.is_none()));
    }

    /// The shipped profile's list query: an unquoted dateTime, `!= null`
    /// and `ORDER BY`.
    #[test]
    fn parses_datetime_comparisons_and_order_by() {
        let q = parse(
            "SELECT Id, Phone, Tier__c, LastModifiedDate FROM Contact WHERE LastModifiedDate >= 2026-12-07T00:00:00Z \
             AND Phone != null ORDER BY LastModifiedDate",
        )
        .expect("valid");
        let Some(Cond::All(parts)) = &q.filter else { panic!("an AND") };
        assert_eq!(
            parts[0],
            Cond::Compare {
                field: Ident { name: "LastModifiedDate".into(), at: 63 },
                op: Op::Ge,
                value: Literal::DateTime(1_796_601_600_000),
            }
        );
        assert!(matches!(&parts[1], Cond::Compare { op: Op::Ne, value: Literal::Null, .. }));
        assert_eq!(q.order.len(), 1);
        assert_eq!((q.order[0].field.name.as_str(), q.order[0].descending), ("LastModifiedDate", false));
        assert_eq!(q.limit, None);
        let q = parse("SELECT Id FROM Contact ORDER BY Name DESC, LastModifiedDate ASC LIMIT 5").expect("valid");
        let keys: Vec<(&str, bool)> = q.order.iter().map(|o| (o.field.name.as_str(), o.descending)).collect();
        assert_eq!((keys, q.limit), (vec![("Name", true), ("LastModifiedDate", false)], Some(5)));
        for (op, want) in [("<", Op::Lt), ("<=", Op::Le), (">", Op::Gt), (">=", Op::Ge), ("=", Op::Eq), ("<>", Op::Ne)]
        {
            let q = parse(&format!("SELECT Id FROM Contact WHERE CreatedDate {op} 2026-12-07T00:00:00Z")).expect(op);
            assert!(matches!(q.filter, Some(Cond::Compare { op, .. }) if op == want), "{op}");
        }
    }

    #[test]
    fn datetime_literals_follow_the_soql_formats() {
        let at = |literal: &str| match parse(&format!("SELECT Id FROM Contact WHERE CreatedDate > {literal}")) {
            Ok(Query { filter: Some(Cond::Compare { value: Literal::DateTime(ms), .. }), .. }) => Ok(ms),
            Ok(other) => panic!("{other:?}"),
            Err(err) => Err(err),
        };
        // `date -u -d 2026-12-07T00:00:00Z +%s` is 1796601600.
        assert_eq!(at("2026-12-07T00:00:00Z"), Ok(1_796_601_600_000));
        assert_eq!(at("2026-12-07T01:30:00+01:30"), Ok(1_796_601_600_000), "an offset east of UTC");
        assert_eq!(at("2026-12-06T19:00:00-05:00"), Ok(1_796_601_600_000), "an offset west of UTC");
        assert_eq!(at("2026-12-07T00:00:00.123Z"), Ok(1_796_601_600_123));
        assert_eq!(at("2026-12-07T00:00:00.5Z"), Ok(1_796_601_600_500));
        assert_eq!(at("2026-12-07T00:00:00.123456+00:00"), Ok(1_796_601_600_123), "beyond the ms, dropped");
        assert_eq!(at("1969-12-31T23:59:59Z"), Ok(-1_000));
        assert_eq!(at("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000), "a leap day");
        for bad in [
            "2026-12-07T00:00:00",
            "2026-12-07T00:00Z",
            "2026-13-07T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-12-07T24:00:00Z",
            "2026-12-07T00:00:00+0100",
            "2026-12-07T00:00:00.Z",
            "2026-12-07T00:00:00ZZ",
            "2026-12-07T00:00:00+26:00",
        ] {
            let err = at(bad).expect_err(bad);
            assert_eq!(err.code, "MALFORMED_QUERY", "{bad}");
            assert!(err.message.contains("invalid dateTime literal"), "{bad}: {}", err.message);
        }
        // A date alone, a quoted dateTime or a dateTime in a string comparison is not one.
        for query in [
            "SELECT Id FROM Contact WHERE CreatedDate > 2026-12-07",
            "SELECT Id FROM Contact WHERE CreatedDate > '2026-12-07T00:00:00Z'",
            "SELECT Id FROM Contact WHERE CreatedDate > null",
        ] {
            assert_eq!(parse(query).expect_err(query).code, "MALFORMED_QUERY", "{query}");
        }
    }

    #[test]
    fn evaluates_datetime_comparisons_and_orders() {
        let record = [("LastModifiedDate", "1000"), ("Phone", "+1")];
        let matches = |where_: &str| {
            let q = parse(&format!("SELECT Id FROM Contact WHERE {where_}")).expect(where_);
            q.filter.expect("a filter").matches(&value_of(&record))
        };
        let at = |ms: i64| super::super::utc(u64::try_from(ms).expect("after the epoch"));
        let literal = |ms: i64| {
            let t = at(ms);
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            )
        };
        for (op, below, equal, above) in [
            (">=", true, true, false),
            (">", true, false, false),
            ("<", false, false, true),
            ("<=", false, true, true),
            ("=", false, true, false),
            ("!=", true, false, true),
        ] {
            assert_eq!(matches(&format!("LastModifiedDate {op} {}", literal(999))), below, "{op} below");
            assert_eq!(matches(&format!("LastModifiedDate {op} {}", literal(1000))), equal, "{op} equal");
            assert_eq!(matches(&format!("LastModifiedDate {op} {}", literal(1001))), above, "{op} above");
        }
        assert!(!matches(&format!("CreatedDate >= {}", literal(0))), "a null dateTime is before nothing");
        assert!(matches(&format!("CreatedDate != {}", literal(0))));
        assert!(matches("LastModifiedDate != null") && !matches("LastModifiedDate = null"));
        assert!(matches(&format!("LastModifiedDate >= {} AND Phone != null", literal(1000))));

        let t = |text: &str| Some(Datum::Text(text.into()));
        assert_eq!(order(t("a").as_ref(), t("B").as_ref(), false), Ordering::Less, "without case");
        assert_eq!(order(None, t("a").as_ref(), false), Ordering::Less, "nulls first ascending");
        assert_eq!(order(None, t("a").as_ref(), true), Ordering::Greater, "nulls last descending");
        let d = |ms: i64| Some(Datum::DateTime(ms));
        assert_eq!(order(d(2).as_ref(), d(10).as_ref(), false), Ordering::Less, "instants, not text");
        assert_eq!(order(d(2).as_ref(), d(2).as_ref(), true), Ordering::Equal);
    }

    #[test]
    fn literal_escapes_follow_the_escape_sequence_table() {
        let q = parse(r#"SELECT Id FROM Contact WHERE Name = 'a\'b\\c\n\T\u00e9\B\f\'\' \"'"#).expect("valid");
        let Some(Cond::Compare { value: Literal::Text(v), .. }) = q.filter else { panic!("comparison") };
        assert_eq!(v, "a'b\\c\n\té\u{8}\u{c}'' \"");
        for bad in [r"'\x'", r"'\_'", r"'\u12'", r"'abc", r"'abc\"] {
            let err = parse(&format!("SELECT Id FROM Contact WHERE Name = {bad}")).expect_err(bad);
            assert_eq!(err.code, "MALFORMED_QUERY", "{bad}");
        }
        let raw = "it's a \\ \"test\"\n\r\t\u{8}\u{c}";
        let q = parse(&format!("SELECT Id FROM Contact WHERE Name = '{}'", escape(raw))).expect("escaped");
        assert!(matches!(q.filter, Some(Cond::Compare { value: Literal::Text(v), .. }) if v == raw));
    }

    #[test]
    fn refuses_anything_else_as_malformed() {
        for query in [
            "",
            "SELECT FROM Contact",
            "SELECT Id Contact",
            "SELECT Id, FROM Contact",
            "SELECT Id FROM Contact WHERE Phone LIKE '1%'",
            "SELECT Id FROM Contact WHERE Phone IN ('1')",
            "SELECT Id FROM Contact WHERE Phone > '1'",
            "SELECT Id FROM Contact WHERE Phone = 1",
            "SELECT Id FROM Contact WHERE Phone = \"1\"",
            "SELECT Account.Name FROM Contact",
            "SELECT Id FROM Contact ORDER Id",
            "SELECT Id FROM Contact ORDER BY",
            "SELECT Id FROM Contact ORDER BY Id NULLS FIRST",
            "SELECT Id FROM Contact LIMIT 1 ORDER BY Id",
            "SELECT Id FROM Contact LIMIT x",
            "SELECT Id FROM Contact WHERE Phone = '1' AND Name = 'a' OR Name = 'b'",
            "SELECT Id FROM Contact WHERE (Phone = '1'",
            "SELECT Id FROM Contact; DELETE",
        ] {
            let err = parse(query).expect_err(query);
            assert_eq!(err.code, "MALFORMED_QUERY", "{query}");
            assert!(err.message.contains("ERROR at Row:1:Column:"), "{}", err.message);
        }
        let err = parse("SELECT Id FROM Contact WHERE Phone = '1' x").expect_err("trailing");
        assert!(err.message.ends_with("ERROR at Row:1:Column:42\nunexpected token: 'x'"), "{}", err.message);
    }

    #[test]
    fn evaluates_and_or_not_with_soql_null_semantics() {
        let record = [("Phone", "+1555"), ("Name", "Ann"), ("Tier__c", "")];
        let matches = |where_: &str| {
            let q = parse(&format!("SELECT Id FROM Contact WHERE {where_}")).expect(where_);
            q.filter.expect("a filter").matches(&value_of(&record))
        };
        assert!(matches("Phone = '+1555'"));
        assert!(matches("name = 'ANN'"), "case-insensitive");
        assert!(!matches("Phone != '+1555'"));
        assert!(matches("Tier__c = null") && matches("Tier__c = ''"), "empty is null");
        assert!(matches("Phone = 'x' OR Name = 'Ann'"));
        assert!(!matches("Phone = 'x' AND Name = 'Ann'"));
        assert!(matches("(Phone = 'x' OR Name = 'Ann') AND NOT Phone = 'y'"));
        // An unescaped quote in a pasted value ends the literal: the rest is SOQL.
        let pasted = "' OR Phone != '";
        assert!(matches(&format!("Phone = '{pasted}'")), "an injected OR matches every record with a phone");
        assert!(!matches(&format!("Phone = '{}'", escape(pasted))), "escaped, it is one literal");
    }

    #[test]
    fn finds_the_object_even_of_a_refused_query() {
        assert_eq!(object_of("SELECT Id FROM Contact WHERE Phone = '1'").as_deref(), Some("Contact"));
        assert_eq!(object_of("SELECT Id FROM Case WHERE x LIKE 'y'").as_deref(), Some("Case"));
        assert_eq!(object_of("nonsense"), None);
    }
}
