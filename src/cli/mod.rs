//! The command line: the clap tree (`args`), every `*Args → *Settings`
//! conversion (`settings`), the operator's admin client (`admin`) and the
//! `outbox` command. Nothing below this layer knows about clap.

pub mod admin;
pub mod args;
pub mod outbox;
pub mod settings;
