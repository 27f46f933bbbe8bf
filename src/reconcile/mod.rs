//! The reconcile engine's shared steps, written once and driven by every command and by `bai watch
//! --heal`: reach and observe the nodes ([`observation`]), compute the desired state with every secret
//! read once and digested under its node's key ([`desired`]); the plan ([`crate::plan`]) and its execution
//! as a DAG walk ([`crate::fleet::execute`]) follow.

pub mod desired;
pub mod observation;

pub use desired::{Desired, KeyMaking, desired};
pub use observation::{Observation, reach};
