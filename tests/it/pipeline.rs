//! Everything bai does with a lab file without a network, in one function shared by the proptest of
//! mutations (tests/it/fuzz.rs) and the coverage-guided fuzz target (fuzz/fuzz_targets/pipeline.rs, which
//! includes this file by path): load (read, nesting bound, KDL parse, includes, lowering) → validate →
//! graph → plan against nothing and against itself → every renderer (diagnostics graphical and JSON; plans
//! as text, JSON and Markdown; the graph as DOT and Mermaid) → `bai fmt`, and the same bytes read as a
//! `bai.lock`. Nothing may panic, abort or hang, and two properties hold: a valid lab planned against
//! itself changes nothing, and `fmt` is idempotent.

use std::path::Path;

use bai::diagnostic::{plain_handler, render_graphical, render_json, sort_problems};
use bai::graph::{build_graph, render_dot, render_mermaid};
use bai::source::FileId;
use bai::state::ClusterState;

/// Runs the pipeline on the lab at `path`.
pub fn run(path: &Path) {
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

    let Ok(text) = std::fs::read_to_string(path) else { return };
    if let Ok(formatted) = bai::fmt::format_source(&text) {
        let again = bai::fmt::format_source(&formatted).ok();
        assert_eq!(again.as_deref(), Some(formatted.as_str()), "fmt is idempotent");
    }
    if let Err(problems) = bai::lock::parse::parse(&text, FileId(0)) {
        let mut sources = bai::source::SourceMap::default();
        sources.add("bai.lock".into(), "bai.lock".into(), text.as_str().into());
        let _ = render_graphical(&problems, &sources, &plain_handler(100));
    }
}
