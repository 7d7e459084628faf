//! The pre-warm sync: what one customer of the CRM's list (or an export
//! file) must hold to be stored, and the body of the edge's signed bulk
//! cache route, `POST /v1/internal/cache`, with the rule every host applies
//! to each of its entries: an older record never replaces a newer one.
//!
//! Parsing `updatedAt` (RFC 3339) is the origin's; here a record's stamp is
//! already milliseconds.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::cache::{CacheEntry, CustomerRecord};
use crate::keys::{Phone, normalize_phone};

/// Path of the bulk route on every edge host.
pub const BULK_PATH: &str = "/v1/internal/cache";

/// The edge's route that sends on what its write outbox holds (signed
/// POST, empty body): the origin calls it on a schedule
/// (`FAILSOFT_EDGE_OUTBOX_DRAIN_SECS`), so a Spin edge's outbox, drained
/// otherwise only after later requests, drains while the edge is idle.
pub const OUTBOX_DRAIN_PATH: &str = "/v1/internal/outbox/drain";
/// Most entries one bulk request may carry. A Workers invocation may make
/// 1,000 KV operations; each entry costs a read and a write (or delete),
/// so 100 entries leave room for everything else the request does.
pub const BULK_MAX_ENTRIES: usize = 100;
/// Longest customer id and tier a synced record may carry (a Data Action
/// answer routes on them; anything longer is not a CRM's id).
pub const MAX_ID_BYTES: usize = 128;
pub const MAX_TIER_BYTES: usize = 64;

/// One customer as the CRM's paged list gives it; every field optional so
/// a record missing one is counted and skipped, not a failed page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedCustomer {
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub deleted: bool,
}

/// A listed customer checked: a record to store, or a removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    Store { phone: Phone, record: CustomerRecord },
    Remove { phone: Phone },
}

/// Why a listed customer was skipped (counted by code; never the number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    MissingPhone,
    InvalidPhone,
    MissingCustomerId,
    FieldTooLong,
}

impl Skipped {
    pub fn code(self) -> &'static str {
        match self {
            Self::MissingPhone => "MISSING_PHONE",
            Self::InvalidPhone => "INVALID_PHONE",
            Self::MissingCustomerId => "MISSING_CUSTOMER_ID",
            Self::FieldTooLong => "FIELD_TOO_LONG",
        }
    }
}

/// Checks one listed customer. A removal needs only its phone; a record
/// needs a customer id, and takes `default_tier` when it has none.
pub fn check(listed: ListedCustomer, default_tier: &str) -> Result<Synced, Skipped> {
    let raw = listed.phone.filter(|p| !p.trim().is_empty()).ok_or(Skipped::MissingPhone)?;
    let phone = normalize_phone(&raw).map_err(|_| Skipped::InvalidPhone)?;
    if listed.deleted {
        return Ok(Synced::Remove { phone });
    }
    let customer_id = listed.customer_id.filter(|id| !id.is_empty()).ok_or(Skipped::MissingCustomerId)?;
    let tier = listed.tier.filter(|t| !t.is_empty()).unwrap_or_else(|| default_tier.into());
    if customer_id.len() > MAX_ID_BYTES || tier.len() > MAX_TIER_BYTES {
        return Err(Skipped::FieldTooLong);
    }
    Ok(Synced::Store { phone, record: CustomerRecord { found: true, customer_id, tier } })
}

/// The body of `POST /v1/internal/cache`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkPush {
    pub entries: Vec<BulkEntry>,
}

/// One key's change: a record to keep, or its removal as of a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkEntry {
    /// The entity key (64 hex characters): the HMAC of the number.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<CacheEntry>,
    /// The customer is gone as of this time (milliseconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at_ms: Option<u64>,
}

/// What a host does with one bulk entry, given what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    /// Store the entry (nothing held, or what is held is older).
    Store,
    /// Delete the held record (it is not newer than the removal).
    Delete,
    /// Leave what is held: it is newer, or there is nothing to remove.
    Keep,
}

/// Why a bulk entry is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadEntry {
    Key,
    /// Neither or both of `entry` and `removedAtMs`.
    Shape,
}

