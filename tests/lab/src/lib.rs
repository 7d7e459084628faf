//! failsoft's lab: everything that runs failsoft on one machine and never
//! ships. The local stack (`failsoft-lab up` / `down`), moto's server with
//! its FIFO fixes, the outage drill and the demo, and the one way every test
//! starts, waits for and stops a process ([`process::Service`]).
//!
//! The production worker is `failsoft-origin`; this crate only drives it.
//! The container image builds `--bin failsoft` from `origin/` and contains
//! none of this (docs/design.md, "Architecture").

pub mod aws_stack;
pub mod demo;
pub mod drill;
pub mod init_local;
pub mod local_stack;
pub mod moto;
pub mod process;
pub mod switch;
