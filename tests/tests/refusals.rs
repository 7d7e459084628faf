//! Requests that are the caller's fault: the right 4xx with
//! `{"error":{"code","message"}}`, never forwarded, never sent to the CRM.
//! And the two ways in that need no fault: `/healthz`, and Basic
//! credentials when they are configured.

use failsoft_tests::{AUTH_TOKEN, Stack, assert_error};
use reqwest::Method;
use serde_json::{Value, json};

const ANI: &str = "+442079460123";

enum Auth {
    Bearer(&'static str),
    Basic(&'static str, &'static str),
    Raw(&'static str),
    Nothing,
}

/// One refused request and what it must be answered.
struct Bad {
    name: &'static str,
    method: Method,
    path: &'static str,
    auth: Auth,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

/// An authorised JSON POST of `body` to `path` that must be refused.
fn post(name: &'static str, path: &'static str, body: impl Into<Vec<u8>>, status: u16, code: &'static str) -> Bad {
    Bad {
        name,
        method: Method::POST,
        path,
        auth: Auth::Bearer(AUTH_TOKEN),
        content_type: Some("application/json"),
        body: body.into(),
        status,
        code,
    }
}

fn lookup(name: &'static str, body: Value, code: &'static str) -> Bad {
    post(name, "/v1/customer-lookup", body.to_string(), 400, code)
}

fn bad_requests() -> Vec<Bad> {
    let valid = json!({"ani": ANI}).to_string();
    let huge = json!({"ani": ANI, "padding": "x".repeat(17 * 1024)}).to_string();
    let unauthorised =
        |name, auth| Bad { auth, ..post(name, "/v1/customer-lookup", valid.clone(), 401, "UNAUTHORIZED") };
    vec![
        unauthorised("no Authorization", Auth::Nothing),
        unauthorised("wrong bearer token", Auth::Bearer("test-only-wrong-token")),
        unauthorised("bearer token with a suffix", Auth::Raw("Bearer test-only-bearer-token-not-a-secretX")),
        unauthorised("wrong Basic", Auth::Basic("genesys", "test-only-wrong-password")),
        unauthorised("Basic when only a bearer token is configured", Auth::Basic("genesys", AUTH_TOKEN)),
        unauthorised("unknown scheme", Auth::Raw("Token test-only-bearer-token-not-a-secret")),
        post("body over 16 KiB", "/v1/customer-lookup", huge.clone(), 413, "PAYLOAD_TOO_LARGE"),
        post("case body over 16 KiB", "/v1/cases", huge, 413, "PAYLOAD_TOO_LARGE"),
        post("not JSON", "/v1/customer-lookup", "{ani: +44", 400, "INVALID_JSON"),
        post("JSON array", "/v1/customer-lookup", format!("[{valid}]"), 400, "INVALID_BODY"),
        post("JSON string", "/v1/customer-lookup", format!("{:?}", ANI), 400, "INVALID_BODY"),
        lookup("missing ani", json!({"correlationId": "abc"}), "MISSING_ANI"),
        lookup("ani null", json!({"ani": null}), "MISSING_ANI"),
        lookup("ani a number", json!({"ani": 442079460123u64}), "INVALID_ANI"),
        lookup("ani empty", json!({"ani": ""}), "INVALID_ANI"),
        lookup("ani blank", json!({"ani": "   "}), "INVALID_ANI"),
        lookup("ani too short", json!({"ani": "12345"}), "INVALID_ANI"),
        lookup("ani 16 digits", json!({"ani": "1234567890123456"}), "INVALID_ANI"),
        lookup("ani with letters", json!({"ani": "+44 20 CALL ME"}), "INVALID_ANI"),
        lookup("ani with an inner plus", json!({"ani": "12+3456789012"}), "INVALID_ANI"),
        lookup(
            "correlationId with spaces",
            json!({"ani": ANI, "correlationId": "has spaces"}),
            "INVALID_CORRELATION_ID",
        ),
        lookup(
            "correlationId of 65 chars",
            json!({"ani": ANI, "correlationId": "a".repeat(65)}),
            "INVALID_CORRELATION_ID",
        ),
        lookup("correlationId a number", json!({"ani": ANI, "correlationId": 7}), "INVALID_CORRELATION_ID"),
        post("missing ani at the seed's path", "/crm/customer-lookup", "{}", 400, "MISSING_ANI"),
        Bad {
            content_type: Some("text/plain"),
            ..post("text/plain", "/v1/customer-lookup", valid.clone(), 415, "UNSUPPORTED_MEDIA_TYPE")
        },
        Bad {
            method: Method::GET,
            body: Vec::new(),
            ..post("GET a lookup", "/v1/customer-lookup", "", 405, "METHOD_NOT_ALLOWED")
        },
        post("unknown route", "/v1/customers", valid.clone(), 404, "NOT_FOUND"),
        post("case without subject", "/v1/cases", json!({"ani": ANI}).to_string(), 400, "MISSING_SUBJECT"),
        post(
            "case with an empty subject",
            "/v1/cases",
            json!({"ani": ANI, "subject": " "}).to_string(),
            400,
            "MISSING_SUBJECT",
        ),
        post(
            "case with a 300-char subject",
            "/v1/cases",
            json!({"ani": ANI, "subject": "s".repeat(300)}).to_string(),
            400,
            "INVALID_SUBJECT",
        ),
        post("case without ani", "/v1/cases", json!({"subject": "Callback"}).to_string(), 400, "MISSING_ANI"),
        Bad {
            method: Method::GET,
            body: Vec::new(),
            content_type: None,
            ..post("result with a bad id", "/v1/results/bad%20id", "", 400, "INVALID_CORRELATION_ID")
        },
        Bad { method: Method::DELETE, ..post("DELETE cases", "/v1/cases", "", 405, "METHOD_NOT_ALLOWED") },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_the_right_4xx_and_reach_nothing() {
    let stack = Stack::start().await;
    let forwarded_before = stack.metric_sum("failsoft_edge_forwarded_total").await;
    let crm_before = stack.sim_count("requests").await;

    let cases = bad_requests();
    assert!(cases.len() >= 20);
    for case in cases {
        let mut request = stack.http.request(case.method.clone(), stack.url(case.path)).body(case.body);
        request = match case.auth {
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
            Auth::Raw(value) => request.header("authorization", value),
            Auth::Nothing => request,
        };
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        let reply = stack.send(request).await;
        assert_error(case.name, reply.status, &reply.body, case.status, case.code);
        match reply.status {
            405 => assert_eq!(reply.headers.get("allow").map(|v| v.as_bytes()), Some(&b"POST"[..]), "{}", case.name),
            401 => assert!(reply.headers.contains_key("www-authenticate"), "{}: a challenge", case.name),
            _ => {}
        }
    }

    assert_eq!(
        stack.metric_sum("failsoft_edge_forwarded_total").await,
        forwarded_before,
        "a refused request is never forwarded"
    );
    assert_eq!(stack.sim_count("requests").await, crm_before, "a refused request never reaches the CRM");

    // Unknown fields are ignored: the same request with an extra one is fine.
    let (status, body) = stack.post("/v1/customer-lookup", &json!({"ani": ANI, "foo": 1})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "live", "{body}");
    assert_eq!(body["found"], false, "a number the CRM lacks: {body}");
}

/// A lookup body of exactly `len` bytes.
fn padded_lookup(len: usize) -> String {
    let empty = json!({"ani": ANI, "padding": ""}).to_string();
    json!({"ani": ANI, "padding": "x".repeat(len - empty.len())}).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_are_inclusive() {
    let stack = Stack::start().await;
    let send = |body: String| {
        stack
            .http
            .post(stack.url("/v1/customer-lookup"))
            .bearer_auth(AUTH_TOKEN)
            .header("content-type", "application/json")
            .body(body)
    };
    let at_cap = padded_lookup(16 * 1024);
    assert_eq!(at_cap.len(), 16_384);
    let reply = stack.send(send(at_cap)).await;
    assert_eq!(reply.status, 200, "a 16 KiB body is accepted: {}", reply.body);
    let reply = stack.send(send(padded_lookup(16 * 1024 + 1))).await;
    assert_error("one byte over 16 KiB", reply.status, &reply.body, 413, "PAYLOAD_TOO_LARGE");

    let id = "c".repeat(64);
    let (status, body) = stack.post("/v1/customer-lookup", &json!({"ani": ANI, "correlationId": id})).await;
    assert_eq!(status, 200, "a 64-char correlationId is accepted: {body}");
    assert_eq!(body["correlationId"], id.as_str());
    let (status, body) = stack.create_case(&json!({"ani": ANI, "subject": "s".repeat(255)})).await;
    assert_eq!((status, &body["status"]), (200, &json!("COMPLETE")), "a 255-char subject is accepted: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_credentials_work_when_configured() {
    let stack = Stack::start_with(&[
        ("FAILSOFT_BASIC_USER", "genesys-test"),
        ("FAILSOFT_BASIC_PASSWORD", "test-only-basic-password"),
    ])
    .await;
    let lookup = |user: &'static str, password: &'static str| {
        stack.http.post(stack.url("/v1/customer-lookup")).basic_auth(user, Some(password)).json(&json!({"ani": ANI}))
    };
    let reply = stack.send(lookup("genesys-test", "test-only-basic-password")).await;
    assert_eq!(reply.status, 200, "right Basic: {}", reply.body);
    let reply = stack.send(lookup("genesys-test", "test-only-wrong-password")).await;
    assert_error("wrong Basic password", reply.status, &reply.body, 401, "UNAUTHORIZED");
    let reply = stack.send(lookup("someone-else", "test-only-basic-password")).await;
    assert_error("wrong Basic user", reply.status, &reply.body, 401, "UNAUTHORIZED");
    let (status, body) = stack.lookup(ANI).await;
    assert_eq!(status, 200, "the bearer token still works: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_answers_without_credentials() {
    let stack = Stack::start().await;
    let reply = stack.send(stack.http.get(stack.url("/healthz"))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, json!({"status": "ok"}));
    assert_eq!(stack.sim_count("requests").await, 0, "a health check does not call the CRM");
}
