//! deskfleet's domain: what a desktop, a job and a sub-job are, which states they move
//! through, and the [`store::Store`] trait through which every durable change is made.
//!
//! Invariants kept here:
//! - identifiers are newtypes built only by their parsers ([`ids`]); an invalid value never
//!   gets past the edge of the server;
//! - job and sub-job states change only along the transitions of [`job`], and a job's
//!   status is always derived from its sub-jobs by one function ([`job::derive_job_status`]);
//! - every `Store` method is one transaction.
//!
//! This crate must not depend on axum, sqlx or tokio: the store crate implements the trait,
//! the server uses it.

pub mod audit;
pub mod clock;
pub mod console;
pub mod fleet;
pub mod ids;
pub mod job;
pub mod metrics;
pub mod model;
pub mod presence;
pub mod store;
