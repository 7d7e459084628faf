//! Receiving from the FIFO work queue: the receive loop, the visibility
//! leases of every message held, and each message's failure count.

pub mod consumer;
pub mod failures;
pub mod leases;
pub mod received;
