//! JSON diagnostics point at the right place: lines and columns are 1-based and count characters.

use std::path::Path;

use crate::support::{bai, json, root, stdout_of};

/// Line and column of a byte offset, computed independently of bai.
fn line_col(text: &str, offset: usize) -> (u64, u64) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line as u64, column as u64)
}

fn check_labels_of(file: &Path) -> usize {
    let out = bai().args(["validate", "--format", "json"]).arg(file).output().expect("bai runs");
    let doc = json(&stdout_of(&out));
    let mut checked = 0;
    for d in doc["diagnostics"].as_array().into_iter().flatten() {
        for label in d["labels"].as_array().into_iter().flatten() {
            let path = root().join(label["file"].as_str().unwrap_or_default());
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let offset = label["offset"].as_u64().unwrap_or(u64::MAX) as usize;
            assert!(offset <= text.len(), "{}: offset {offset} past the end", path.display());
            let expected = line_col(&text, offset);
            let got = (label["line"].as_u64().unwrap_or(0), label["column"].as_u64().unwrap_or(0));
            assert_eq!(got, expected, "{} label {label}", path.display());
            checked += 1;
        }
    }
    checked
}

#[test]
fn every_rule_fixture_labels_the_right_line_and_column() {
    let mut total = 0;
    for entry in std::fs::read_dir(root().join("tests/fixtures/rules")).expect("fixtures exist") {
        let path = entry.expect("readable dir").path();
        if path.extension().is_some_and(|e| e == "kdl") {
            total += check_labels_of(&path);
        }
    }
    assert!(total > 40, "only {total} labels were checked");
}

#[test]
fn columns_count_characters_after_multibyte_text() {
    let file = "tests/fixtures/labels/multibyte.kdl";
    let out = bai().args(["validate", "--format", "json", file]).output().expect("bai runs");
    let doc = json(&stdout_of(&out));
    let gpus = doc["diagnostics"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["code"] == "bai::capacity::gpus_exceeded"))
        .expect("gpus_exceeded reported");
    let declared = gpus["labels"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["text"].as_str().is_some_and(|t| t.contains("declared"))))
        .expect("the declaration is labelled");
    // Line 3 is `    node "gpu-01" address="10.0.0.1" { labels room="Zürich-日本" ; gpus 1 }`: the `1` after
    // `gpus ` is character 71 although it is byte 75.
    assert_eq!(declared["line"], 3);
    let line3 = std::fs::read_to_string(root().join(file)).expect("fixture").lines().nth(2).unwrap_or("").to_string();
    let col = line3.find("gpus 1").map(|b| line3[..b].chars().count() + 1 + 5).unwrap_or(0);
    assert_eq!(declared["column"].as_u64(), Some(col as u64));
    assert_ne!(col, line3.find("gpus 1").unwrap_or(0) + 6, "the fixture has multi-byte text before the label");
    check_labels_of(&root().join(file));
}
