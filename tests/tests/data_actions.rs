//! The shipped Genesys Cloud Data Action definitions (`genesys/data-actions/`)
//! executed the way Genesys executes them, against a running facade:
//! validate the input against the input contract, fill the URL, header and
//! request templates (Velocity), send the request with the configured method
//! and headers under the Data Action timeout, apply the translation map
//! (JSONPath, with its defaults), render the success template and validate
//! the result against the output contract. Any step that would take the
//! Architect flow down its Failure path fails the test, and so does a
//! translation-map path that resolves nothing on a real answer: in Genesys
//! its default would hide the mismatch.
//!
//! The Velocity this file implements, and the only Velocity the definitions
//! may use (anything else is refused, so a definition cannot drift outside
//! what is tested): references `${a.b}`, `$a.b`, `$!{a.b}`; the call
//! `$esc.jsonString(ref)` and its quiet form `$!esc.jsonString(ref)`; and
//! `#if($name == "literal")…#{else}…#{end}` (`#else`/`#end` also accepted).
//! As in Velocity, an unresolved reference renders as its own source text,
//! and as nothing in the quiet form.
//!
//! Build the programs first: `cargo build --workspace --bins`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use failsoft_tests::{AUTH_TOKEN, Stack, wait_until};
use serde_json::{Map, Value, json};
use serde_json_path::JsonPath;

/// Genesys' Data Action timeout. A definition cannot set it; 10 s is the
/// default the facade's `FAILSOFT_DATA_ACTION_TIMEOUT_MS` assumes.
const DATA_ACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The base URL the shipped definitions carry; an administrator replaces it.
const PLACEHOLDER_BASE: &str = "https://failsoft.example.com/";
/// The User Defined credential field the definitions' header reads.
const TOKEN_FIELD: &str = "failsoftToken";
const BASIC_USER: &str = "genesys";
const BASIC_PASSWORD: &str = "test-only-basic-password-not-a-secret";
/// Input names Genesys reserves (its input contract notes).
const RESERVED_INPUTS: [&str; 3] = ["orgId", "integrationId", "rawRequest"];

/// Fictional numbers (Ofcom's drama range), E.164 as the simulator stores them.
const VIP: &str = "+442079460001";
const GOLD: &str = "+442079460002";
const NOT_A_CUSTOMER: &str = "+442079460998";
const NEVER_SEEN: &str = "+442079460999";
/// What Architect's `Call.ConversationId` looks like.
const CONVERSATION_ID: &str = "3f2c5a8e-6b1d-4e0f-9a7c-2d4b6e8f0a1c";

// ── the definitions ─────────────────────────────────────────────────────

struct Definition {
    file: &'static str,
    json: Value,
}

impl Definition {
    fn load(file: &'static str) -> Self {
        let path = definitions_dir().join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
        Self { file, json }
    }

    fn all() -> [Self; 3] {
        [Self::load("customer-lookup.json"), Self::load("create-case.json"), Self::load("get-result.json")]
    }

    fn str_at(&self, pointer: &str) -> &str {
        self.json
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{}: no string at {pointer}", self.file))
    }

