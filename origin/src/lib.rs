//! failsoft's origin: the operator tool and, with the origin issue, the
//! queue worker. This crate also owns the local stack: starting failsoft's
//! processes on loopback for the demo, the drill and the end-to-end tests.

pub mod demo;
pub mod stack;
