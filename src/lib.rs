//! bai: a declarative, Nix-style reconciler for GPU labs.
//!
//! The pipeline: [`config::load`] reads a lab's KDL files (includes parsed concurrently) and lowers them to
//! the typed [`model`], keeping a span on every value; [`validate`] finds every problem at once as
//! [`diagnostic::Problem`]s; [`graph`] builds the resource DAG; [`state`] describes desired and observed
//! state alike; [`plan`] diffs them into create/update/replace/delete changes and renders them as text, JSON
//! or Markdown. All of this is pure but for the loader. The CLI (`commands`) is the only layer that prints.

pub mod agent;
pub mod config;
pub mod diagnostic;
pub mod failure;
pub mod fleet;
pub mod fmt;
pub mod frame;
pub mod generation;
pub mod gpu;
pub mod graph;
pub mod jump;
pub mod lock;
pub mod model;
pub mod mount_destination;
pub mod plan;
pub mod protocol;
pub mod reach;
pub mod reconcile;
pub mod reference;
pub mod secret;
pub mod source;
pub mod state;
pub mod suggest;
pub mod transport;
pub mod untrusted;
pub mod utc;
pub mod validate;
pub mod watch;
