//! GPUs as bai hands them out: which devices of a node (whole GPUs, MIG instances) each session on it is
//! given, decided from the node's devices and the sessions' requests alone, so that a plan shows it before
//! anything runs.

pub mod allocate;
pub mod place;

/// Whether a device id as a spec records it (a UUID, or an index where the node's inventory was not
/// known when the session was placed) names the GPU `uuid` with NVML index `index`.
pub fn names(id: &str, uuid: &str, index: u32) -> bool {
    id == uuid || id.parse::<u32>() == Ok(index)
}
