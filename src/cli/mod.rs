//! The command line: the clap tree (`args`) and the operator's admin client
//! (`admin`). Nothing below this layer should know about clap.

pub mod admin;
pub mod args;
