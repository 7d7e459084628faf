//! The CRM's records: customers by phone number, and the ledger of cases.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Most cases the ledger holds. A drill creates thousands; this bound only
/// stops a runaway client from exhausting memory (the API answers 507).
pub const MAX_CASES: usize = 1_000_000;

/// A customer as `GET /customers` returns it and `POST /admin/customers`
/// loads it (everything but `phone` and `customerId` has a default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    pub customer_id: String,
    /// E.164, stored exactly as loaded.
    pub phone: String,
    #[serde(default = "default_tier")]
    pub tier: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub vip_flag: bool,
    #[serde(default = "default_status")]
    pub status: String,
}

fn default_tier() -> String {
    "standard".to_owned()
}

fn default_status() -> String {
    "active".to_owned()
}

/// Whether `Idempotency-Key` is honoured. Ignoring it models a CRM that
/// creates a duplicate for every retry, which the origin must survive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdempotencyPolicy {
    #[default]
    #[serde(alias = "honor")]
    Honour,
    Ignore,
}

/// One created case, as the admin ledger lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Case {
    pub case_id: String,
    pub idempotency_key: Option<String>,
    /// The body's `externalRef` when it is a string.
    pub external_ref: Option<String>,
    pub body: Map<String, Value>,
    pub created_at: u64,
}

impl Case {
    /// The API's view of the case: the body's fields with the CRM's own
    /// (`caseId`, `idempotencyKey`, `createdAt`) written over them.
    pub fn response(&self) -> Value {
        let mut out = self.body.clone();
        out.insert("caseId".to_owned(), Value::from(self.case_id.clone()));
        out.insert("idempotencyKey".to_owned(), self.idempotency_key.clone().map_or(Value::Null, Value::from));
        out.insert("createdAt".to_owned(), Value::from(self.created_at));
        Value::Object(out)
    }
}

/// One event `POST /events` took, as the admin events ledger lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventDelivery {
    pub idempotency_key: Option<String>,
    pub body: Value,
    pub delivered_at: u64,
}

/// What `POST /events` did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventReceipt {
    /// A new delivery, appended to the events ledger.
    Delivered,
    /// The key was seen before and is honoured: nothing appended.
    Replayed,
}

/// The result of a create.
#[derive(Debug, Clone)]
pub enum CaseCreation {
    /// A new case, appended to the ledger.
    Created(Case),
    /// The key was seen before and is honoured: the earlier case.
    Replayed(Case),
}

/// The ledger is at [`MAX_CASES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerFull;

/// What changed when a tier was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierChange {
    pub customer_id: String,
    pub old_tier: String,
}

/// All records. Cases are numbered by their position in the ledger.
#[derive(Debug, Default)]
pub struct Store {
    customers: HashMap<String, Customer>,
    cases: Vec<Case>,
    /// First case created under each key (its ledger index).
    by_key: HashMap<String, usize>,
    idempotency: IdempotencyPolicy,
    /// Every event delivery taken, duplicates included (when keys are ignored).
    events: Vec<EventDelivery>,
    event_keys: std::collections::HashSet<String>,
}

impl Store {
    /// Inserts or replaces customers by phone; returns how many were given.
    pub fn upsert_customers(&mut self, customers: Vec<Customer>) -> usize {
        let count = customers.len();
        for customer in customers {
            self.customers.insert(customer.phone.clone(), customer);
        }
        count
    }

    pub fn customer(&self, phone: &str) -> Option<&Customer> {
        self.customers.get(phone)
    }

    /// Sets a customer's tier; `None` for an unknown phone.
    pub fn set_tier(&mut self, phone: &str, tier: &str) -> Option<TierChange> {
        let customer = self.customers.get_mut(phone)?;
        let old_tier = std::mem::replace(&mut customer.tier, tier.to_owned());
        Some(TierChange { customer_id: customer.customer_id.clone(), old_tier })
    }

    pub fn idempotency(&self) -> IdempotencyPolicy {
        self.idempotency
    }

    pub fn set_idempotency(&mut self, policy: IdempotencyPolicy) {
        self.idempotency = policy;
    }

    /// Creates a case, or returns the earlier one for a key already seen
    /// while keys are honoured.
    pub fn create_case(
        &mut self,
        key: Option<String>,
        body: Map<String, Value>,
        now_ms: u64,
    ) -> Result<CaseCreation, LedgerFull> {
        let earlier = key
            .as_ref()
            .filter(|_| self.idempotency == IdempotencyPolicy::Honour)
            .and_then(|k| self.by_key.get(k))
            .and_then(|&i| self.cases.get(i));
        if let Some(earlier) = earlier {
            return Ok(CaseCreation::Replayed(earlier.clone()));
        }
        if self.cases.len() >= MAX_CASES {
            return Err(LedgerFull);
        }
        let index = self.cases.len();
        if let Some(key) = &key {
            self.by_key.entry(key.clone()).or_insert(index);
        }
        let case = Case {
            case_id: format!("CASE-{:06}", index + 1),
            idempotency_key: key,
            external_ref: body.get("externalRef").and_then(Value::as_str).map(str::to_owned),
            body,
            created_at: now_ms,
        };
        self.cases.push(case.clone());
        Ok(CaseCreation::Created(case))
    }

