//! failsoft's origin: the queue worker (`failsoft worker`), its operator
//! tools (`failsoft init-local`, `failsoft dlq …`) and the local stack
//! (starting failsoft's processes on loopback for the demo, the drill and
//! the end-to-end tests).

pub mod alerts;
pub mod aws;
pub mod batch_write;
pub mod clock;
pub mod config;
pub mod consumer;
pub mod crm;
pub mod dashboard;
pub mod dead_letter;
pub mod delivery;
pub mod demo;
pub mod dlq_cli;
pub mod drill;
pub mod edge_push;
pub mod edge_stats;
pub mod emf;
pub mod event_delivery;
pub mod event_sink;
pub mod events;
pub mod events_api;
pub mod failures;
pub mod init_local;
pub mod leases;
pub mod local_stack;
pub mod moto;
pub mod notifications;
pub mod received;
pub mod results;
pub mod results_api;
pub mod stack;
pub mod telemetry;
pub mod worker;
pub mod write_once;
