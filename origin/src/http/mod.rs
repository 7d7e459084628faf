//! The origin's HTTP surface: the results API, `POST /v1/events`, the
//! edge's traffic reports on one listener; health, metrics and the
//! dashboard on the operator's; both served within [`serve::Limits`].

pub mod api;
pub mod dashboard;
pub mod edge_stats;
pub mod events;
pub mod serve;
