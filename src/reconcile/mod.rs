//! The reconcile engine, written once and driven by every command and by `bai watch --heal`: reach and
//! observe the nodes ([`observation`]), compute the desired state with every secret read once and
//! digested under its node's key ([`desired`]), plan ([`crate::plan`]), execute the plan as a DAG walk
//! ([`crate::fleet::execute`]) and record the run as a generation ([`record`]). The runs themselves are
//! [`converge`] (apply, apply PLAN, destroy, with [`confirm_healthy`]), [`rollback`], [`survey`] (plan
//! against the live nodes, status) and [`lockfile::relock`]; they report through a [`Reporter`] and never
//! print. An [`Engine`] holds the runtime and how nodes are reached.

pub mod confirm_healthy;
pub mod converge;
pub mod desired;
pub mod engine;
pub mod lockfile;
pub mod observation;
pub mod record;
pub mod report;
pub mod rollback;
pub mod saved_plan;
pub mod survey;

pub use desired::{Desired, KeyMaking, desired};
pub use engine::Engine;
pub use observation::{Observation, reach};
pub use report::Reporter;
