//! Every validation rule: a fixture per diagnostic code, its rendered report pinned as a snapshot.

use bai::diagnostic::Code;

use crate::support::{check, rel, render, root};

/// The code a fixture is named for: `mount.duplicate_alias.kdl` → `bai::mount::duplicate_alias`.
fn code_of(path: &std::path::Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    format!("bai::{}", stem.replace('.', "::"))
}

#[test]
fn each_rule_fires_on_its_fixture_and_renders_stably() {
    // Cargo runs integration tests from the package root, so report paths are `tests/fixtures/…`.
    insta::glob!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rules"), "*.kdl", |path| {
        let (problems, sources, _) = check(&rel(path));
        let expected = code_of(path);
        assert!(
            problems.iter().any(|p| p.code.as_str() == expected),
            "{} should report {expected}, got {:?}",
            path.display(),
            problems.iter().map(|p| p.code.as_str()).collect::<Vec<_>>()
        );
        insta::assert_snapshot!(render(&problems, &sources));
    });
}

#[test]
fn every_code_has_a_fixture() {
    // These need command-line input rather than a lab file; tests in cli.rs and plan.rs cover them.
    // `include::too_many` needs a directory of more than 10,000 files: hostile_lab.rs builds one.
    let elsewhere =
        [Code::InventoryMismatch, Code::UnknownCluster, Code::InvalidState, Code::LockInvalid, Code::IncludeTooMany];
    let dir = root().join("tests/fixtures/rules");
    let missing: Vec<&str> = Code::ALL
        .iter()
        .filter(|c| !elsewhere.contains(c))
        .map(|c| c.as_str())
        .filter(|code| {
            let file = code.trim_start_matches("bai::").replace("::", ".") + ".kdl";
            !dir.join(file).is_file()
        })
        .collect();
    assert!(missing.is_empty(), "codes without a fixture: {missing:?}");
}

#[test]
fn codes_are_unique_and_well_formed() {
    let mut seen = std::collections::HashSet::new();
    for code in Code::ALL {
        let s = code.as_str();
        assert!(seen.insert(s), "duplicate code {s}");
        let parts: Vec<&str> = s.split("::").collect();
        assert_eq!(parts.len(), 3, "{s} is not bai::<area>::<what>");
        assert_eq!(parts[0], "bai");
    }
}

#[test]
fn duplicate_alias_labels_both_mounts() {
    let (problems, sources, _) = check(&root().join("tests/fixtures/rules/mount.duplicate_alias.kdl"));
    let p = problems.iter().find(|p| p.code == Code::DuplicateAlias).expect("duplicate alias reported");
    assert_eq!(p.labels.len(), 2, "both mounts are labelled: {p:?}");
    let text = sources.get(p.labels[0].loc.file).map(|f| f.text().to_string()).unwrap_or_default();
    for label in &p.labels {
        let span = &text[label.loc.span.offset()..label.loc.span.offset() + label.loc.span.len()];
        assert!(
            span.starts_with("alias=") || span.starts_with('"'),
            "label covers the mount's alias or vfolder, got `{span}`"
        );
    }
}

#[test]
fn every_code_is_documented_in_the_language_reference() {
    let reference = std::fs::read_to_string(root().join("schema/README.md")).expect("reference exists");
    let missing: Vec<&str> =
        Code::ALL.iter().map(|c| c.as_str()).filter(|c| !reference.contains(&format!("`{c}`"))).collect();
    assert!(missing.is_empty(), "codes missing from schema/README.md: {missing:?}");
}
