//! The downstream contract's remains at the edge: what the edge records for
//! a number the CRM does not know. How calls are made and answers read is
//! the CRM's mapping (`failsoft_shared::mapping`, `deploy/crm/`).

use failsoft_shared::cache::CustomerRecord;

/// The header that carries the Data Action's correlationId to the CRM, so
/// one id follows a call from Genesys through the queue to the CRM's logs.
pub const CORRELATION_HEADER: &str = failsoft_shared::mapping::CORRELATION_HEADER;

/// The record cached for a number the CRM does not know.
pub fn not_found_record(default_tier: &str) -> CustomerRecord {
    CustomerRecord {
        found: false,
        customer_id: crate::wire::UNKNOWN_CUSTOMER.to_owned(),
        tier: default_tier.to_owned(),
    }
}
