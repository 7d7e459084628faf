//! Request checks: pure functions from a request (or its JSON body) to the
//! value the flow needs, or the 4xx [`Refusal`] that says why not.

use base64::Engine as _;
use failsoft_shared::envelope::is_valid_correlation_id;
use failsoft_shared::keys::{Phone, normalize_phone};
use failsoft_shared::signature::constant_time_eq;
use serde_json::{Map, Value};

use super::{Checked, Refusal};
use crate::config::Credentials;
use crate::http::{MAX_BODY_BYTES, Request, payload_too_large};

/// The request uses `method`, or a 405 naming the one it should.
pub(super) fn only(req: &Request, method: &str) -> Checked<()> {
    if req.method == method {
        Ok(())
    } else {
        let mut refusal = Refusal::new(405, "METHOD_NOT_ALLOWED", &format!("use {method}"));
        refusal.0 = refusal.0.with_header("allow", method);
        Err(refusal)
    }
}

/// The request carries the configured Bearer token or Basic credentials,
/// compared in constant time, or a 401 with the challenge.
pub(super) fn authorise(creds: &Credentials, req: &Request) -> Checked<()> {
    let header = req.header_value("authorization").unwrap_or("").trim();
    let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
    let value = value.trim();
    let ok = if scheme.eq_ignore_ascii_case("bearer") {
        creds.bearer_token.as_deref().is_some_and(|t| constant_time_eq(t.as_bytes(), value.as_bytes()))
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(value).unwrap_or_default();
        creds.basic.as_ref().is_some_and(|(user, password)| {
            let expected = format!("{user}:{password}");
            constant_time_eq(expected.as_bytes(), &decoded)
        })
    } else {
        false
    };
    if ok {
        Ok(())
    } else {
        Err(Refusal::new(401, "UNAUTHORIZED", "missing or wrong credentials (Bearer token or Basic)").with_challenge())
    }
}

/// The body is within the cap. Hosts stop reading at the cap already; this
/// holds for a request built any other way (tests, a future host).
pub(super) fn within_cap(req: &Request) -> Checked<()> {
    if req.body.len() > MAX_BODY_BYTES {
        return Err(Refusal(payload_too_large()).counted("PAYLOAD_TOO_LARGE"));
    }
    Ok(())
}

/// The JSON object of a Data Action body, or the 4xx that says why not.
pub(super) fn json_body(req: &Request) -> Checked<Map<String, Value>> {
    within_cap(req)?;
    if req.header_value("content-type").is_some_and(|ct| !ct.to_ascii_lowercase().contains("json")) {
        return Err(Refusal::new(415, "UNSUPPORTED_MEDIA_TYPE", "send application/json"));
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Refusal::new(400, "INVALID_BODY", "the body must be a JSON object")),
        Err(_) => Err(Refusal::new(400, "INVALID_JSON", "the body is not valid JSON")),
    }
}

/// The caller's number (`ani`), normalised.
pub(super) fn ani(body: &Map<String, Value>) -> Checked<Phone> {
    match body.get("ani") {
        None | Some(Value::Null) => Err(Refusal::new(400, "MISSING_ANI", "`ani` is required")),
        Some(Value::String(raw)) => {
            normalize_phone(raw).map_err(|e| Refusal::new(400, "INVALID_ANI", &format!("`ani` is invalid: {e}")))
        }
        Some(_) => Err(Refusal::new(400, "INVALID_ANI", "`ani` must be a string")),
    }
}

/// The caller's `correlationId`, or `None` when it gave none and the
/// facade is to make one.
pub(super) fn correlation_id(body: &Map<String, Value>) -> Checked<Option<String>> {
    match body.get("correlationId") {
        // A Data Action input left blank renders as "": absent, not invalid.
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if id.is_empty() => Ok(None),
        Some(Value::String(id)) if is_valid_correlation_id(id) => Ok(Some(id.clone())),
        Some(_) => {
            Err(Refusal::new(400, "INVALID_CORRELATION_ID", "`correlationId` must be 1-64 letters, digits, '-' or '_'"))
        }
    }
}

/// A text field of at most `max` characters; a required one must not be
/// blank. Codes are `MISSING_X` / `INVALID_X` for field `x` in screaming case.
pub(super) fn text_field(body: &Map<String, Value>, name: &str, max: usize, required: bool) -> Checked<Option<String>> {
    let code = |prefix: &str| format!("{prefix}_{}", to_screaming(name));
    match body.get(name) {
        None | Some(Value::Null) if required => {
            Err(Refusal::new(400, &code("MISSING"), &format!("`{name}` is required")))
        }
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if required && s.trim().is_empty() => {
            Err(Refusal::new(400, &code("MISSING"), &format!("`{name}` must not be empty")))
        }
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
        Some(_) => {
            Err(Refusal::new(400, &code("INVALID"), &format!("`{name}` must be a string of at most {max} characters")))
        }
    }
}

