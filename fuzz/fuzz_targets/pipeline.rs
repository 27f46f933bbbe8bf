//! Everything bai does with a lab file without a network, on whatever bytes libFuzzer makes up: load
//! (read, nesting bound, KDL parse, includes, lowering) → validate → graph → plan against nothing and
//! against itself → every renderer (diagnostics as the graphical report and as JSON; plans as text, JSON
//! and Markdown; the graph as DOT and Mermaid) → `bai fmt`, and the same bytes read as a `bai.lock`.
//!
//! Nothing here may panic, abort or hang. Two properties are checked on the way, as the proptest in
//! `tests/it/fuzz.rs` does: a valid lab planned against itself changes nothing, and `fmt` is idempotent.
//!
//! The input is written to `lab.kdl` in a directory made once per process, beside `nodes/*.kdl` (the
//! gpu-lab example's node files), so that includes have something to find.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

use bai::diagnostic::{plain_handler, render_graphical, render_json, sort_problems};
use bai::graph::{build_graph, render_dot, render_mermaid};
use bai::source::FileId;
use bai::state::ClusterState;

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

    let mut loaded = bai::config::load(path);
    let mut problems = std::mem::take(&mut loaded.problems);
    problems.extend(bai::validate::validate(&loaded.config));
    sort_problems(&mut problems);
    let _ = render_graphical(&problems, &loaded.sources, &plain_handler(100));
    let _ = render_json(&[(problems.as_slice(), &loaded.sources)]);

    let config = &loaded.config;
    let graphs: Vec<_> = config.clusters.iter().map(|c| (c.name.value.clone(), build_graph(c))).collect();
    let _ = render_dot(&graphs);
    let _ = render_mermaid(&graphs);
    let prepared: Vec<_> = config
        .clusters
        .iter()
        .zip(&graphs)
        .map(|(c, (_, g))| (ClusterState::desired(c), ClusterState::empty(c.name.value.clone()), g))
        .collect();
    let triples: Vec<_> = prepared.iter().map(|(d, o, g)| (d, o, *g)).collect();
    let plan = bai::plan::diff(&triples);
    let _ = bai::plan::render_text(&plan);
    let _ = bai::plan::render_json(&plan);
    let _ = bai::plan::render_markdown(&plan);
    if problems.iter().all(|p| !p.is_error()) {
        let same: Vec<_> = prepared.iter().map(|(d, _, g)| (d, d, *g)).collect();
        assert!(bai::plan::diff(&same).summary().is_empty(), "a valid lab planned against itself changes nothing");
    }

    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(formatted) = bai::fmt::format_source(text) {
            let again = bai::fmt::format_source(&formatted).ok();
            assert_eq!(again.as_deref(), Some(formatted.as_str()), "fmt is idempotent");
        }
        if let Err(problems) = bai::lock::parse::parse(text, FileId(0)) {
            let mut sources = bai::source::SourceMap::default();
            sources.add("bai.lock".into(), "bai.lock".into(), text.into());
            let _ = render_graphical(&problems, &sources, &plain_handler(100));
        }
    }
});
