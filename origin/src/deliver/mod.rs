//! Delivering one message: a case creation exactly once, a Genesys event to
//! its endpoint, a lookup refresh whose record goes back to the edge.

pub mod crm;
pub mod delivery;
pub mod edge_push;
pub mod event;
pub mod event_sink;
pub mod outbox_drain;
pub mod ports;
pub mod write_once;