fn to_screaming(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The refusal's status and code, or the value.
    fn refused<T: std::fmt::Debug>(checked: Checked<T>) -> (u16, String) {
        let Refusal(response) = checked.expect_err("a refusal");
        let code = response.json_body()["error"]["code"].as_str().unwrap_or_default().to_owned();
        (response.status, code)
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn creds(bearer: Option<&str>, basic: Option<(&str, &str)>) -> Credentials {
        Credentials { bearer_token: bearer.map(str::to_owned), basic: basic.map(|(u, p)| (u.to_owned(), p.to_owned())) }
    }

    #[test]
    fn a_wrong_method_is_refused_naming_the_right_one() {
        assert!(only(&Request::new("POST", "/v1/cases"), "POST").is_ok());
        let Refusal(response) = only(&Request::new("GET", "/v1/cases"), "POST").expect_err("GET on a POST route");
        assert_eq!(response.status, 405);
        assert!(response.headers.contains(&("allow", "POST".to_owned())), "{:?}", response.headers);
    }

    #[test]
    fn credentials_must_match_the_configured_scheme_exactly() {
        let bearer_only = creds(Some("token-a"), None);
        let req = |auth: &str| Request::new("POST", "/").header("authorization", auth);
        assert!(authorise(&bearer_only, &req("Bearer token-a")).is_ok());
        assert!(authorise(&bearer_only, &req("bearer   token-a ")).is_ok(), "scheme case and padding");
        assert_eq!(refused(authorise(&bearer_only, &req("Bearer token-aX"))), (401, "UNAUTHORIZED".to_owned()));
        assert_eq!(refused(authorise(&bearer_only, &Request::new("POST", "/"))).0, 401);
        let basic = base64::engine::general_purpose::STANDARD.encode("genesys:pw");
        assert_eq!(refused(authorise(&bearer_only, &req(&format!("Basic {basic}")))).0, 401, "Basic not configured");

        let both = creds(Some("token-a"), Some(("genesys", "pw")));
        assert!(authorise(&both, &req(&format!("Basic {basic}"))).is_ok());
        let wrong = base64::engine::general_purpose::STANDARD.encode("genesys:pwX");
        assert_eq!(refused(authorise(&both, &req(&format!("Basic {wrong}")))).0, 401);
        let Refusal(response) = authorise(&both, &req("Token token-a")).expect_err("unknown scheme");
        assert!(response.headers.iter().any(|(n, _)| *n == "www-authenticate"), "the challenge is sent");
    }

    #[test]
    fn the_body_must_be_a_json_object_within_the_cap() {
        let req = |body: &str| Request::new("POST", "/").header("content-type", "application/json").body(body);
        assert_eq!(json_body(&req(r#"{"ani":"1"}"#)).expect("an object")["ani"], "1");
        assert_eq!(refused(json_body(&req("[1]"))), (400, "INVALID_BODY".to_owned()));
        assert_eq!(refused(json_body(&req("{ani"))), (400, "INVALID_JSON".to_owned()));
        let text = Request::new("POST", "/").header("content-type", "text/plain").body("{}");
        assert_eq!(refused(json_body(&text)), (415, "UNSUPPORTED_MEDIA_TYPE".to_owned()));
        assert!(json_body(&Request::new("POST", "/").body("{}")).is_ok(), "no content type is taken as JSON");

        let at_cap = format!(r#"{{"p":"{}"}}"#, "x".repeat(MAX_BODY_BYTES - 8));
        assert_eq!(at_cap.len(), MAX_BODY_BYTES);
        assert!(json_body(&req(&at_cap)).is_ok());
        let over = format!(r#"{{"p":"{}"}}"#, "x".repeat(MAX_BODY_BYTES - 7));
        assert_eq!(refused(json_body(&req(&over))), (413, "PAYLOAD_TOO_LARGE".to_owned()));
    }

    #[test]
    fn ani_is_required_and_normalised() {
        assert_eq!(ani(&object(json!({"ani": "+44 20 7946 0123"}))).expect("valid").as_str(), "+442079460123");
        assert_eq!(refused(ani(&object(json!({})))), (400, "MISSING_ANI".to_owned()));
        assert_eq!(refused(ani(&object(json!({"ani": null})))), (400, "MISSING_ANI".to_owned()));
        assert_eq!(refused(ani(&object(json!({"ani": 442079460123u64})))), (400, "INVALID_ANI".to_owned()));
        assert_eq!(refused(ani(&object(json!({"ani": "12345"})))), (400, "INVALID_ANI".to_owned()));
    }

    #[test]
    fn a_blank_correlation_id_is_absent_and_a_bad_one_refused() {
        for absent in [json!({}), json!({"correlationId": null}), json!({"correlationId": ""})] {
            assert_eq!(correlation_id(&object(absent.clone())).expect("absent"), None, "{absent}");
        }
        let given = correlation_id(&object(json!({"correlationId": "call-42_a"}))).expect("valid");
        assert_eq!(given.as_deref(), Some("call-42_a"));
        for bad in [json!("has spaces"), json!("c".repeat(65)), json!(42)] {
            let body = object(json!({ "correlationId": bad }));
            assert_eq!(refused(correlation_id(&body)), (400, "INVALID_CORRELATION_ID".to_owned()), "{bad}");
        }
    }

    #[test]
    fn text_fields_are_bounded_in_characters_and_named_in_codes() {
        let body = object(json!({"subject": "é".repeat(255), "conversationId": "   ", "n": 3}));
        assert_eq!(text_field(&body, "subject", 255, true).expect("255 chars").map(|s| s.chars().count()), Some(255));
        assert_eq!(refused(text_field(&body, "subject", 254, true)), (400, "INVALID_SUBJECT".to_owned()));
        assert_eq!(refused(text_field(&body, "conversationId", 64, true)), (400, "MISSING_CONVERSATION_ID".to_owned()));
        assert_eq!(text_field(&body, "conversationId", 64, false).expect("optional").as_deref(), Some("   "));
        assert_eq!(text_field(&body, "description", 10, false).expect("absent, optional"), None);
        assert_eq!(refused(text_field(&body, "description", 10, true)), (400, "MISSING_DESCRIPTION".to_owned()));
        assert_eq!(refused(text_field(&body, "n", 10, false)), (400, "INVALID_N".to_owned()));
    }
}
