//! `invitations`: invite-only growth as a gRPC service on Postgres.
//!
//! The folders are the layers, top to bottom (`layers.rs` checks that
//! imports only point down): `cli` (flags, the admin client), `app` (wires
//! one process on listeners the caller owns), `grpc` (transport: conversion,
//! auth, TLS, overload and deadline layers), `service` (the operations, one
//! transaction each), `outbox` (waker, maintenance, the relay to NATS
//! JetStream), `store` (the SQL), `telemetry` (logs, traces, metrics),
//! `domain` (ids, codes, e-mail, invitations, abuse policy, events, the
//! error type), `crypto` (secret, vault, page tokens) and `pb` (generated).
//! Data flows one way: a proto request is converted into domain types
//! (`grpc::convert`), the service runs one transaction through `store`,
//! appending its events to the outbox in the same transaction, and the
//! result is converted back. `main.rs` only parses flags and sets up
//! telemetry.

pub mod app;
pub mod cli;
pub mod crypto;
pub mod domain;
pub mod grpc;
pub mod outbox;
pub mod pb;
pub mod service;
pub mod store;
pub mod telemetry;

#[cfg(test)]
mod layers;

pub use domain::error::Error;