    fn object_at(&self, pointer: &str) -> &Map<String, Value> {
        self.json
            .pointer(pointer)
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("{}: no object at {pointer}", self.file))
    }

    fn string_map(&self, pointer: &str) -> BTreeMap<String, String> {
        self.object_at(pointer)
            .iter()
            .map(|(k, v)| {
                let v = v.as_str().unwrap_or_else(|| panic!("{}: {pointer}/{k} is not a string", self.file));
                (k.clone(), v.to_owned())
            })
            .collect()
    }

    fn input_schema(&self) -> &Value {
        self.json.pointer("/contract/input/inputSchema").unwrap_or_else(|| panic!("{}: no input schema", self.file))
    }

    fn success_schema(&self) -> &Value {
        self.json
            .pointer("/contract/output/successSchema")
            .unwrap_or_else(|| panic!("{}: no success schema", self.file))
    }

    fn translation_map(&self) -> BTreeMap<String, String> {
        self.string_map("/config/response/translationMap")
    }

    fn translation_defaults(&self) -> BTreeMap<String, String> {
        self.string_map("/config/response/translationMapDefaults")
    }

    /// The definition as an administrator who chose the Basic Auth
    /// credential type has it: Genesys sends the Authorization header
    /// itself, so the action's own header is removed.
    fn for_basic_auth(&self) -> Self {
        let mut json = self.json.clone();
        let headers = json.pointer_mut("/config/request/headers").and_then(Value::as_object_mut).expect("headers");
        assert!(headers.remove("Authorization").is_some(), "{}: no Authorization header to remove", self.file);
        Self { file: self.file, json }
    }

    /// What Genesys does before it sends anything: drop null inputs (it
    /// has since March 2024) and validate against the input contract.
    fn accept_input(&self, input: &Value) -> Result<Map<String, Value>, String> {
        let mut input = input.as_object().cloned().ok_or("the input is not an object")?;
        input.retain(|_, v| !v.is_null());
        schema_errors(self.input_schema(), &Value::Object(input.clone()))?;
        Ok(input)
    }

    /// Executes the action as Genesys does, against `stack`'s facade.
    async fn execute(
        &self,
        stack: &Stack,
        credentials: &Credentials,
        input: &Value,
    ) -> Result<Execution, ActionFailure> {
        let input = self.accept_input(input).map_err(ActionFailure::Input)?;
        let mut context = velocity::Context::new();
        for (name, value) in &input {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            context.insert(format!("input.{name}"), text);
        }
        if let Credentials::UserDefined(fields) = credentials {
            for (name, value) in fields {
                context.insert(format!("credentials.{name}"), value.clone());
            }
        }
        let render = |what: &str, template: &str| {
            velocity::render(template, &context).map_err(|e| ActionFailure::Definition(format!("{what}: {e}")))
        };

        let url = render("requestUrlTemplate", self.str_at("/config/request/requestUrlTemplate"))?;
        let path = url.strip_prefix(PLACEHOLDER_BASE).ok_or_else(|| {
            ActionFailure::Definition(format!("the URL {url} does not start with the placeholder {PLACEHOLDER_BASE}"))
        })?;
        let url = format!("{}/{path}", stack.edge_url());
        let method = self.str_at("/config/request/requestType");
        let client = reqwest::Client::builder().no_proxy().timeout(DATA_ACTION_TIMEOUT).build().expect("a client");
        let mut request = match method {
            "GET" => client.get(&url),
            "POST" => client.post(&url),
            other => {
                return Err(ActionFailure::Definition(format!("requestType {other} is not one the definitions use")));
            }
        };
        for (name, template) in self.string_map("/config/request/headers") {
            request = request.header(name.as_str(), render(&format!("header {name}"), &template)?);
        }
        if let Credentials::Basic { user, password } = credentials {
            request = request.basic_auth(user, Some(password));
        }
        // Genesys ignores the request template of a GET.
        if method != "GET" {
            let body = render("requestTemplate", self.str_at("/config/request/requestTemplate"))?;
            if let Err(e) = serde_json::from_str::<Value>(&body) {
                return Err(ActionFailure::Definition(format!(
                    "the request template rendered invalid JSON ({e}): {body}"
                )));
            }
            request = request.body(body);
        }

        let started = Instant::now();
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() { ActionFailure::Timeout } else { ActionFailure::Transport(e.to_string()) }
        })?;
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let bytes = response.bytes().await.map_err(|e| {
            if e.is_timeout() { ActionFailure::Timeout } else { ActionFailure::Transport(e.to_string()) }
        })?;
        let took = started.elapsed();
        let raw: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            return Err(ActionFailure::Http { status, body: raw });
        }
        if !content_type.to_ascii_lowercase().contains("json") || raw.is_null() {
            return Err(ActionFailure::Response(format!("not a JSON answer (content-type {content_type:?})")));
        }

        // Each value is the JSON text of what its path selects; a path that
        // selects nothing takes its default, a JSON null does not.
        let defaults = self.translation_defaults();
        let mut translated = velocity::Context::new();
        let mut defaulted = Vec::new();
        for (key, path) in self.translation_map() {
            let compiled = JsonPath::parse(&path)
                .map_err(|e| ActionFailure::Definition(format!("translationMap {key}: {path} is not JSONPath: {e}")))?;
            let text = match compiled.query(&raw).all().as_slice() {
                [] => match defaults.get(&key) {
                    Some(default) => {
                        defaulted.push(key.clone());
                        default.clone()
                    }
                    None => {
                        return Err(ActionFailure::Response(format!(
                            "{key}: {path} resolves nothing and has no default"
                        )));
                    }
                },
                [one] => one.to_string(),
                many => Value::Array(many.iter().map(|v| (*v).clone()).collect()).to_string(),
            };
            translated.insert(key, text);
        }
        let rendered = velocity::render(self.str_at("/config/response/successTemplate"), &translated)
            .map_err(|e| ActionFailure::Definition(format!("successTemplate: {e}")))?;
        let output: Value = serde_json::from_str(&rendered).map_err(|e| {
            ActionFailure::Response(format!("the success template rendered invalid JSON ({e}): {rendered}"))
        })?;
        schema_errors(self.success_schema(), &output).map_err(|e| {
            ActionFailure::Response(format!("the output breaks the success schema: {e}; output {output}"))
        })?;
        Ok(Execution { raw, defaulted, output, took })
    }

    /// Executes the action and requires the Success path with every
    /// translation-map path resolved on the facade's real answer.
    async fn run(&self, stack: &Stack, credentials: &Credentials, input: &Value) -> Execution {
        let execution = match self.execute(stack, credentials, input).await {
            Ok(execution) => execution,
            Err(failure) => panic!("{} with {input}: the flow would take its Failure path: {failure}", self.file),
        };
        assert!(
            execution.defaulted.is_empty(),
            "{}: translation-map paths {:?} resolve nothing in the facade's answer {}: the definition does not match it",
            self.file,
            execution.defaulted,
            execution.raw
        );
        assert!(execution.took < DATA_ACTION_TIMEOUT, "{}: answered in {:?}", self.file, execution.took);
        self.assert_faithful(&execution);
        execution
    }

    /// Every output carries the facade's value at its path; a JSON null
    /// becomes the typed value its default gives.
    fn assert_faithful(&self, execution: &Execution) {
        let defaults = self.translation_defaults();
        for (key, path) in self.translation_map() {
            let raw = JsonPath::parse(&path).expect("checked").query(&execution.raw).exactly_one().ok().cloned();
            let expected = match raw {
                Some(Value::Null) | None => serde_json::from_str(&defaults[&key]).expect("a JSON default"),
                Some(value) => value,
            };
            assert_eq!(execution.output[&key], expected, "{}: output {key} (raw {})", self.file, execution.raw);
        }
    }
}

