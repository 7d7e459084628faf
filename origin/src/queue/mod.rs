//! Receiving from the FIFO work queue: the start-up check of its
//! attributes, the receive loop, the visibility leases of every message
//! held, the batched deletes of delivered ones, and each message's failure
//! count.

pub mod consumer;
pub mod deletes;
pub mod failures;
pub mod fit;
pub mod leases;
pub mod received;
