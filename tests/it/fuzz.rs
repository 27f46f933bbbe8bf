//! No input may panic bai: mutated examples go through load → validate → plan → every renderer.

use proptest::prelude::*;

/// Pieces that steer mutations towards the interesting parts of the grammar.
const TOKENS: &[&str] = &[
    "\"",
    "{",
    "}",
    "=",
    ";",
    "\n",
    "/-",
    "//",
    "/*",
    "#true",
    "#null",
    "-1",
    "1.5",
    "0",
    "99999999999999999999999",
    "node",
    "session",
    "mount",
    "alias=",
    "\"..\"",
    "\"/etc\"",
    "\"\"",
    "include \"*.kdl\"",
    "depends-on \"train\"",
    "resources gpus=",
    "quota=\"1TiB\"",
    "é",
    "日本",
    "\\",
    "r#\"x\"#",
    "(ty)",
    "cluster \"lab\" {",
    "image=",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, token: usize },
    DuplicateLine { line: usize },
    SwapLines { a: usize, b: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..24).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, token)| Mutation::Insert { at, token }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
    ]
}

fn char_boundary(s: &str, at: usize) -> usize {
    let mut i = at % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(source: &str, m: &Mutation) -> String {
    let mut s = source.to_string();
    match m {
        Mutation::Delete { at, len } => {
            let start = char_boundary(&s, *at);
            let end = char_boundary(&s, (start + len).min(s.len()));
            s.replace_range(start..end.max(start), "");
        }
        Mutation::Insert { at, token } => {
            let at = char_boundary(&s, *at);
            s.insert_str(at, TOKENS[*token]);
        }
        Mutation::DuplicateLine { line } => {
            let mut lines: Vec<&str> = s.lines().collect();
            if !lines.is_empty() {
                let i = line % lines.len();
                lines.insert(i, lines[i]);
            }
            s = lines.join("\n");
        }
        Mutation::SwapLines { a, b } => {
            let mut lines: Vec<&str> = s.lines().collect();
            if !lines.is_empty() {
                let (a, b) = (a % lines.len(), b % lines.len());
                lines.swap(a, b);
            }
            s = lines.join("\n");
        }
    }
    s
}

fn seeds() -> Vec<(String, String)> {
    let root = crate::support::root();
    let mut out = Vec::new();
    for dir in
        ["examples", "examples/gpu-lab", "examples/gpu-lab/nodes", "examples/local-build", "tests/fixtures/rules"]
    {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for p in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "kdl")) {
            if let Ok(text) = std::fs::read_to_string(&p) {
                out.push((p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), text));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_labs_never_panic(seed in any::<prop::sample::Index>(), mutations in prop::collection::vec(mutation(), 1..6)) {
        let seeds = seeds();
        prop_assume!(!seeds.is_empty());
        let (name, source) = &seeds[seed.index(seeds.len())];
        let mutated = mutations.iter().fold(source.clone(), |s, m| apply(&s, m));
        let dir = tempfile::tempdir().expect("tempdir");
        // Included files stay reachable: the mutated file sits beside copies of the node files.
        let nodes = dir.path().join("nodes");
        std::fs::create_dir_all(&nodes).expect("mkdir");
        for (n, text) in seeds.iter().filter(|(n, _)| n.starts_with("gpu-") || n.starts_with("cpu-")) {
            std::fs::write(nodes.join(n), text).expect("write");
        }
        let path = dir.path().join(name);
        std::fs::write(&path, mutated).expect("write");
        crate::pipeline::run(&path);
    }
}

/// The coverage-guided target's seed corpus (fuzz/corpus/pipeline, run by `scripts/fuzz`) holds every input
/// it found that bai did not survive; here they run through the same pipeline without cargo-fuzz.
#[test]
fn every_fuzz_corpus_input_runs_through_the_pipeline() {
    let dir = crate::support::root().join("fuzz/corpus/pipeline");
    let mut paths: Vec<_> =
        std::fs::read_dir(&dir).expect("the corpus").filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    assert!(paths.len() >= 5, "{paths:?}");
    for path in paths {
        crate::pipeline::run(&path);
    }
}

#[test]
fn every_seed_runs_through_the_pipeline() {
    let root = crate::support::root();
    for example in ["examples/workstation.kdl", "examples/gpu-lab/cluster.kdl", "examples/local-build/cluster.kdl"] {
        crate::pipeline::run(&root.join(example));
    }
    assert!(seeds().len() > 40);
}