fn definitions_dir() -> PathBuf {
    failsoft_lab::local_stack::workspace_root().join("genesys/data-actions")
}

/// The integration's credential type.
enum Credentials {
    /// "User Defined": fields the templates read as `${credentials.x}`.
    UserDefined(Vec<(String, String)>),
    /// "Basic Auth": Genesys adds the Authorization header itself.
    Basic { user: String, password: String },
}

impl Credentials {
    fn bearer() -> Self {
        Self::UserDefined(vec![(TOKEN_FIELD.to_owned(), AUTH_TOKEN.to_owned())])
    }

    fn basic() -> Self {
        Self::Basic { user: BASIC_USER.to_owned(), password: BASIC_PASSWORD.to_owned() }
    }
}

struct Execution {
    raw: Value,
    /// Translation-map keys that fell back to their default.
    defaulted: Vec<String>,
    output: Value,
    took: Duration,
}

/// Why Genesys would take the action's Failure (or Timeout) path.
#[derive(Debug)]
enum ActionFailure {
    Input(String),
    Definition(String),
    Transport(String),
    Timeout,
    Http { status: u16, body: Value },
    Response(String),
}

impl std::fmt::Display for ActionFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Input(e) => write!(f, "the input breaks the input contract: {e}"),
            Self::Definition(e) => write!(f, "the definition is broken: {e}"),
            Self::Transport(e) => write!(f, "the request failed: {e}"),
            Self::Timeout => write!(f, "no answer within the Data Action timeout of {DATA_ACTION_TIMEOUT:?}"),
            Self::Http { status, body } => write!(f, "HTTP {status}: {body}"),
            Self::Response(e) => write!(f, "{e}"),
        }
    }
}

/// The validation errors of `instance` against `schema`, joined.
fn schema_errors(schema: &Value, instance: &Value) -> Result<(), String> {
    let validator = jsonschema::validator_for(schema).map_err(|e| format!("the schema is invalid: {e}"))?;
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
}

/// Asserts the outputs named in `expected` (a JSON object).
fn assert_outputs(context: &str, execution: &Execution, expected: Value) {
    for (key, value) in expected.as_object().expect("an object") {
        assert_eq!(
            &execution.output[key], value,
            "{context}: output {key} in {} (raw {})",
            execution.output, execution.raw
        );
    }
}

// ── the Velocity subset ─────────────────────────────────────────────────

mod velocity {
    use std::collections::BTreeMap;

    /// Values by reference name: `input.ani`, `credentials.failsoftToken`,
    /// or a translation-map key.
    pub type Context = BTreeMap<String, String>;

    #[derive(Debug)]
    enum Node {
        Text(String),
        Reference { quiet: bool, name: String, source: String },
        JsonString { quiet: bool, argument: String, source: String },
        If { name: String, literal: String, then: Vec<Node>, otherwise: Vec<Node> },
    }

    #[derive(Debug, PartialEq)]
    enum Stop {
        Eof,
        Else,
        End,
    }

    pub fn render(template: &str, context: &Context) -> Result<String, String> {
        let mut parser = Parser { src: template, pos: 0 };
        let (nodes, end) = parser.nodes()?;
        if end != Stop::Eof {
            return Err(format!("a stray #{end:?} in {template:?}"));
        }
        let mut out = String::new();
        emit(&nodes, context, &mut out);
        Ok(out)
    }

