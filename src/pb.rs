//! Generated protobuf and gRPC code for `invitations.v1`; never edited by hand.

#![allow(clippy::all, clippy::pedantic)]

tonic::include_proto!("invitations.v1");

/// Encoded file descriptor set, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("invitations_descriptor");
