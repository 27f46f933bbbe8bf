//! GPUs as bai hands them out: which devices of a node (whole GPUs, MIG instances) each session on it is
//! given, decided from the node's devices and the sessions' requests alone, so that a plan shows it before
//! anything runs.

pub mod allocate;
pub mod place;
