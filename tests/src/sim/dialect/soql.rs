//! A small, strict SOQL parser and evaluator: exactly the subset the
//! salesforce dialect serves, refusing everything else as Salesforce
//! refuses a query it cannot parse (`MALFORMED_QUERY`).
//!
//! Grammar (keywords in any case, as in SOQL):
//!
//! ```text
//! query   := SELECT field {, field} FROM object [WHERE cond] [LIMIT digits]
//! cond    := unary {AND unary} | unary {OR unary}   (mixing needs parentheses, as in SOQL)
//! unary   := NOT unary | ( cond ) | field (= | != | <>) (string | NULL)
//! string  := ' ... '   with the escapes of "Quoted String Escape Sequences"
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
//! Comparisons are case-insensitive and an empty string is the same as
//! `null`, as Salesforce stores text fields (so `Phone = ''` matches records
//! without a phone, and `Phone != ''` those with one). Not served (refused
//! `MALFORMED_QUERY`): `LIKE`, `IN`, `<`/`>`, date literals, relationship
//! fields (`Account.Name`), functions, `ORDER BY`, `GROUP BY`, `OFFSET`,
//! subqueries, bind variables.

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
}

/// A `WHERE` clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// `field = value`, or `field != value` when `negated`.
    Compare {
        field: Ident,
        negated: bool,
        value: Literal,
    },
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
}

impl Cond {
    /// Whether a record matches; `value_of` gives a field's value by its
    /// name as written (`None` for null).
    pub fn matches(&self, value_of: &dyn Fn(&str) -> Option<String>) -> bool {
        match self {
            Self::Compare { field, negated, value } => {
                let actual = value_of(&field.name).unwrap_or_default();
                let wanted = match value {
                    Literal::Text(text) => text.as_str(),
                    Literal::Null => "",
                };
                (actual.to_lowercase() == wanted.to_lowercase()) != *negated
            }
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

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub fields: Vec<Ident>,
    pub object: Ident,
    pub filter: Option<Cond>,
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
    "IN", "INCLUDES", "EXCLUDES", "WITH", "FOR", "USING", "TRUE", "FALSE",
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
            Self::Word(w) | Self::Digits(w) => w.clone(),
            Self::Text(t) => format!("'{}'", escape(t)),
            Self::Comma => ",".into(),
            Self::Open => "(".into(),
            Self::Close => ")".into(),
            Self::Eq => "=".into(),
            Self::Ne => "!=".into(),
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
            '<' if chars.peek().is_some_and(|&(_, n)| n == '>') => {
                chars.next();
                Tok::Ne
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
            c if c.is_ascii_digit() => {
                let mut digits = String::from(c);
                while let Some(&(_, n)) = chars.peek().filter(|&&(_, n)| n.is_ascii_alphanumeric()) {
                    digits.push(n);
                    chars.next();
                }
                Tok::Digits(digits)
            }
            other => Tok::Other(other),
        };
        tokens.push(Token { tok, at });
    }
    tokens.push(Token { tok: Tok::End, at: query.len() });
    Ok(tokens)
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
        Ok(Query { fields, object, filter, limit })
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
        let negated = match operator.tok {
            Tok::Eq => false,
            Tok::Ne => true,
            _ => return Err(self.unexpected(&operator)),
        };
        let token = self.advance();
        let value = match &token.tok {
            Tok::Text(text) => Literal::Text(text.clone()),
            tok if tok.is_keyword("NULL") => Literal::Null,
            _ => return Err(self.unexpected(&token)),
        };
        Ok(Cond::Compare { field, negated, value })
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

    fn value_of<'a>(record: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            record
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| (*v).to_owned())
                .filter(|v| !v.is_empty())
        }
    }

    #[test]
    fn parses_the_served_subset() {
        let q = parse("select Id, Phone,Tier__c FROM Contact where Phone = '+15550001' limit 1").expect("valid");
        assert_eq!(q.fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["Id", "Phone", "Tier__c"]);
        assert_eq!(q.object.name, "Contact");
        assert_eq!(q.limit, Some(1));
        let Some(Cond::Compare { field, negated: false, value: Literal::Text(v) }) = q.filter else {
            panic!("one comparison")
        };
        assert_eq!((field.name.as_str(), v.as_str()), ("Phone", "+15550001"));
        assert!(parse("SELECT Id FROM Case").is_ok_and(|q| q.filter.is_none() && q.limit.is_none()));
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
            "SELECT Id FROM Contact ORDER BY Id",
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
