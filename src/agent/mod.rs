//! The node agent (`bai agent`): a JSON-lines RPC server on stdin/stdout that observes and changes what
//! bai owns on one node — Docker images and containers, vfolder directories — and reports the node's
//! inventory. It depends only on [`crate::protocol`] and the state types; it never reads a lab file.

pub mod binary;
pub mod containers;
pub mod docker;
pub mod engine_version;
pub mod generations;
pub mod health;
pub mod home;
pub mod identity;
pub mod installed;
pub mod inventory;
pub mod lease;
pub mod place;
pub mod process;
pub mod records;
pub mod secret_key;
pub mod serve;
pub mod stdio;
pub mod vfolder;
