//! The origin's HTTP surface: the results API, `POST /v1/events`, the
//! edge's traffic reports, health, metrics and the dashboard.

pub mod api;
pub mod dashboard;
pub mod edge_stats;
pub mod events;
