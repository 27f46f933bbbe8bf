//! `flake.nix` checked without nixpkgs: Nix's own parser accepts it, it declares the four outputs, and the
//! versions it names agree with Cargo.toml. Building it needs the network; this needs only `nix-instantiate`
//! (Debian's `nix-bin`, which `scripts/test` installs).

use std::process::Command;

use crate::support::root;

/// Runs `nix-instantiate` in the repository root with `args`; its standard output on success.
fn nix_instantiate(args: &[&str]) -> String {
    let out = Command::new("nix-instantiate").args(args).current_dir(root()).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `nix-instantiate` ({e}): this test needs Nix's own parser; install Debian's `nix-bin` \
             package (`apt-get install -y nix-bin`), which `scripts/test` does in its system set-up"
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`nix-instantiate {}` failed on flake.nix:\n{}{stdout}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Nix's canonical rendering of flake.nix: comments gone, one binding per `name = value;`.
fn parsed_flake() -> String {
    nix_instantiate(&["--parse", "flake.nix"])
}

/// Every string bound to `name` (`name = "…";`) in Nix text, where `name` is a whole identifier.
fn string_bindings(text: &str, name: &str) -> Vec<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '\'');
    let mut found = Vec::new();
    for (at, _) in text.match_indices(name) {
        if text[..at].chars().next_back().is_some_and(ident) {
            continue;
        }
        let rest = text[at + name.len()..].trim_start();
        let Some(rest) = rest.strip_prefix('=') else { continue };
        let Some(rest) = rest.trim_start().strip_prefix('"') else { continue };
        if let Some(end) = rest.find('"') {
            found.push(rest[..end].to_owned());
        }
    }
    found
}

/// `key = "value"` from Cargo.toml's `[package]` table. A line parser, not a TOML parser: enough for the
/// plain string keys this test reads, and it refuses anything else rather than guessing.
fn cargo_package_value(manifest: &str, key: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if !in_package {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        if k.trim() != key {
            continue;
        }
        let v = v.trim();
        let value = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
        return Some(value.unwrap_or_else(|| panic!("Cargo.toml: `{key}` is not a plain string: {v}")).to_owned());
    }
    None
}

fn cargo_toml() -> String {
    std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml is readable")
}

/// `1.95` → `1.95.0`: Cargo reads a two-part `rust-version` as the `.0` release.
fn full_rust_version(version: &str) -> String {
    if version.split('.').count() == 2 { format!("{version}.0") } else { version.to_owned() }
}

#[test]
fn flake_parses() {
    let parsed = parsed_flake();
    assert!(parsed.trim_start().starts_with('{'), "flake.nix is not an attribute set:\n{parsed}");
}

#[test]
fn flake_declares_packages_dev_shells_checks_and_apps() {
    // The outputs function is called with empty inputs: attribute names are lazy in their values, so
    // nothing of nixpkgs is needed to list them.
    let names = nix_instantiate(&[
        "--eval",
        "--strict",
        "--json",
        "--expr",
        "let f = import ./flake.nix; \
         in builtins.attrNames (f.outputs { self = {}; nixpkgs = {}; rust-overlay = {}; })",
    ]);
    let names: Vec<String> = serde_json::from_str(&names).unwrap_or_else(|e| panic!("{e}: {names}"));
    for output in ["apps", "checks", "devShells", "packages"] {
        assert!(names.iter().any(|n| n == output), "flake.nix has no `{output}` output: {names:?}");
    }
    let parsed = parsed_flake();
    for system in ["x86_64-linux", "aarch64-linux"] {
        assert!(parsed.contains(&format!("\"{system}\"")), "flake.nix does not support {system}:\n{parsed}");
    }
    assert!(parsed.contains("cargoLock = { lockFile = "), "the package is not built from Cargo.lock:\n{parsed}");
}

#[test]
fn flake_versions_match_cargo_toml() {
    let parsed = parsed_flake();
    let manifest = cargo_toml();

    let name = cargo_package_value(&manifest, "name").expect("Cargo.toml names its package");
    let pnames = string_bindings(&parsed, "pname");
    assert!(pnames.contains(&name), "flake.nix's pname {pnames:?} is not Cargo.toml's package name {name:?}");

    let version = cargo_package_value(&manifest, "version").expect("Cargo.toml has a package version");
    let versions = string_bindings(&parsed, "version");
    assert!(!versions.is_empty(), "flake.nix names no `version = \"…\"`: it must state bai's version {version}");
    for named in &versions {
        assert_eq!(named, &version, "flake.nix names version {named}; Cargo.toml's package version is {version}");
    }

    let rust = cargo_package_value(&manifest, "rust-version").map(|v| full_rust_version(&v));
    for named in string_bindings(&parsed, "rustVersion") {
        let rust = rust.as_deref().unwrap_or_else(|| panic!("flake.nix names Rust {named}; Cargo.toml has none"));
        assert_eq!(full_rust_version(&named), rust, "flake.nix's Rust {named} is not Cargo.toml's rust-version");
    }
}

#[test]
fn the_helpers_read_what_they_claim() {
    let nix = r#"{ pname = "bai"; rustVersion = "1.95.0"; version = "0.1.0"; x = { version="2"; }; }"#;
    assert_eq!(string_bindings(nix, "version"), ["0.1.0", "2"]);
    assert_eq!(string_bindings(nix, "rustVersion"), ["1.95.0"]);
    let toml = "[package]\nname = \"bai\"\nrust-version = \"1.95\"\n[dependencies]\nversion = \"9\"\n";
    assert_eq!(cargo_package_value(toml, "rust-version").as_deref(), Some("1.95"));
    assert_eq!(cargo_package_value(toml, "version"), None);
    assert_eq!(full_rust_version("1.95"), "1.95.0");
    assert_eq!(full_rust_version("1.95.1"), "1.95.1");
}
