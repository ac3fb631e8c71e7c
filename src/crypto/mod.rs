//! Keys and what they protect: the server secret and its rotation
//! (`secret`), sealing codes and stored answers at rest (`vault`), and the
//! opaque page tokens (`page_token`). Depends on nothing else in the crate.

pub mod page_token;
pub mod secret;
pub mod vault;
