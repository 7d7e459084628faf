//! The shipped profiles (`deploy/crm/*.toml`), built into every host as
//! JSON (`build.rs`), so `FAILSOFT_CRM_PROFILE=salesforce` needs no file
//! and no TOML parser on a Worker or in Spin.

include!(concat!(env!("OUT_DIR"), "/profiles.rs"));

/// The default: failsoft's own contract.
pub const GENERIC: &str = GENERIC_JSON;
/// The generic contract's optional case search, as an operation table
/// (added by `FAILSOFT_CRM_CAN_FIND_CASES=true`).
pub const GENERIC_FIND_CASE: &str = GENERIC_FIND_CASE_JSON;

/// Every shipped profile by name.
pub const PROFILES: &[(&str, &str)] = &[
    ("generic", GENERIC_JSON),
    ("salesforce", SALESFORCE_JSON),
    ("zendesk", ZENDESK_JSON),
    ("hubspot", HUBSPOT_JSON),
    ("servicenow", SERVICENOW_JSON),
];

/// The text of the shipped profile `name` (JSON).
pub fn text(name: &str) -> Option<&'static str> {
    PROFILES.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
}