impl BulkEntry {
    /// Checks the entry's key and shape.
    pub fn validate(&self) -> Result<(), BadEntry> {
        if !crate::keys::is_entity_key(&self.key) {
            return Err(BadEntry::Key);
        }
        match (&self.entry, self.removed_at_ms) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err(BadEntry::Shape),
        }
    }

    /// The action for this entry against `held`: the record's stamp
    /// (`fetchedAtMs`, when the CRM was read) decides, and a tie keeps
    /// what is held (a repeat of the same push changes nothing).
    pub fn action(&self, held: Option<&CacheEntry>) -> BulkAction {
        match (&self.entry, self.removed_at_ms, held) {
            (Some(_), _, None) => BulkAction::Store,
            (Some(new), _, Some(held)) if new.fetched_at_ms > held.fetched_at_ms => BulkAction::Store,
            (None, Some(at), Some(held)) if held.fetched_at_ms <= at => BulkAction::Delete,
            _ => BulkAction::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::borrow::ToOwned;

    fn listed(phone: Option<&str>, id: Option<&str>, deleted: bool) -> ListedCustomer {
        ListedCustomer {
            phone: phone.map(str::to_owned),
            customer_id: id.map(str::to_owned),
            tier: Some("gold".into()),
            updated_at: None,
            deleted,
        }
    }

    fn held(at: u64) -> CacheEntry {
        CacheEntry {
            record: CustomerRecord { found: true, customer_id: "C-1".into(), tier: "gold".into() },
            fetched_at_ms: at,
        }
    }

    #[test]
    fn a_record_needs_a_valid_phone_and_an_id() {
        let ok = check(listed(Some("+1 (317) 555-0100"), Some("C-1"), false), "standard").unwrap();
        let Synced::Store { phone, record } = ok else { panic!("a record") };
        assert_eq!(phone.as_str(), "+13175550100");
        assert_eq!(record, CustomerRecord { found: true, customer_id: "C-1".into(), tier: "gold".into() });
        assert_eq!(check(listed(None, Some("C-1"), false), "s"), Err(Skipped::MissingPhone));
        assert_eq!(check(listed(Some("  "), Some("C-1"), false), "s"), Err(Skipped::MissingPhone));
        assert_eq!(check(listed(Some("12ab"), Some("C-1"), false), "s"), Err(Skipped::InvalidPhone));
        assert_eq!(check(listed(Some("+13175550100"), None, false), "s"), Err(Skipped::MissingCustomerId));
        let long = "x".repeat(MAX_ID_BYTES + 1);
        assert_eq!(check(listed(Some("+13175550100"), Some(&long), false), "s"), Err(Skipped::FieldTooLong));
    }

    #[test]
    fn a_removal_needs_only_its_phone_and_a_missing_tier_is_the_default() {
        let removal = check(listed(Some("+13175550100"), None, true), "s").unwrap();
        assert!(matches!(removal, Synced::Remove { .. }));
        let mut no_tier = listed(Some("+13175550100"), Some("C-9"), false);
        no_tier.tier = None;
        let Ok(Synced::Store { record, .. }) = check(no_tier, "standard") else { panic!("a record") };
        assert_eq!(record.tier, "standard");
    }

    #[test]
    fn an_older_record_never_replaces_a_newer_one() {
        let key = "a".repeat(64);
        let push = BulkEntry { key: key.clone(), entry: Some(held(100)), removed_at_ms: None };
        assert_eq!(push.action(None), BulkAction::Store);
        assert_eq!(push.action(Some(&held(99))), BulkAction::Store);
        assert_eq!(push.action(Some(&held(100))), BulkAction::Keep, "a repeat changes nothing");
        assert_eq!(push.action(Some(&held(101))), BulkAction::Keep);
        let removal = BulkEntry { key, entry: None, removed_at_ms: Some(100) };
        assert_eq!(removal.action(Some(&held(100))), BulkAction::Delete);
        assert_eq!(removal.action(Some(&held(101))), BulkAction::Keep, "read after the removal");
        assert_eq!(removal.action(None), BulkAction::Keep);
    }

    #[test]
    fn entries_are_checked_for_key_and_shape() {
        let ok = BulkEntry { key: "0f".repeat(32), entry: Some(held(1)), removed_at_ms: None };
        assert_eq!(ok.validate(), Ok(()));
        let short = BulkEntry { key: "0f".into(), ..ok.clone() };
        assert_eq!(short.validate(), Err(BadEntry::Key));
        let upper = BulkEntry { key: "0F".repeat(32), ..ok.clone() };
        assert_eq!(upper.validate(), Err(BadEntry::Key), "no lookup reads an upper-case key");
        let both = BulkEntry { removed_at_ms: Some(1), ..ok.clone() };
        assert_eq!(both.validate(), Err(BadEntry::Shape));
        let neither = BulkEntry { entry: None, ..ok };
        assert_eq!(neither.validate(), Err(BadEntry::Shape));
    }

    #[test]
    fn the_body_is_camel_case_and_refuses_unknown_fields() {
        let body =
            BulkPush { entries: alloc::vec![BulkEntry { key: "k".into(), entry: None, removed_at_ms: Some(5) }] };
        assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"entries":[{"key":"k","removedAtMs":5}]}"#);
        assert!(serde_json::from_str::<BulkPush>(r#"{"entries":[],"x":1}"#).is_err());
    }
}
