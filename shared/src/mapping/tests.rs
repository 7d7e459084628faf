use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde_json::json;

use super::*;

fn doc(text: &str) -> MappingDoc {
    match text.trim_start().starts_with('{') {
        true => serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}")),
        false => toml::from_str(text).unwrap_or_else(|e| panic!("{e}")),
    }
}

fn secrets(name: &str) -> Option<String> {
    Some(alloc::format!("s3cret-{name}"))
}

fn profile(name: &str) -> Mapping {
    Mapping::bind(&doc(profiles::text(name).unwrap()), &secrets).unwrap()
}

fn refused(text: &str) -> MappingError {
    Mapping::bind(&doc(text), &secrets).expect_err("should be refused")
}

fn header<'a>(req: &'a CrmRequest, name: &str) -> Option<&'a str> {
    req.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

const MINIMAL: &str = r#"
name = "t"
[lookup]
method = "GET"
path = "/c"
answer = { customer_id = "$.id", tier = "$.tier" }
[create_case]
method = "POST"
path = "/k"
answer = { case_id = "$.id" }
"#;

#[test]
fn every_shipped_profile_binds() {
    for (name, text) in profiles::PROFILES {
        let mapping = Mapping::bind(&doc(text), &secrets).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(mapping.name(), *name);
    }
    let find: OperationDoc = serde_json::from_str(profiles::GENERIC_FIND_CASE).unwrap();
    let mut generic = doc(profiles::GENERIC);
    generic.find_case = Some(find);
    assert!(Mapping::bind(&generic, &secrets).unwrap().can_find_cases());
}

