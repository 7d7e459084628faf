//! The native host: the facade on axum + tokio + reqwest, for tests,
//! benchmarks and container-only deployments.

mod downstream;
mod forwarder;
pub mod kv;
pub mod outbox;
mod queue;
mod server;

pub use downstream::ReqwestDownstream;
pub use forwarder::{NativeForwarder, WithoutSqs};
pub use kv::MemoryKv;
pub use outbox::NativeOutbox;
pub use queue::LocalQueue;
pub use server::{NativeFacade, SystemClock, router, serve, spawn_stats_reporter};