    fn emit(nodes: &[Node], context: &Context, out: &mut String) {
        for node in nodes {
            match node {
                Node::Text(text) => out.push_str(text),
                Node::Reference { quiet, name, source } => match context.get(name) {
                    Some(value) => out.push_str(value),
                    None if *quiet => {}
                    None => out.push_str(source),
                },
                Node::JsonString { quiet, argument, source } => match context.get(argument) {
                    Some(value) => {
                        let quoted = serde_json::to_string(value).expect("a string serialises");
                        out.push_str(&quoted[1..quoted.len() - 1]);
                    }
                    None if *quiet => {}
                    None => out.push_str(source),
                },
                Node::If { name, literal, then, otherwise } => {
                    let branch = if context.get(name) == Some(literal) { then } else { otherwise };
                    emit(branch, context, out);
                }
            }
        }
    }

    struct Parser<'a> {
        src: &'a str,
        pos: usize,
    }

    impl Parser<'_> {
        fn rest(&self) -> &str {
            &self.src[self.pos..]
        }

        fn eat(&mut self, token: &str) -> bool {
            let found = self.rest().starts_with(token);
            if found {
                self.pos += token.len();
            }
            found
        }

        fn expect(&mut self, token: &str) -> Result<(), String> {
            if self.eat(token) { Ok(()) } else { Err(format!("expected {token:?} at {:?}", self.rest())) }
        }

        fn skip_spaces(&mut self) {
            while self.rest().starts_with(' ') {
                self.pos += 1;
            }
        }

        /// Nodes up to the end of input or a `#else`/`#end`.
        fn nodes(&mut self) -> Result<(Vec<Node>, Stop), String> {
            let mut nodes = Vec::new();
            loop {
                let next = self.rest().find(['$', '#']).unwrap_or(self.rest().len());
                if next > 0 {
                    nodes.push(Node::Text(self.rest()[..next].to_owned()));
                    self.pos += next;
                }
                if self.rest().is_empty() {
                    return Ok((nodes, Stop::Eof));
                }
                if self.rest().starts_with('$') {
                    nodes.push(self.reference()?);
                } else if self.eat("#{else}") || self.eat("#else") {
                    return Ok((nodes, Stop::Else));
                } else if self.eat("#{end}") || self.eat("#end") {
                    return Ok((nodes, Stop::End));
                } else if self.eat("#if(") {
                    nodes.push(self.conditional()?);
                } else {
                    return Err(format!("unsupported Velocity directive at {:?}", self.rest()));
                }
            }
        }

        /// `$name`, `${name}`, `$!{name}`, or `$[!]esc.jsonString(ref)`.
        fn reference(&mut self) -> Result<Node, String> {
            let start = self.pos;
            self.expect("$")?;
            let quiet = self.eat("!");
            if self.eat("{") {
                let close = self.rest().find('}').ok_or("an unclosed ${")?;
                let name = self.rest()[..close].to_owned();
                self.pos += close + 1;
                check_name(&name)?;
                return Ok(Node::Reference { quiet, name, source: self.src[start..self.pos].to_owned() });
            }
            let name = self.dotted_name()?;
            if self.eat("(") {
                if name != "esc.jsonString" {
                    return Err(format!("unsupported Velocity method ${name}(…)"));
                }
                self.skip_spaces();
                let argument = match self.reference()? {
                    Node::Reference { quiet: false, name, .. } => name,
                    other => return Err(format!("unsupported argument of $esc.jsonString: {other:?}")),
                };
                self.skip_spaces();
                self.expect(")")?;
                return Ok(Node::JsonString { quiet, argument, source: self.src[start..self.pos].to_owned() });
            }
            Ok(Node::Reference { quiet, name, source: self.src[start..self.pos].to_owned() })
        }

        /// `a.b.c` in the shorthand form: a `.` not followed by an
        /// identifier ends the reference, as in Velocity.
        fn dotted_name(&mut self) -> Result<String, String> {
            let mut end = self.pos;
            let bytes = self.src.as_bytes();
            loop {
                let segment_start = end;
                if end < bytes.len() && bytes[end].is_ascii_alphabetic() {
                    end += 1;
                    while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || matches!(bytes[end], b'_' | b'-'))
                    {
                        end += 1;
                    }
                } else if segment_start == self.pos {
                    return Err(format!("a '$' that starts no reference at {:?}", self.rest()));
                } else {
                    end -= 1; // the '.' belongs to the text
                    break;
                }
                if end < bytes.len() && bytes[end] == b'.' {
                    end += 1;
                } else {
                    break;
                }
            }
            let name = self.src[self.pos..end].to_owned();
            self.pos = end;
            Ok(name)
        }

        /// After `#if(`: `$name == "literal")`, then the branches.
        fn conditional(&mut self) -> Result<Node, String> {
            self.skip_spaces();
            let name = match self.reference()? {
                Node::Reference { quiet: false, name, .. } => name,
                other => return Err(format!("unsupported #if operand: {other:?}")),
            };
            self.skip_spaces();
            self.expect("==")?;
            self.skip_spaces();
            self.expect("\"")?;
            let close = self.rest().find('"').ok_or("an unclosed string in #if")?;
            let literal = self.rest()[..close].to_owned();
            if literal.contains(['$', '#', '\\']) {
                return Err(format!("unsupported #if literal {literal:?}"));
            }
            self.pos += close + 1;
            self.skip_spaces();
            self.expect(")")?;
            let (then, end) = self.nodes()?;
            let otherwise = match end {
                Stop::Else => match self.nodes()? {
                    (otherwise, Stop::End) => otherwise,
                    (_, end) => return Err(format!("#else closed by {end:?}")),
                },
                Stop::End => Vec::new(),
                Stop::Eof => return Err("an #if without #end".to_owned()),
            };
            Ok(Node::If { name, literal, then, otherwise })
        }
    }

    fn check_name(name: &str) -> Result<(), String> {
        let ok = !name.is_empty()
            && name.split('.').all(|segment| {
                segment.starts_with(|c: char| c.is_ascii_alphabetic())
                    && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        if ok { Ok(()) } else { Err(format!("unsupported reference name {name:?}")) }
    }

    #[test]
    fn renders_the_subset() {
        let context: Context = [("input.a", "say \"hi\"\n\\"), ("x", "null"), ("y", "\"v\"")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let r = |t: &str| render(t, &context);
        assert_eq!(r("\"$esc.jsonString(${input.a})\"").unwrap(), r#""say \"hi\"\n\\""#);
        assert_eq!(r("$esc.jsonString($input.missing)").unwrap(), "$esc.jsonString($input.missing)");
        assert_eq!(r("[$!esc.jsonString($input.missing)]").unwrap(), "[]");
        assert_eq!(r("[${nope}|$!{nope}|$nope.]").unwrap(), "[${nope}||$nope.]");
        assert_eq!(r(r##"#if($x == "null")""#{else}${x}#{end}"##).unwrap(), r#""""#);
        assert_eq!(r(r##"#if($y == "null")""#else${y}#end"##).unwrap(), r#""v""#);
        assert!(r("#set($a = 1)").is_err());
        assert!(r("$math.add(1, 2)").is_err());
        assert!(r("#if($x == \"null\")open").is_err());
    }
}

// ── the definitions on their own ────────────────────────────────────────

#[test]
fn definitions_have_the_shape_genesys_imports() {
    for def in Definition::all() {
        let file = def.file;
        assert!(def.str_at("/name").starts_with("failsoft - "), "{file}: name");
        assert_eq!(def.str_at("/integrationType"), "custom-rest-actions", "{file}: a Web Services Data Action");
        assert_eq!(def.str_at("/actionType"), "custom", "{file}");
        assert_eq!(def.str_at("/category"), "failsoft", "{file}");
        assert!(def.json["secure"].is_boolean(), "{file}: secure");
        let url = def.str_at("/config/request/requestUrlTemplate");
        assert!(url.starts_with(PLACEHOLDER_BASE), "{file}: Genesys needs HTTPS; the placeholder is replaced: {url}");
        assert!(matches!(def.str_at("/config/request/requestType"), "GET" | "POST"), "{file}");
        let headers = def.string_map("/config/request/headers");
        assert_eq!(
            headers.get("Authorization").map(String::as_str),
            Some("Bearer ${credentials.failsoftToken}"),
            "{file}: the User Defined credential's token"
        );
        def.str_at("/config/request/requestTemplate");
        def.str_at("/config/response/successTemplate");

        let map = def.translation_map();
        let defaults = def.translation_defaults();
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            defaults.keys().collect::<Vec<_>>(),
            "{file}: every translation-map key has a default, and only they do"
        );
        for (key, path) in &map {
            JsonPath::parse(path).unwrap_or_else(|e| panic!("{file}: {key}: {path}: {e}"));
            let default = &defaults[key];
            serde_json::from_str::<Value>(default)
                .unwrap_or_else(|e| panic!("{file}: the default of {key} must be JSON text ({default}): {e}"));
        }

        for (which, schema) in [("input", def.input_schema()), ("output", def.success_schema())] {
            assert_eq!(schema["$schema"], "http://json-schema.org/draft-04/schema#", "{file}: {which} schema draft");
            assert_eq!(schema["type"], "object", "{file}: {which} schema is an object");
            jsonschema::validator_for(schema).unwrap_or_else(|e| panic!("{file}: {which} schema: {e}"));
            assert!(!schema.to_string().contains("$ref"), "{file}: Genesys contracts do not support $ref");
        }
        for (name, property) in def.input_schema()["properties"].as_object().expect("input properties") {
            assert!(
                name.starts_with(|c: char| c.is_ascii_alphabetic())
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{file}: input name {name}"
            );
            assert!(!RESERVED_INPUTS.contains(&name.as_str()), "{file}: {name} is reserved by Genesys");
            assert!(
                matches!(property["type"].as_str(), Some("string" | "integer" | "number" | "boolean")),
                "{file}: input {name} must be a flat scalar"
            );
        }
        let outputs = def.success_schema()["properties"].as_object().expect("output properties");
        let required: Vec<&str> =
            def.success_schema()["required"].as_array().expect("required").iter().filter_map(Value::as_str).collect();
        for (name, property) in outputs {
            assert!(map.contains_key(name), "{file}: output {name} comes from the translation map");
            assert!(required.contains(&name.as_str()), "{file}: output {name} is always present");
            assert!(
                matches!(property["type"].as_str(), Some("string" | "integer" | "boolean")),
                "{file}: output {name} is a scalar Architect can branch on"
            );
        }
        for required in &required {
            assert!(outputs.contains_key(*required), "{file}: required {required} is declared");
        }

        // The request side stays inside the tested Velocity subset and only
        // reads declared inputs and the credential field.
        let mut context: velocity::Context = def.input_schema()["properties"]
            .as_object()
            .expect("input properties")
            .keys()
            .map(|name| (format!("input.{name}"), "x".to_owned()))
            .collect();
        context.insert(format!("credentials.{TOKEN_FIELD}"), "x".to_owned());
        let mut templates = vec![("requestUrlTemplate", def.str_at("/config/request/requestUrlTemplate").to_owned())];
        if def.str_at("/config/request/requestType") != "GET" {
            templates.push(("requestTemplate", def.str_at("/config/request/requestTemplate").to_owned()));
        }
        templates.extend(headers.values().map(|v| ("a header", v.clone())));
        for (what, template) in templates {
            let rendered = velocity::render(&template, &context).unwrap_or_else(|e| panic!("{file}: {what}: {e}"));
            assert!(!rendered.contains('$'), "{file}: {what} reads an undeclared name: {rendered}");
        }

        // A facade answer missing every field still satisfies the contract:
        // that is what the defaults are for.
        let rendered = velocity::render(def.str_at("/config/response/successTemplate"), &defaults)
            .unwrap_or_else(|e| panic!("{file}: successTemplate: {e}"));
        let output: Value =
            serde_json::from_str(&rendered).unwrap_or_else(|e| panic!("{file}: all-defaults output {rendered}: {e}"));
        schema_errors(def.success_schema(), &output).unwrap_or_else(|e| panic!("{file}: all-defaults output: {e}"));
    }
}

#[test]
fn input_contracts_accept_the_sample_inputs_and_refuse_malformed_ones() {
    let [lookup, case, result] = Definition::all();
    let long_id = "a".repeat(65);
    let accepted = [
        (&lookup, json!({"ani": "tel:+13175550123", "correlationId": CONVERSATION_ID})),
        (&lookup, json!({"ani": "+442079460001", "correlationId": "it_lookup-1"})),
        (
            &case,
            json!({"ani": "tel:+13175550123", "correlationId": CONVERSATION_ID, "subject": "Callback",
                   "description": "Asked for a callback", "conversationId": CONVERSATION_ID}),
        ),
        (&case, json!({"ani": "+13175550123", "correlationId": "conv-1-callback", "subject": "Callback"})),
        // Architect flows may send a null input; Genesys drops it.
        (&case, json!({"ani": "+13175550123", "correlationId": "c-2", "subject": "Callback", "description": null})),
        (&result, json!({"correlationId": CONVERSATION_ID})),
    ];
    for (def, input) in &accepted {
        if let Err(e) = def.accept_input(input) {
            panic!("{}: {input} refused: {e}", def.file);
        }
    }
    let refused = [
        (&lookup, json!({"correlationId": CONVERSATION_ID}), "no ani"),
        (&lookup, json!({"ani": "+13175550123"}), "no correlationId"),
        (&lookup, json!({"ani": "+13175550123", "correlationId": "a/b"}), "a '/' in the id"),
        (&lookup, json!({"ani": "+13175550123", "correlationId": long_id}), "an id over 64 characters"),
        (&case, json!({"ani": "+13175550123", "correlationId": "c-3"}), "no subject"),
        (&case, json!({"ani": "+13175550123", "correlationId": "c-3", "subject": ""}), "an empty subject"),
        (&case, json!({"ani": "+13175550123", "correlationId": "c-3", "subject": "x".repeat(256)}), "a long subject"),
        (&result, json!({"correlationId": "../healthz"}), "a path in the id"),
        (&result, json!({}), "no correlationId"),
    ];
    for (def, input, why) in &refused {
        assert!(def.accept_input(input).is_err(), "{}: {why} must be refused before any request: {input}", def.file);
    }
}

// ── the definitions against a running facade ────────────────────────────

async fn with_customers(stack: &Stack) {
    stack
        .load_customers(json!([
            {"phone": VIP, "customerId": "C-1001", "tier": "vip", "vipFlag": true},
            {"phone": GOLD, "customerId": "C-1002", "tier": "gold"},
        ]))
        .await;
}

fn lookup_input(ani: &str) -> Value {
    json!({"ani": ani, "correlationId": CONVERSATION_ID})
}

#[tokio::test(flavor = "multi_thread")]
async fn lookup_definition_maps_live_cache_not_found_and_default_answers() {
    let stack =
        Stack::start_with(&[("FAILSOFT_BASIC_USER", BASIC_USER), ("FAILSOFT_BASIC_PASSWORD", BASIC_PASSWORD)]).await;
    with_customers(&stack).await;
    let lookup = Definition::load("customer-lookup.json");
    let bearer = Credentials::bearer();

    // The caller's number as Architect's Call.Ani gives it.
    let live = lookup.run(&stack, &bearer, &lookup_input("tel:+442079460001")).await;
    assert_outputs(
        "live",
        &live,
        json!({"correlationId": CONVERSATION_ID, "source": "live", "found": true, "customerId": "C-1001",
               "tier": "vip", "cacheAgeSeconds": 0, "warning": ""}),
    );

    let cache = lookup.run(&stack, &bearer, &lookup_input(VIP)).await;
    assert_outputs(
        "cache",
        &cache,
        json!({"source": "cache", "found": true, "customerId": "C-1001", "tier": "vip", "warning": ""}),
    );
    assert!(cache.output["cacheAgeSeconds"].as_i64().is_some_and(|age| age >= 0), "{}", cache.output);

    let unknown = lookup.run(&stack, &bearer, &lookup_input(NOT_A_CUSTOMER)).await;
    assert_outputs(
        "a number the CRM does not know",
        &unknown,
        json!({"source": "live", "found": false, "customerId": "UNKNOWN", "tier": "standard", "warning": ""}),
    );

    // The Basic Auth credential type: the same action without its header.
    let basic = lookup.for_basic_auth().run(&stack, &Credentials::basic(), &lookup_input(GOLD)).await;
    assert_outputs(
        "Basic Auth",
        &basic,
        json!({"source": "live", "customerId": "C-1002", "tier": "gold", "warning": ""}),
    );

    stack.crm("down").await;
    let default = lookup.run(&stack, &bearer, &lookup_input(NEVER_SEEN)).await;
    assert_eq!(default.raw["found"], Value::Null, "the facade's default answer: {}", default.raw);
    assert_eq!(default.raw["cacheAgeSeconds"], Value::Null, "{}", default.raw);
    assert_outputs(
        "default",
        &default,
        json!({"correlationId": CONVERSATION_ID, "source": "default", "found": false, "customerId": "UNKNOWN",
               "tier": "standard", "cacheAgeSeconds": -1, "warning": "CRM_UNAVAILABLE_NO_CACHE"}),
    );

    // A wrong credential is the one thing that should fail: a 4xx.
    let wrong = Credentials::UserDefined(vec![(TOKEN_FIELD.to_owned(), "not-the-token".to_owned())]);
    match lookup.execute(&stack, &wrong, &lookup_input(VIP)).await {
        Err(ActionFailure::Http { status: 401, .. }) => {}
        Err(other) => panic!("a wrong token: expected HTTP 401, got {other}"),
        Ok(execution) => panic!("a wrong token was answered: {}", execution.output),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lookup_definition_maps_a_stale_answer() {
    let stack =
        Stack::start_with(&[("FAILSOFT_FRESHNESS_SECS", "1"), ("FAILSOFT_NOT_FOUND_FRESHNESS_SECS", "1")]).await;
    with_customers(&stack).await;
    let lookup = Definition::load("customer-lookup.json");
    let bearer = Credentials::bearer();
    let warm = lookup.run(&stack, &bearer, &lookup_input(VIP)).await;
    assert_outputs("warming lookup", &warm, json!({"source": "live", "tier": "vip"}));
    stack.crm("down").await;

    let stale = wait_until("the cached record to go stale", Duration::from_secs(10), || async {
        let execution = lookup.run(&stack, &bearer, &lookup_input(VIP)).await;
        (execution.output["source"] != "cache").then_some(execution)
    })
    .await;
    assert_outputs(
        "stale",
        &stale,
        json!({"correlationId": CONVERSATION_ID, "source": "stale_cache", "found": true, "customerId": "C-1001",
               "tier": "vip", "warning": "CRM_UNAVAILABLE_USING_CACHED_DATA"}),
    );
    assert!(stale.output["cacheAgeSeconds"].as_i64().is_some_and(|age| age >= 1), "{}", stale.output);
}

#[tokio::test(flavor = "multi_thread")]
async fn case_and_result_definitions_map_every_write_status() {
    // A queue of one: the second write with the CRM down is NOT_ACCEPTED.
    let stack = Stack::start_with(&[("FAILSOFT_LOCAL_QUEUE_CAPACITY", "1")]).await;
    let case = Definition::load("create-case.json");
    let result = Definition::load("get-result.json");
    let bearer = Credentials::bearer();
    let poll = |id: &str| json!({"correlationId": id});

    // Text that breaks a JSON body unless the template escapes it.
    let subject = "Callback \"today\"\\tomorrow";
    let description = "Line one\nLine \"two\"\t\u{e9}";
    let complete = case
        .run(
            &stack,
            &bearer,
            &json!({"ani": "tel:+13175550123", "correlationId": format!("{CONVERSATION_ID}-cb"), "subject": subject,
                    "description": description, "conversationId": CONVERSATION_ID}),
        )
        .await;
    assert_outputs(
        "COMPLETE",
        &complete,
        json!({"correlationId": format!("{CONVERSATION_ID}-cb"), "status": "COMPLETE", "reason": "", "warning": ""}),
    );
    let case_id = complete.output["caseId"].as_str().filter(|id| !id.is_empty()).expect("a caseId").to_owned();
    let ledger = stack.ledger().await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0]["body"]["subject"], subject, "the subject arrives intact: {}", ledger[0]);
    assert_eq!(ledger[0]["body"]["description"], description, "{}", ledger[0]);
    assert_eq!(ledger[0]["body"]["conversationId"], CONVERSATION_ID, "{}", ledger[0]);
    let polled = result.run(&stack, &bearer, &poll(&format!("{CONVERSATION_ID}-cb"))).await;
    assert_outputs(
        "poll COMPLETE",
        &polled,
        json!({"status": "COMPLETE", "caseId": case_id, "reason": "", "warning": ""}),
    );

    // The same correlationId again (a retried action): the same case.
    let again = case
        .run(
            &stack,
            &bearer,
            &json!({"ani": "+13175550123", "correlationId": format!("{CONVERSATION_ID}-cb"), "subject": subject}),
        )
        .await;
    assert_outputs("retried", &again, json!({"status": "COMPLETE", "caseId": case_id}));
    assert_eq!(stack.ledger().await.len(), 1, "no second case");

    // Optional inputs left out; the CRM refuses the case for good.
    stack.admin_mode(json!({"mode": "reject", "status": 422})).await;
    let failed = case
        .run(&stack, &bearer, &json!({"ani": "+13175550123", "correlationId": "it-da-failed", "subject": "Callback"}))
        .await;
    assert_outputs(
        "FAILED",
        &failed,
        json!({"correlationId": "it-da-failed", "status": "FAILED", "caseId": "", "reason": "CRM_REJECTED_422", "warning": ""}),
    );
    let polled = result.run(&stack, &bearer, &poll("it-da-failed")).await;
    assert_outputs("poll FAILED", &polled, json!({"status": "FAILED", "caseId": "", "reason": "CRM_REJECTED_422"}));

    stack.crm("down").await;
    let pending = case
        .run(&stack, &bearer, &json!({"ani": "+13175550123", "correlationId": "it-da-pending", "subject": "Callback"}))
        .await;
    assert_outputs(
        "PENDING",
        &pending,
        json!({"correlationId": "it-da-pending", "status": "PENDING", "caseId": "", "reason": "",
               "warning": "CRM_UNAVAILABLE_WRITE_QUEUED"}),
    );
    let polled = result.run(&stack, &bearer, &poll("it-da-pending")).await;
    assert_outputs(
        "poll PENDING",
        &polled,
        json!({"correlationId": "it-da-pending", "status": "PENDING", "caseId": ""}),
    );

    let refused = case
        .run(&stack, &bearer, &json!({"ani": "+13175550123", "correlationId": "it-da-refused", "subject": "Callback"}))
        .await;
    assert_outputs(
        "NOT_ACCEPTED",
        &refused,
        json!({"status": "NOT_ACCEPTED", "caseId": "", "warning": "CRM_AND_QUEUE_UNAVAILABLE_RETRY_LATER"}),
    );
    assert!(refused.output["reason"].as_str().is_some_and(|r| !r.is_empty()), "{}", refused.output);
    // Nothing was written, so there is nothing to poll: the Failure path.
    match result.execute(&stack, &bearer, &poll("it-da-refused")).await {
        Err(ActionFailure::Http { status: 404, body }) => assert_eq!(body["error"]["code"], "RESULT_NOT_FOUND"),
        Err(other) => panic!("polling a write nobody took: expected 404, got {other}"),
        Ok(execution) => panic!("polling a write nobody took was answered: {}", execution.output),
    }
}
