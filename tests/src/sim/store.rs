//! The CRM's records: customers by phone number, and the ledger of cases.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

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
    /// When the record last changed (ms since the epoch), set by the store;
    /// the paged list orders and filters by it.
    #[serde(default, skip_serializing)]
    pub updated_at_ms: u64,
}

/// A position in the paged list: the last (change time, phone) handed out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListPosition(pub u64, pub String);

/// One customer as the paged list shows it: a record, or a removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub phone: String,
    pub customer: Option<Customer>,
    pub updated_at_ms: u64,
}

/// One page of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub customers: Vec<Listed>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<ListPosition>,
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
    /// Removed customers (deleted or opted out), by phone: when.
    removed: HashMap<String, u64>,
    /// Every customer and removal by (change time, phone): the list's order.
    changes: BTreeSet<ListPosition>,
    cases: Vec<Case>,
    /// First case created under each key (its ledger index).
    by_key: HashMap<String, usize>,
    idempotency: IdempotencyPolicy,
    /// Every event delivery taken, duplicates included (when keys are ignored).
    events: Vec<EventDelivery>,
    event_keys: std::collections::HashSet<String>,
}

impl Store {
    /// Inserts or replaces customers by phone, changed at `now_ms`;
    /// returns how many were given.
    pub fn upsert_customers(&mut self, customers: Vec<Customer>, now_ms: u64) -> usize {
        let count = customers.len();
        for mut customer in customers {
            self.unindex(&customer.phone);
            self.removed.remove(&customer.phone);
            customer.updated_at_ms = now_ms;
            self.changes.insert(ListPosition(now_ms, customer.phone.clone()));
            self.customers.insert(customer.phone.clone(), customer);
        }
        count
    }

    /// Removes customers (deleted, or opted out) at `now_ms`: the list shows
    /// each as `deleted: true` from then on. Returns how many were known.
    pub fn remove_customers(&mut self, phones: &[String], now_ms: u64) -> usize {
        let mut known = 0;
        for phone in phones {
            if self.customers.contains_key(phone) {
                known += 1;
                self.unindex(phone);
                self.customers.remove(phone);
                self.removed.insert(phone.clone(), now_ms);
                self.changes.insert(ListPosition(now_ms, phone.clone()));
            }
        }
        known
    }

    /// Drops a phone's place in the list (it is about to get a new one).
    fn unindex(&mut self, phone: &str) {
        let at = self.customers.get(phone).map(|c| c.updated_at_ms).or_else(|| self.removed.get(phone).copied());
        if let Some(at) = at {
            self.changes.remove(&ListPosition(at, phone.to_owned()));
        }
    }

    /// Up to `limit` customers and removals changed at or after
    /// `since_ms`, in change order, after `after` when given.
    pub fn list(&self, since_ms: u64, after: Option<&ListPosition>, limit: usize) -> Page {
        let start = match after {
            Some(position) => Bound::Excluded(position.clone()),
            None => Bound::Included(ListPosition(since_ms, String::new())),
        };
        let mut range = self.changes.range((start, Bound::Unbounded)).filter(|p| p.0 >= since_ms);
        let customers: Vec<Listed> = range
            .by_ref()
            .take(limit)
            .map(|ListPosition(at, phone)| Listed {
                phone: phone.clone(),
                customer: self.customers.get(phone).cloned(),
                updated_at_ms: *at,
            })
            .collect();
        let more = range.next().is_some();
        let next = customers.last().filter(|_| more).map(|last| ListPosition(last.updated_at_ms, last.phone.clone()));
        Page { customers, next }
    }

    pub fn customer(&self, phone: &str) -> Option<&Customer> {
        self.customers.get(phone)
    }

    /// Every customer, in the paged list's order (by last change).
    pub fn customers(&self) -> impl Iterator<Item = &Customer> {
        self.changes.iter().filter_map(|ListPosition(_, phone)| self.customers.get(phone))
    }

