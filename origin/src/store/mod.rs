//! The DynamoDB tables: results by correlationId and last-known records,
//! and the batched writes that fill them.

pub mod batch_write;
pub mod results;
