//! `invitations`: invite-only growth as a gRPC service on Postgres.
//!
//! Data flows one way: a proto request is converted into domain types
//! (`grpc::convert`), the domain operation (`service`) runs one transaction
//! through the SQL functions in `store`, and the result is converted back.
//! Every change also appends its `events` to the outbox in the same
//! transaction; the `relay` publishes them to NATS JetStream, and `outbox`
//! measures, prunes and replays them.
//! `server` wires it up on listeners the caller owns; `telemetry` holds logs,
//! traces and metrics; `main.rs` only parses flags and sets up telemetry.

pub mod abuse;
pub mod admin;
pub mod auth;
pub mod code;
pub mod config;
pub mod domain;
pub mod email;
pub mod error;
pub mod events;
pub mod grpc;
pub mod outbox;
pub mod page_token;
pub mod pb;
pub mod relay;
pub mod secret;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod vault;

pub use error::Error;