#[test]
fn the_generic_profile_is_the_contract() {
    let m = profile("generic");
    assert!(!m.uses_token() && !m.can_find_cases());
    let req = m.lookup("http://crm", "+442071234567", "corr-9", None).unwrap();
    assert_eq!((req.method.as_str(), req.url.as_str()), ("GET", "http://crm/customers?phone=%2B442071234567"));
    assert_eq!(header(&req, CORRELATION_HEADER), Some("corr-9"));
    assert_eq!(req.body, None);
    let case =
        json!({"phone": "+1555", "subject": "s", "description": null, "conversationId": "v", "externalRef": "corr-1"});
    let req = m.create_case("http://crm", "corr-1", &case, None).unwrap();
    assert_eq!(req.url, "http://crm/cases");
    assert_eq!(header(&req, "idempotency-key"), Some("corr-1"));
    assert_eq!(serde_json::from_slice::<Value>(&req.body.unwrap()).unwrap(), case, "the case, as it is");
    let probe = m.probe("http://crm", None).unwrap();
    assert_eq!(probe.url, "http://crm/customers?phone=%2B10000000000");

    let found = m.read_customer(br#"{"customerId":"C-1","tier":"vip","name":"A"}"#, "standard");
    assert_eq!(
        found,
        LookupAnswer::Found(CustomerRecord { found: true, customer_id: "C-1".into(), tier: "vip".into() })
    );
    assert_eq!(m.read_customer(br#"{"id":"C-1"}"#, "standard"), LookupAnswer::Unreadable);
    assert_eq!(m.read_customer(b"<html>", "standard"), LookupAnswer::Unreadable);
    let kept =
        m.read_created_case(br#"{"caseId":"CASE-1","status":"open","phone":"+1555","description":"d"}"#).unwrap();
    assert_eq!(serde_json::to_value(kept).unwrap(), json!({"caseId": "CASE-1", "status": "open", "createdAt": null}));
    assert!(m.read_created_case(br#"{"ok":true}"#).is_none());
    let status = |code| Attempt::Status { code, retry_after: None };
    assert_eq!(m.classify(Op::Lookup, status(404), b""), Verdict::NotFound);
    assert_eq!(m.classify(Op::CreateCase, status(404), b""), Verdict::Failed(ErrorClass::Permanent { status: 404 }));
}

#[test]
fn salesforce_escapes_the_number_into_soql_and_reads_records() {
    let m = profile("salesforce");
    assert!(m.uses_token() && m.can_find_cases());
    let req = m.lookup("https://x.my.salesforce.com", "+13175550123", "c-1", Some("tok")).unwrap();
    let q = "SELECT%20Id%2C%20Tier__c%20FROM%20Contact%20WHERE%20Phone%20%3D%20%27%2B13175550123%27%20LIMIT%201";
    assert_eq!(req.url, alloc::format!("https://x.my.salesforce.com/services/data/v60.0/query?q={q}"));
    assert_eq!(header(&req, "authorization"), Some("Bearer tok"));
    // An injection attempt stays inside the literal.
    let req = m.lookup("", "x' OR Phone != '", "c-1", None).unwrap();
    assert!(req.url.contains("%27x%5C%27%20OR%20Phone%20%21%3D%20%5C%27%27"), "{}", req.url);
    assert!(m.lookup("", "+1\u{0}", "c-1", None).is_err(), "a NUL cannot be escaped in SOQL");

    let answer =
        br#"{"totalSize":1,"done":true,"records":[{"attributes":{"type":"Contact"},"Id":"003X","Tier__c":"gold"}]}"#;
    assert_eq!(
        m.read_customer(answer, "standard"),
        LookupAnswer::Found(CustomerRecord { found: true, customer_id: "003X".into(), tier: "gold".into() })
    );
    let no_tier = br#"{"totalSize":1,"done":true,"records":[{"Id":"003X","Tier__c":null}]}"#;
    assert!(matches!(m.read_customer(no_tier, "standard"), LookupAnswer::Found(r) if r.tier == "standard"));
    assert_eq!(m.read_customer(br#"{"totalSize":0,"done":true,"records":[]}"#, "standard"), LookupAnswer::NotFound);

    let case = json!({"phone": "+1555", "subject": "Refund", "description": null, "externalRef": "c-7"});
    let req = m.create_case("https://x", "c-7", &case, Some("tok")).unwrap();
    assert_eq!(req.url, "https://x/services/data/v60.0/sobjects/Case/");
    assert_eq!(
        serde_json::from_slice::<Value>(&req.body.unwrap()).unwrap(),
        json!({"Subject": "Refund", "Origin": "Phone", "SuppliedPhone": "+1555", "Failsoft_Ref__c": "c-7"}),
        "a field with no value is left out"
    );
    assert_eq!(m.read_created_case(br#"{"id":"500X","success":true,"errors":[]}"#).unwrap().case_id, "500X");
    let find = m.find_case("https://x", "c-7", Some("tok")).unwrap().unwrap();
    assert!(find.url.contains("FROM%20Case%20WHERE%20Failsoft_Ref__c%20%3D%20%27c-7%27"), "{}", find.url);
    let found = br#"{"totalSize":1,"done":true,"records":[{"Id":"500X","Status":"New","CreatedDate":"2026-12-07T10:00:00.000+0000"}]}"#;
    assert_eq!(m.read_found_case(found).unwrap().unwrap().case_id, "500X");
    assert_eq!(m.read_found_case(br#"{"totalSize":0,"done":true,"records":[]}"#), Ok(None));

    let limit = br#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#;
    let status = |code| Attempt::Status { code, retry_after: None };
    assert!(matches!(m.classify(Op::CreateCase, status(403), limit), Verdict::Failed(ErrorClass::Throttled { .. })));
    assert_eq!(m.classify(Op::CreateCase, status(403), b"[]"), Verdict::Failed(ErrorClass::Permanent { status: 403 }));
    assert!(m.token_refused(401) && !m.token_refused(403));
}

#[test]
fn oauth_token_request_and_answer() {
    let m = profile("salesforce");
    let req = m.token_request("https://x").unwrap();
    assert_eq!((req.method.as_str(), req.url.as_str()), ("POST", "https://x/services/oauth2/token"));
    assert_eq!(
        String::from_utf8(req.body.unwrap()).unwrap(),
        "grant_type=client_credentials&client_id=s3cret-FAILSOFT_CRM_CLIENT_ID&client_secret=s3cret-FAILSOFT_CRM_CLIENT_SECRET"
    );
    let token =
        m.read_token(br#"{"access_token":"00D!x","instance_url":"https://x","token_type":"Bearer"}"#, 1_000).unwrap();
    assert_eq!(token, Token { access_token: "00D!x".into(), expires_at_s: 1_900 }, "no expires_in: the default");
    assert!(!token.is_due(1_000) && token.is_due(1_841));
    assert_eq!(m.read_token(br#"{"access_token":"t","expires_in":"1799"}"#, 0).unwrap().expires_at_s, 1_799);
    assert!(m.read_token(br#"{"error":"invalid_client"}"#, 0).is_none());
    assert!(format!("{m:?}").contains("FAILSOFT_CRM_CLIENT_ID") && !format!("{m:?}").contains("s3cret"));
}

#[test]
fn zendesk_quotes_the_number_and_refuses_what_a_phrase_cannot_hold() {
    let m = profile("zendesk");
    assert!(!m.uses_token());
    let req = m.lookup("https://acme.zendesk.com", "+13175550123", "c-1", None).unwrap();
    assert_eq!(req.url, "https://acme.zendesk.com/api/v2/search.json?query=type%3Auser%20phone%3A%22%2B13175550123%22");
    let basic = header(&req, "authorization").unwrap();
    assert_eq!(basic, "Basic czNjcmV0LUZBSUxTT0ZUX0NSTV9VU0VSTkFNRS90b2tlbjpzM2NyZXQtRkFJTFNPRlRfQ1JNX0FQSV9UT0tFTg==");
    for hostile in ["+1\" type:ticket \"", "+1\nx", "+1\\"] {
        assert!(matches!(m.lookup("", hostile, "c", None), Err(RenderError::Unescapable { .. })), "{hostile:?}");
    }
    let answer = br#"{"results":[{"id":42,"external_id":"C-9","user_fields":{"tier":"vip"},"result_type":"user"}],"count":1,"next_page":null}"#;
    assert!(
        matches!(m.read_customer(answer, "standard"), LookupAnswer::Found(r) if r.customer_id == "C-9" && r.tier == "vip")
    );
    assert_eq!(m.read_customer(br#"{"results":[],"count":0}"#, "standard"), LookupAnswer::NotFound);
    let case = json!({"subject": "Refund \"now\"", "description": "line1\nline2"});
    let req = m.create_case("", "c-7", &case, None).unwrap();
    assert_eq!(header(&req, "idempotency-key"), Some("c-7"));
    let body: Value = serde_json::from_slice(&req.body.unwrap()).unwrap();
    assert_eq!(body["ticket"]["comment"]["body"], "Refund \"now\"\n\nline1\nline2", "JSON escapes the quotes");
    assert_eq!(body["ticket"]["external_id"], "c-7");
    assert_eq!(m.read_created_case(br#"{"ticket":{"id":35436,"status":"new"}}"#).unwrap().case_id, "35436");
    assert_eq!(
        m.read_found_case(br#"{"tickets":[{"id":7,"status":"open"}],"count":1}"#).unwrap().unwrap().case_id,
        "7"
    );
    assert_eq!(m.read_found_case(br#"{"tickets":[],"count":0}"#), Ok(None));
    assert_eq!(m.read_found_case(br#"<html>"#), Err(NotACaseList));
}

#[test]
fn a_hole_in_a_query_language_must_name_its_escaper() {
    let injecting = MINIMAL.replace(
        "path = \"/c\"",
        "path = \"/c\"\nquery = { q = \"SELECT Id FROM Contact WHERE Phone = '{{phone}}'\" }",
    );
    let e = refused(&injecting);
    assert_eq!(e.field, "lookup.query.q");
    assert!(e.why.contains("|soql"), "{e}");
    let in_body = MINIMAL.replace("path = \"/k\"", "path = \"/k\"\nbody = { query = \"phone:{{phone}} OR x\" }");
    assert_eq!(refused(&in_body).field, "create_case.body.query");
    let lone = MINIMAL.replace("path = \"/c\"", "path = \"/c\"\nquery = { phone = \"{{phone}}\" }");
    let m = Mapping::bind(&doc(&lone), &secrets).unwrap();
    let req = m.lookup("", "+1 OR 1=1\r\nX-Evil: 1", "c", None).unwrap();
    assert_eq!(req.url, "/c?phone=%2B1%20OR%201%3D1%0D%0AX-Evil%3A%201", "a lone hole is encoded whole");
}

#[test]
fn path_holes_cannot_add_segments_and_headers_cannot_be_split() {
    let text =
        MINIMAL.replace("path = \"/c\"", "path = \"/c/{{phone}}\"\nheaders = { X-Ref = \"{{correlation_id}}\" }");
    let m = Mapping::bind(&doc(&text), &secrets).unwrap();
    let req = m.lookup("", "../admin?x=1", "c", None).unwrap();
    assert_eq!(req.url, "/c/..%2Fadmin%3Fx%3D1");
    assert!(m.lookup("", "+1", "c\r\nX-Evil: 1", None).is_err());
}

#[test]
fn faults_name_their_field() {
    let cases: Vec<(String, &str)> = alloc::vec![
        (MINIMAL.replace("method = \"GET\"", "method = \"FETCH\""), "lookup.method"),
        (MINIMAL.replace("path = \"/c\"", "path = \"c\""), "lookup.path"),
        (MINIMAL.replace("customer_id = \"$.id\", ", ""), "lookup.answer.customer_id"),
        (MINIMAL.replace("tier = \"$.tier\"", "tier = \"tier\""), "lookup.answer.tier"),
        (MINIMAL.replace("{ case_id = \"$.id\" }", "{ status = \"$.s\" }"), "create_case.answer.case_id"),
        (MINIMAL.replace("path = \"/k\"", "path = \"/k/{{secret.KEY}}\""), "create_case.path"),
        (MINIMAL.replace("path = \"/k\"", "path = \"/k/{{vars.v}}\""), "create_case.path"),
        (alloc::format!("{MINIMAL}\n[auth]\nkind = \"header\"\nname = \"X Key\"\nvalue = \"k\""), "auth.name"),
        (alloc::format!("{MINIMAL}\n[vars]\nv = \"a b\""), "vars.v"),
    ];
    for (text, field) in cases {
        assert_eq!(refused(&text).field, field, "{text}");
    }
    let missing = Mapping::bind(&doc(profiles::text("zendesk").unwrap()), &|_| None).unwrap_err();
    assert_eq!(missing.field, "auth.username");
    assert!(missing.to_string().contains("FAILSOFT_CRM_USERNAME is not set"), "{missing}");
    assert!(toml::from_str::<MappingDoc>(&alloc::format!("{MINIMAL}\nextra = 1")).is_err(), "unknown keys are refused");
}

#[test]
fn hubspot_searches_with_the_number_as_a_json_value() {
    let m = profile("hubspot");
    assert!(!m.uses_token() && m.can_find_cases());
    let req = m.lookup("https://api.hubapi.com", "+1555\" OR x", "c-1", None).unwrap();
    assert_eq!(
        (req.method.as_str(), req.url.as_str()),
        ("POST", "https://api.hubapi.com/crm/v3/objects/contacts/search")
    );
    assert_eq!(header(&req, "authorization"), Some("Bearer s3cret-FAILSOFT_CRM_API_TOKEN"));
    let body: Value = serde_json::from_slice(&req.body.unwrap()).unwrap();
    assert_eq!(body["filterGroups"][0]["filters"][0]["value"], "+1555\" OR x", "one JSON string, whatever it holds");
    assert_eq!(body["properties"], json!(["failsoft_tier"]));
    let answer = br#"{"total":1,"results":[{"id":"512","properties":{"failsoft_tier":"gold"},"archived":false}]}"#;
    assert!(
        matches!(m.read_customer(answer, "standard"), LookupAnswer::Found(r) if r.customer_id == "512" && r.tier == "gold")
    );
    assert_eq!(m.read_customer(br#"{"total":0,"results":[]}"#, "standard"), LookupAnswer::NotFound);
    let req = m.create_case("", "c-7", &json!({"subject": "s"}), None).unwrap();
    let body: Value = serde_json::from_slice(&req.body.unwrap()).unwrap();
    assert_eq!(body["properties"]["failsoft_ref"], "c-7");
    assert_eq!(body["properties"]["hs_pipeline"], "0");
    assert_eq!(
        m.read_created_case(br#"{"id":"9001","properties":{},"createdAt":"2026-12-07T10:00:00Z"}"#).unwrap().case_id,
        "9001"
    );
}

#[test]
fn servicenow_refuses_what_an_encoded_query_cannot_hold() {
    let m = profile("servicenow");
    assert!(m.uses_token() && m.can_find_cases());
    let req = m.lookup("https://x.service-now.com", "+13175550123", "c-1", Some("t")).unwrap();
    assert_eq!(
        req.url,
        "https://x.service-now.com/api/now/table/customer_contact?sysparm_fields=sys_id%2Cu_tier&sysparm_limit=1\
         &sysparm_query=phone%3D%2B13175550123"
    );
    assert!(matches!(m.lookup("", "+1^NQphoneISNOTEMPTY", "c", None), Err(RenderError::Unescapable { .. })));
    let answer = br#"{"result":[{"sys_id":"6816f79cc0a8016401c5a33be04be441","u_tier":"gold"}]}"#;
    assert!(matches!(m.read_customer(answer, "standard"), LookupAnswer::Found(r) if r.tier == "gold"));
    assert_eq!(m.read_customer(br#"{"result":[]}"#, "standard"), LookupAnswer::NotFound);
    let created =
        br#"{"result":{"sys_id":"a1","number":"INC0010001","state":"1","sys_created_on":"2026-12-07 10:00:00"}}"#;
    assert_eq!(m.read_created_case(created).unwrap().case_id, "INC0010001");
    let req = m.token_request("https://x.service-now.com").unwrap();
    assert_eq!(req.url, "https://x.service-now.com/oauth_token.do");
    assert_eq!(
        m.read_token(br#"{"access_token":"t","expires_in":1799,"token_type":"Bearer"}"#, 0).unwrap().expires_at_s,
        1_799
    );
}

fn listed(m: &Mapping, base: &str, body: &[u8]) -> ListedPage {
    m.read_list(base, body).unwrap_or_else(|e| panic!("{e:?}"))
}

#[test]
fn the_generic_list_pages_by_cursor() {
    let m = profile("generic");
    assert!(m.has_list());
    let first = m.list_customers("http://crm", None, 500, ListPage::First, None).unwrap().unwrap();
    assert_eq!(first.url, "http://crm/customers?limit=500&updatedSince=1970-01-01T00%3A00%3A00.000Z", "no cursor yet");
    let next = m.list_customers("http://crm", Some(1_796_601_600_000), 500, ListPage::Cursor("ab+c"), None).unwrap();
    assert_eq!(
        next.unwrap().url,
        "http://crm/customers?cursor=ab%2Bc&limit=500&updatedSince=2026-12-07T00%3A00%3A00.000Z"
    );
    let body = br#"{"customers":[{"phone":"+15550000001","customerId":"C-1","tier":"vip","updatedAt":"2026-01-01T00:00:00Z","deleted":false},7,{"phone":"+15550000002","deleted":true}],"nextCursor":"abc"}"#;
    let page = listed(&m, "http://crm", body);
    assert_eq!(page.unreadable, [1], "a record that is not an object");
    assert_eq!(page.customers.len(), 2);
    let odd = listed(&m, "http://crm", br#"{"customers":[{"customerId":"NO-PHONE"},{"phone":"+1","deleted":"yes"}]}"#);
    assert_eq!(
        (odd.customers.len(), odd.unreadable.clone()),
        (1, alloc::vec![1]),
        "a missing phone is the sync's to name"
    );
    assert_eq!(page.customers[0].1.customer_id.as_deref(), Some("C-1"));
    assert!(page.customers[1].1.deleted);
    assert_eq!(page.next, Some(NextPage::Cursor("abc".into())));
    assert_eq!(listed(&m, "http://crm", br#"{"customers":[],"nextCursor":null}"#).next, None);
    assert_eq!(m.read_list("http://crm", br#"{"customers":5}"#), Err(NotAList::Shape));
}

#[test]
fn salesforce_lists_by_soql_and_follows_only_its_own_next_records_url() {
    let m = profile("salesforce");
    let base = "https://x.my.salesforce.com";
    let first = m.list_customers(base, Some(1_796_601_600_000), 500, ListPage::First, Some("t")).unwrap().unwrap();
    assert!(first.url.contains("LastModifiedDate%20%3E%3D%202026-12-07T00%3A00%3A00Z%20AND"), "{}", first.url);
    let body = br#"{"totalSize":3,"done":false,"nextRecordsUrl":"/services/data/v60.0/query/01gD-2000","records":[{"attributes":{"type":"Contact"},"Id":"003A","Phone":"+13175550123","Tier__c":"gold","LastModifiedDate":"2026-12-07T10:00:00.000+0000"}]}"#;
    let page = listed(&m, base, body);
    assert_eq!(page.customers[0].1.phone.as_deref(), Some("+13175550123"));
    assert_eq!(page.next, Some(NextPage::Url("/services/data/v60.0/query/01gD-2000".into())));
    let next = m.list_customers(base, None, 500, ListPage::Url("/services/data/v60.0/query/01gD-2000"), Some("t"));
    let next = next.unwrap().unwrap();
    assert_eq!(next.url, "https://x.my.salesforce.com/services/data/v60.0/query/01gD-2000");
    assert_eq!(header(&next, "authorization"), Some("Bearer t"));
    let foreign = br#"{"done":false,"nextRecordsUrl":"https://evil.example/steal","records":[]}"#;
    assert_eq!(m.read_list(base, foreign), Err(NotAList::ForeignNextPage), "credentials never leave the CRM");
    assert!(m.list_customers(base, None, 500, ListPage::Url("https://evil.example/x"), Some("t")).unwrap().is_err());
}

#[test]
fn zendesk_lists_the_incremental_export_until_the_end_of_the_stream() {
    let m = profile("zendesk");
    let base = "https://acme.zendesk.com";
    let first = m.list_customers(base, Some(1_796_601_600_000), 100, ListPage::First, None).unwrap().unwrap();
    assert_eq!(
        first.url,
        "https://acme.zendesk.com/api/v2/incremental/users/cursor.json?per_page=100&start_time=1796601600"
    );
    let more = br#"{"users":[{"id":1,"phone":"+13175550123","external_id":"C-1","user_fields":{"tier":"vip"},"active":true},{"id":2,"phone":"+13175550124","active":false}],"after_url":"https://acme.zendesk.com/api/v2/incremental/users/cursor.json?cursor=MTU3","end_of_stream":false}"#;
    let page = listed(&m, base, more);
    assert!(!page.customers[0].1.deleted && page.customers[1].1.deleted, "an inactive user is removed");
    assert!(matches!(page.next, Some(NextPage::Url(ref u)) if u.ends_with("cursor=MTU3")));
    let last = br#"{"users":[],"after_url":"https://acme.zendesk.com/api/v2/incremental/users/cursor.json?cursor=MTU4","end_of_stream":true}"#;
    assert_eq!(listed(&m, base, last).next, None, "the end of the stream, whatever after_url says");
}

#[test]
fn hubspot_lists_by_search_with_its_after_cursor() {
    let m = profile("hubspot");
    let first = m.list_customers("https://api.hubapi.com", None, 100, ListPage::First, None).unwrap().unwrap();
    let body: Value = serde_json::from_slice(&first.body.unwrap()).unwrap();
    assert_eq!(body["filterGroups"][0]["filters"][0]["value"], "0", "a full pass: everything since the epoch");
    assert!(body.get("after").is_none(), "no cursor on the first page: {body}");
    let next = m.list_customers("https://api.hubapi.com", Some(5), 100, ListPage::Cursor("200"), None).unwrap();
    let body: Value = serde_json::from_slice(&next.unwrap().body.unwrap()).unwrap();
    assert_eq!(
        (body["after"].as_str(), body["filterGroups"][0]["filters"][0]["value"].as_str()),
        (Some("200"), Some("5"))
    );
    let answer = br#"{"total":2,"results":[{"id":"51","properties":{"phone":"+13175550123","failsoft_tier":"gold"},"updatedAt":"2026-12-07T10:00:00Z"}],"paging":{"next":{"after":"200"}}}"#;
    let page = listed(&m, "https://api.hubapi.com", answer);
    assert_eq!(page.customers[0].1.tier.as_deref(), Some("gold"));
    assert_eq!(page.next, Some(NextPage::Cursor("200".into())));
    assert!(!profile("servicenow").has_list(), "the Table API pages by a Link header: export instead");
}
