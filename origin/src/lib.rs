//! failsoft's origin worker: what runs in production and nothing else
//! (the local stack, the drill and the demo are the lab, `tests/lab`).
//!
//! - [`queue`]: receiving from the FIFO work queue, leases, failure counts;
//! - [`deliver`]: one message to the CRM or the events endpoint, exactly
//!   once, and refreshed records back to the edge;
//! - [`store`]: the DynamoDB results and last-known tables;
//! - [`http`]: the results API, `POST /v1/events`, the edge's traffic
//!   reports, health, metrics and the dashboard;
//! - [`dead_letter`]: the DLQ, its operator tool and the alerts;
//! - [`notifications`]: the Genesys Cloud Notification Service consumer;
//! - [`sync`]: the last-known store pre-warmed from the CRM's customer list;
//! - settings ([`config`]), telemetry, and the [`worker`] that wires it up.
//!
//! The design and the invariants each part keeps: `docs/design.md`.
#![forbid(unsafe_code)]

pub mod access;
pub mod aws;
pub mod clock;
pub mod config;
pub mod crm_check;
pub mod dead_letter;
pub mod deliver;
pub mod emf;
pub mod genesys_events;
pub mod http;
pub mod notifications;
pub mod queue;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod worker;
