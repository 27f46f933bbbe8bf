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

#[test]
fn every_run_time_code_is_documented() {
    // The codes bai's own code gives failures: `code(bai::…)` on typed errors and `"bai::…"` literals,
    // outside test modules (they sit at the end of their files).
    let docs = std::fs::read_to_string(root().join("docs/errors.md")).expect("docs/errors.md exists");
    let reference = std::fs::read_to_string(root().join("schema/README.md")).expect("reference exists");
    let mut files = vec![root().join("src")];
    let mut codes = std::collections::BTreeSet::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).expect("read dir").map(|e| e.expect("entry").path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        let code_part = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
        for (at, _) in code_part.match_indices("bai::") {
            let before = &code_part[..at];
            if !(before.ends_with('"') || before.ends_with("code(")) {
                continue;
            }
            let code: String = code_part[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == ':')
                .collect();
            if code.split("::").count() == 3 {
                codes.insert(code);
            }
        }
    }
    assert!(codes.len() > 100, "the scan found the codes ({})", codes.len());
    let undocumented: Vec<&String> =
        codes.iter().filter(|c| !docs.contains(&format!("`{c}`")) && !reference.contains(&format!("`{c}`"))).collect();
    assert!(undocumented.is_empty(), "codes missing from docs/errors.md: {undocumented:?}");
}
