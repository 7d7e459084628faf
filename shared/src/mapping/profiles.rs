//! The shipped profiles (`deploy/crm/*.toml`), built into every host so
//! `FAILSOFT_CRM_PROFILE=salesforce` needs no file on a Worker or in Spin.

/// The default: failsoft's own contract.
pub const GENERIC: &str = include_str!("../../../deploy/crm/generic.toml");
/// The generic contract's optional case search, as an operation table
/// (added by `FAILSOFT_CRM_CAN_FIND_CASES=true`).
pub const GENERIC_FIND_CASE: &str = include_str!("../../../deploy/crm/generic-find-case.toml");

/// Every shipped profile by name.
pub const PROFILES: &[(&str, &str)] = &[
    ("generic", GENERIC),
    ("salesforce", include_str!("../../../deploy/crm/salesforce.toml")),
    ("zendesk", include_str!("../../../deploy/crm/zendesk.toml")),
    ("hubspot", include_str!("../../../deploy/crm/hubspot.toml")),
    ("servicenow", include_str!("../../../deploy/crm/servicenow.toml")),
];

/// The text of the shipped profile `name`.
pub fn text(name: &str) -> Option<&'static str> {
    PROFILES.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
}
