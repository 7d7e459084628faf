//! failsoft's Data Action facade.
//!
//! [`facade::Facade`] is written once, against the small ports of
//! [`ports`]; each host (native here, Cloudflare Workers and Spin beside it)
//! supplies the ports and converts its own request type to
//! [`http::Request`]. Every resilience decision comes from
//! `failsoft-shared`; the facade only sequences them around the I/O.

pub mod asked;
pub mod coalesce;
pub mod config;
pub mod crm;
pub mod facade;
pub mod http;
pub mod kv_outbox;
pub mod outbox;
pub mod ports;
pub mod sqs;
pub mod wire;

#[cfg(feature = "native")]
pub mod native;
