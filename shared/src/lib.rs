//! failsoft's policy core.
//!
//! Every resilience decision of the edge and the origin lives here as a plain
//! function or a small state machine. Nothing in this crate performs I/O or
//! reads a clock: callers pass `now` (milliseconds since the Unix epoch) and a
//! random source in, so the same code runs in a Worker isolate, a Spin
//! component, a container and a microcontroller-sized `no_std` target, and
//! every decision is testable without waiting.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod backoff;
pub mod breaker;
pub mod cache;
pub mod case;
pub mod config;
pub mod edge_stats;
pub mod envelope;
pub mod error_class;
pub mod health;
pub mod hex;
pub mod keys;
pub mod ladder;
pub mod mapping;
pub mod queue_fit;
pub mod rate_limit;
pub mod replay;
pub mod retry;
pub mod signature;
pub mod sqs_refusal;
pub mod sync;
