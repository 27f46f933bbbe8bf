//! Everything bai does with a lab file without a network, on whatever bytes libFuzzer makes up: the
//! pipeline of `tests/it/pipeline.rs` (load → validate → graph → plan against nothing and against itself
//! → every renderer → `bai fmt`, and the bytes read as a `bai.lock`), the same function the integration
//! suite's proptest runs. Nothing may panic, abort or hang; a valid lab planned against itself changes
//! nothing, and `fmt` is idempotent.
//!
//! The input is written to `lab.kdl` in a directory made once per process, beside `nodes/*.kdl` (the
//! gpu-lab example's node files), so that includes have something to find.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// The pipeline itself, shared with the integration suite's proptest.
#[path = "../../tests/it/pipeline.rs"]
mod pipeline;

const NODES: &[(&str, &str)] = &[
    ("cpu-01.kdl", include_str!("../../examples/gpu-lab/nodes/cpu-01.kdl")),
    ("gpu-01.kdl", include_str!("../../examples/gpu-lab/nodes/gpu-01.kdl")),
    ("gpu-02.kdl", include_str!("../../examples/gpu-lab/nodes/gpu-02.kdl")),
    ("gpu-03.kdl", include_str!("../../examples/gpu-lab/nodes/gpu-03.kdl")),
];

/// The lab file's path, in a directory that lives as long as the process.
fn lab_path() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let nodes = dir.path().join("nodes");
        std::fs::create_dir_all(&nodes).expect("mkdir");
        for (name, text) in NODES {
            std::fs::write(nodes.join(name), text).expect("write");
        }
        let path = dir.path().join("lab.kdl");
        (dir, path)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let path = lab_path();
    std::fs::write(path, data).expect("write the input");
    pipeline::run(path);
});
