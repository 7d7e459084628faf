//! failsoft's end-to-end test support. The tests in `tests/tests/` start
//! the CRM simulator (`crm-sim`, `src/bin/crm-sim.rs`) and the native
//! facade (`failsoft-edge`) as real processes on loopback through
//! [`harness::Stack`], and drive them over HTTP.

pub mod cases;
pub mod corpus;
pub mod edge_traffic;
pub mod harness;
pub mod moto;
pub mod signing;

pub use harness::{AUTH_TOKEN, Reply, Stack, WEBHOOK_SECRET, assert_error, metric_sum, metric_value, wait_until};