    /// Takes an event, or recognises its key while keys are honoured. The
    /// ledger is bounded like the cases' ([`MAX_CASES`]).
    pub fn receive_event(&mut self, key: Option<String>, body: Value, now_ms: u64) -> Result<EventReceipt, LedgerFull> {
        let honoured = self.idempotency == IdempotencyPolicy::Honour;
        if honoured && key.as_ref().is_some_and(|k| self.event_keys.contains(k)) {
            return Ok(EventReceipt::Replayed);
        }
        if self.events.len() >= MAX_CASES {
            return Err(LedgerFull);
        }
        if let Some(key) = &key {
            self.event_keys.insert(key.clone());
        }
        self.events.push(EventDelivery { idempotency_key: key, body, delivered_at: now_ms });
        Ok(EventReceipt::Delivered)
    }

    /// Every event delivery, in order, duplicates included.
    pub fn events(&self) -> &[EventDelivery] {
        &self.events
    }

    /// Every case whose body carried this `externalRef`, oldest first.
    pub fn cases_with_ref(&self, external_ref: &str) -> Vec<&Case> {
        self.cases.iter().filter(|case| case.external_ref.as_deref() == Some(external_ref)).collect()
    }

    /// Every create, in order, duplicates included.
    pub fn ledger(&self) -> &[Case] {
        &self.cases
    }

    /// Forgets everything and honours keys again.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn customer_defaults() {
        let customer: Customer =
            serde_json::from_value(json!({"phone": "+442071838750", "customerId": "C-1"})).expect("valid customer");
        assert_eq!(customer.tier, "standard");
        assert_eq!(customer.status, "active");
        assert_eq!(customer.name, "");
        assert!(!customer.vip_flag);
    }

    #[test]
    fn honoured_key_replays_the_same_case() {
        let mut store = Store::default();
        let first = store.create_case(Some("k1".into()), body(json!({"a": 1})), 10);
        let again = store.create_case(Some("k1".into()), body(json!({"a": 2})), 20);
        let (Ok(CaseCreation::Created(first)), Ok(CaseCreation::Replayed(again))) = (first, again) else {
            panic!("expected a create then a replay");
        };
        assert_eq!(first.case_id, "CASE-000001");
        assert_eq!(again.case_id, first.case_id);
        assert_eq!(store.ledger().len(), 1);
    }

    #[test]
    fn ignored_key_creates_duplicates() {
        let mut store = Store::default();
        store.set_idempotency(IdempotencyPolicy::Ignore);
        for _ in 0..3 {
            let created = store.create_case(Some("k1".into()), body(json!({"externalRef": "R1"})), 10);
            assert!(matches!(created, Ok(CaseCreation::Created(_))));
        }
        assert_eq!(store.ledger().len(), 3);
        assert_eq!(store.cases_with_ref("R1").len(), 3);
        assert_eq!(store.ledger()[2].case_id, "CASE-000003");
    }

    #[test]
    fn response_puts_crm_fields_over_the_body() {
        let mut store = Store::default();
        let Ok(CaseCreation::Created(case)) = store.create_case(None, body(json!({"caseId": "mine", "x": 1})), 5)
        else {
            panic!("expected a create");
        };
        assert_eq!(case.response(), json!({"caseId": "CASE-000001", "idempotencyKey": null, "createdAt": 5, "x": 1}));
    }

    #[test]
    fn events_are_delivered_once_per_honoured_key() {
        let mut store = Store::default();
        assert_eq!(store.receive_event(Some("e1".into()), json!({"id": "e1"}), 1), Ok(EventReceipt::Delivered));
        assert_eq!(store.receive_event(Some("e1".into()), json!({"id": "e1"}), 2), Ok(EventReceipt::Replayed));
        assert_eq!(store.events().len(), 1);
        store.set_idempotency(IdempotencyPolicy::Ignore);
        assert_eq!(store.receive_event(Some("e1".into()), json!({"id": "e1"}), 3), Ok(EventReceipt::Delivered));
        assert_eq!(store.events().len(), 2, "an ignored key delivers again");
    }

    #[test]
    fn tier_change_reports_the_old_tier() {
        let mut store = Store::default();
        let customer: Customer =
            serde_json::from_value(json!({"phone": "+1", "customerId": "C-1", "tier": "vip"})).expect("valid");
        store.upsert_customers(vec![customer]);
        assert_eq!(
            store.set_tier("+1", "standard"),
            Some(TierChange { customer_id: "C-1".into(), old_tier: "vip".into() })
        );
        assert_eq!(store.customer("+1").map(|c| c.tier.as_str()), Some("standard"));
        assert_eq!(store.set_tier("+2", "gold"), None);
    }
}