    /// Sets a customer's tier; `None` for an unknown phone.
    pub fn set_tier(&mut self, phone: &str, tier: &str) -> Option<TierChange> {
        let customer = self.customers.get(phone)?.clone();
        let change = TierChange { customer_id: customer.customer_id.clone(), old_tier: customer.tier.clone() };
        let now_ms = customer.updated_at_ms.max(super::clock::unix_ms());
        self.upsert_customers(vec![Customer { tier: tier.to_owned(), ..customer }], now_ms);
        Some(change)
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
        if let Some(earlier) = key.as_deref().and_then(|k| self.case_for_key(k)) {
            return Ok(CaseCreation::Replayed(earlier.clone()));
        }
        let external_ref = body.get("externalRef").and_then(Value::as_str).map(str::to_owned);
        self.append_case(key, body, external_ref, |index| format!("CASE-{:06}", index + 1), now_ms)
            .map(CaseCreation::Created)
    }

    /// The first case created under `key` while keys are honoured (none
    /// while they are ignored).
    pub fn case_for_key(&self, key: &str) -> Option<&Case> {
        if self.idempotency != IdempotencyPolicy::Honour {
            return None;
        }
        self.by_key.get(key).and_then(|&i| self.cases.get(i))
    }

    /// Forgets which case `key` created (a CRM whose keys expire), so the
    /// next case created under it is the one the key names.
    pub fn forget_key(&mut self, key: &str) {
        self.by_key.remove(key);
    }

    /// Appends a case whatever its key: `external_ref` is what
    /// [`Self::cases_with_ref`] finds it by, and `id_of` names it from its
    /// ledger index (0 for the first). A key not seen before names it.
    pub fn append_case(
        &mut self,
        key: Option<String>,
        body: Map<String, Value>,
        external_ref: Option<String>,
        id_of: impl FnOnce(usize) -> String,
        now_ms: u64,
    ) -> Result<Case, LedgerFull> {
        if self.cases.len() >= MAX_CASES {
            return Err(LedgerFull);
        }
        let index = self.cases.len();
        if let Some(key) = &key {
            self.by_key.entry(key.clone()).or_insert(index);
        }
        let case = Case { case_id: id_of(index), idempotency_key: key, external_ref, body, created_at: now_ms };
        self.cases.push(case.clone());
        Ok(case)
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

    fn customer(phone: &str) -> Customer {
        serde_json::from_value(json!({"phone": phone, "customerId": format!("C{phone}")})).expect("valid")
    }

    #[test]
    fn the_list_pages_in_change_order_and_shows_removals() {
        let mut store = Store::default();
        store.upsert_customers(vec![customer("+3"), customer("+1"), customer("+2")], 10);
        store.upsert_customers(vec![customer("+4")], 20);
        let first = store.list(0, None, 2);
        let phones = |page: &Page| page.customers.iter().map(|c| c.phone.clone()).collect::<Vec<_>>();
        assert_eq!(phones(&first), ["+1", "+2"]);
        let second = store.list(0, first.next.as_ref(), 2);
        assert_eq!(phones(&second), ["+3", "+4"]);
        assert_eq!(second.next, None, "the last page");
        assert_eq!(phones(&store.list(20, None, 10)), ["+4"], "changed at or after");

        assert_eq!(store.remove_customers(&["+1".to_owned(), "+9".to_owned()], 30), 1);
        store.upsert_customers(vec![customer("+2")], 31);
        let changed = store.list(30, None, 10);
        assert_eq!(phones(&changed), ["+1", "+2"]);
        assert!(changed.customers[0].customer.is_none(), "a removal");
        assert_eq!(changed.customers[1].customer.as_ref().map(|c| c.updated_at_ms), Some(31));
        assert_eq!(store.list(0, None, 100).customers.len(), 4, "each phone listed once");
        assert_eq!(store.customer("+1"), None);
    }

    #[test]
    fn tier_change_reports_the_old_tier() {
        let mut store = Store::default();
        let customer: Customer =
            serde_json::from_value(json!({"phone": "+1", "customerId": "C-1", "tier": "vip"})).expect("valid");
        store.upsert_customers(vec![customer], 1);
        assert_eq!(
            store.set_tier("+1", "standard"),
            Some(TierChange { customer_id: "C-1".into(), old_tier: "vip".into() })
        );
        assert_eq!(store.customer("+1").map(|c| c.tier.as_str()), Some("standard"));
        assert_eq!(store.set_tier("+2", "gold"), None);
    }
}
