//! failsoft's facade as a Cloudflare Worker (`wasm32-unknown-unknown`,
//! built by `make worker` with worker-build; `wrangler.toml` names the
//! bindings).
//!
//! The adapter only supplies the core's ports and converts requests
//! (`handler.rs`): the Workers KV binding (`kv.rs`), `fetch` with a deadline
//! (`downstream.rs`), `Date.now()` and `crypto.getRandomValues`
//! (`clock.rs`), and SQS over the same `fetch` (the core's
//! `failsoft_edge::sqs::SqsOr`, with no queue when `FAILSOFT_QUEUE_URL` is
//! unset), with a Durable Object outbox for writes (`outbox.rs`).
//! Everything else is the core's.
//!
//! A Worker has no start-up: the settings are read and validated on the
//! first request an isolate serves, and the facade is kept for the
//! isolate's lifetime (isolates serve many requests, interleaved).
//!
//! Only [`pacing`] (KV's one-write-per-second rule) and [`memo`] (the
//! isolate's memory of KV reads), pure logic, build on the host, where
//! their tests run; the rest is `wasm32-unknown-unknown` only.

pub mod memo;
pub mod pacing;

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod clock;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod downstream;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod handler;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod kv;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod log;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod outbox;

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub use self::{
    clock::JsClock,
    downstream::FetchDownstream,
    handler::WorkerFacade,
    kv::WorkersKv,
    outbox::{WorkerForwarder, WriteOutbox},
};
