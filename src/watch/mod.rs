//! `bai watch`: the fleet under a continuous probe. One long-lived agent connection per node, a ping every
//! `interval` under the Kubernetes threshold model, session containers and health checks, drift against the
//! file and, with `--heal`, re-applying what drifted. Events go out on a channel; the CLI prints them.

pub mod http;
pub mod metrics;
pub mod status;
