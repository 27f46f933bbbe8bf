//! Reading the ssh_config files from disk: the user's own, or the one named, and what its `Include` lines
//! name (`~` expanded, relative names under `~/.ssh` as ssh_config(5) says, globs sorted). Only the user's
//! file is read, not `/etc/ssh/ssh_config`: the lab and the operator's own configuration say how nodes are
//! reached, not the machine's defaults (which on Debian hold nothing about reaching a host).

use std::path::{Path, PathBuf};

use super::{SshConfig, SshConfigError, parse};

/// A file bai reads no more of: an ssh_config is a few kilobytes.
const MAX_FILE: u64 = 4 << 20;
/// Files one `Include` may read, so that a glob over a large directory cannot stall a run.
const MAX_INCLUDED: usize = 256;

/// Which ssh_config to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `~/.ssh/config` under this home, when it exists.
    User { home: Option<PathBuf> },
    /// This file, which must exist (`--ssh-config FILE`, `BAI_SSH_CONFIG`, like `ssh -F`).
    File { path: PathBuf, home: Option<PathBuf> },
    /// No file at all (`--ssh-config none`).
    None,
}

/// Reads and parses the ssh_config `source` names.
pub fn load(source: &Source) -> Result<SshConfig, SshConfigError> {
    let (path, home, required) = match source {
        Source::None => return Ok(SshConfig::default()),
        Source::User { home: None } => return Ok(SshConfig::default()),
        Source::User { home: Some(home) } => (home.join(".ssh/config"), Some(home.clone()), false),
        Source::File { path, home } => (path.clone(), home.clone(), true),
    };
    let name = path.display().to_string();
    let text = match read(&path) {
        Ok(text) => text,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(SshConfig::default()),
        Err(e) => return Err(SshConfigError { file: name, line: None, message: format!("cannot read it: {e}") }),
    };
    let mut include = |pattern: &str| included(pattern, home.as_deref());
    parse(&name, &text, &mut include)
}

fn read(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(MAX_FILE).read_to_string(&mut text)?;
    Ok(text)
}

/// The files an `Include` argument names, read.
fn included(pattern: &str, home: Option<&Path>) -> Result<Vec<(String, String)>, String> {
    let pattern = match (pattern.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        (None, Some(home)) if !pattern.starts_with('/') => home.join(".ssh").join(pattern),
        _ => PathBuf::from(pattern),
    };
    let text = pattern.display().to_string();
    let paths = glob::glob(&text).map_err(|e| format!("`Include {text}`: {e}"))?;
    let mut found: Vec<PathBuf> = paths.filter_map(Result::ok).filter(|p| p.is_file()).take(MAX_INCLUDED + 1).collect();
    if found.len() > MAX_INCLUDED {
        return Err(format!("`Include {text}` matches more than {MAX_INCLUDED} files"));
    }
    found.sort();
    found
        .into_iter()
        .map(|path| {
            let text = read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Ok((path.display().to_string(), text))
        })
        .collect()
}
