//! Integration tests: the real server over real gRPC against real Postgres,
//! one database per test. One binary (one link) for all of them.

mod abuse;
mod admin_cli;
mod at_rest;
mod auth;
mod bound;
mod checks;
mod concurrency;
mod events;
mod graph;
mod graph_auth;
mod graph_check;
mod graph_model;
mod graph_races;
mod hardening;
mod health;
mod helpers;
mod members;
mod metrics;
mod mint_list;
mod nats;
mod otlp;
mod privileges;
mod probes;
mod process;
mod quotas;
mod redeem;
mod relays;
mod reparent;
mod reservations;
mod revoke;
mod shutdown;
mod stats;
mod tls;
mod validation;
mod waves;
