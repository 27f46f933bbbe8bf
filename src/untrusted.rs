//! What a node says is not trusted (DESIGN.md, "Trust boundaries"): a compromised node, or a session
//! that writes into what its agent reads, can put anything into a reply. This module is where the
//! controller takes such text in: escaped so that it cannot drive a terminal (ANSI sequences, a carriage
//! return or newline that forges an `ok … Applied 9 of 9` line), cut to a length that fits in a message,
//! and the shapes of names and hashes checked before they are used as names and hashes.
//!
//! Free text (error messages, health details, versions, GPU names) is escaped where it is taken in, so
//! every renderer after that prints it as it is; identifiers are refused when they are not what bai would
//! have written, since they travel on into plans, RPCs and Docker's API.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::protocol::ProbeReply;
use crate::state::snapshot::{Inventory, NodeSnapshot, SessionSnapshot, Unowned};
use crate::validate::{is_plain_name, is_session_name, is_vfolder_name};

/// The longest piece of node text kept for a message: enough for any real error, small enough that a
/// node cannot fill a terminal or a log with one reply.
pub const MAX_TEXT: usize = 4 * 1024;

/// Whether a character may not reach a terminal as it is: C0 and C1 controls, DEL, and the Unicode
/// marks that reorder or hide text (bidirectional overrides and isolates, line and paragraph
/// separators), which can make a line read as something else.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every character that could drive a terminal written as a visible escape (`\n`, `\t`,
/// `\u{1b}`): one line that shows what the node sent.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A session's output for a terminal: line breaks and tabs kept, every other character that could drive
/// the terminal written as a visible escape (`bai logs` on a terminal, unless `--raw`).
pub fn escape_output(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c != '\n' && c != '\t' && unsafe_char(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.split_inclusive('\n') {
        let (body, end) = line.strip_suffix('\n').map_or((line, ""), |b| (b, "\n"));
        for part in body.split_inclusive('\t') {
            let (cell, tab) = part.strip_suffix('\t').map_or((part, ""), |c| (c, "\t"));
            out.push_str(&escape(cell));
            out.push_str(tab);
        }
        out.push_str(end);
    }
    Cow::Owned(out)
}

/// [`escape`]d and cut to at most `max` bytes of the original, saying how much was left out.
pub fn excerpt(text: &str, max: usize) -> String {
    if text.len() <= max {
        return escape(text).into_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", escape(&text[..end]), text.len() - end)
}

/// Node text as a message part: escaped and cut to [`MAX_TEXT`].
pub fn text(text: &str) -> String {
    excerpt(text, MAX_TEXT)
}

/// Escapes `field` in place, cut to [`MAX_TEXT`] (nothing is allocated when it is clean and short).
pub fn clean(field: &mut String) {
    if field.len() > MAX_TEXT || field.chars().any(unsafe_char) {
        *field = text(field);
    }
}

/// [`clean`] for an optional field.
pub fn clean_opt(field: &mut Option<String>) {
    if let Some(f) = field.as_mut() {
        clean(f);
    }
}

/// The most entries of one kind (sessions, images, vfolders, names squatted, labels) that one node's
/// reply may list. A node holding more than this for one cluster is not a node bai made: planning
/// millions of deletes from one reply would only tie the controller up.
pub const MAX_ENTRIES: usize = 10_000;

/// Whether `s` could be a hash, a digest or an id as bai and Docker write them (`sha256:…`, hex).
fn is_token(s: &str) -> bool {
    s.len() <= 160 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b":._-".contains(&b))
}

fn entries(what: &str, n: usize) -> Result<(), String> {
    if n > MAX_ENTRIES {
        return Err(format!("it reported {n} {what}, more than the {MAX_ENTRIES} bai takes from one node"));
    }
    Ok(())
}

fn named(what: &str, name: &str, ok: bool) -> Result<(), String> {
    if !ok {
        return Err(format!("it reported {what} named `{}`, which is not a name bai gives", excerpt(name, 80)));
    }
    Ok(())
}

/// Checks what node `node` reported and escapes its free text in place; the error says what was wrong,
/// and the node's reply is then not used at all.
pub fn check_snapshot(node: &str, snapshot: &mut NodeSnapshot) -> Result<(), String> {
    if snapshot.name != node {
        return Err(format!("it answered for node `{}`", excerpt(&snapshot.name, 80)));
    }
    entries("sessions", snapshot.sessions.len())?;
    entries("images", snapshot.images.len())?;
    entries("vfolders", snapshot.vfolders.len())?;
    entries("containers or folders it does not own", snapshot.unowned.len())?;
    entries("labels", snapshot.labels.len())?;
    check_sessions(&mut snapshot.sessions)?;
    for image in &mut snapshot.images {
        named("an image", &image.name, is_plain_name(&image.name))?;
        let hashes = [Some(&image.spec_hash), image.digest.as_ref(), image.id.as_ref(), image.repo_digest.as_ref()];
        if let Some(bad) = hashes.into_iter().flatten().chain(image.content.as_ref()).find(|h| !is_token(h)) {
            return Err(format!("it reported image `{}` with a malformed hash `{}`", image.name, excerpt(bad, 80)));
        }
        clean(&mut image.reference);
    }
    for vfolder in &snapshot.vfolders {
        named("a vfolder", &vfolder.name, is_vfolder_name(&vfolder.name))?;
    }
    check_unowned(&mut snapshot.unowned)?;
    // Labels go back to the node as they are written in the lab, and are shown in plans: escaped here.
    let labels = std::mem::take(&mut snapshot.labels);
    for (mut key, mut value) in labels {
        clean(&mut key);
        clean(&mut value);
        snapshot.labels.insert(key, value);
    }
    if let Some(agent) = snapshot.agent.as_mut() {
        clean(&mut agent.version);
    }
    if let Some(inventory) = snapshot.inventory.as_mut() {
        check_inventory(inventory)?;
    }
    Ok(())
}

/// Session entries of an `observe` or a watcher's `probe`: names and hashes checked.
pub fn check_sessions(sessions: &mut [SessionSnapshot]) -> Result<(), String> {
    entries("sessions", sessions.len())?;
    for s in sessions.iter() {
        named("a session", &s.name, is_session_name(&s.name))?;
        if !is_token(&s.spec_hash) {
            return Err(format!("it reported session `{}` with a malformed spec hash", s.name));
        }
    }
    Ok(())
}

fn check_unowned(unowned: &mut [Unowned]) -> Result<(), String> {
    entries("containers or folders it does not own", unowned.len())?;
    for u in unowned {
        named("a squatted name", &u.name, is_session_name(&u.name) || is_vfolder_name(&u.name))?;
        clean_opt(&mut u.reason);
    }
    Ok(())
}

/// A generation record read from node `node` for cluster `cluster`: it is about that node and cluster,
/// its names are names bai gives, its hashes are hashes, and its description is escaped. (What it says
/// about image sources is checked against the lab by the rollback itself: `generation::check_source`.)
pub fn check_record(cluster: &str, node: &str, record: &mut crate::generation::GenerationRecord) -> Result<(), String> {
    if record.cluster != cluster {
        return Err(format!("it answered with a record of cluster `{}`", excerpt(&record.cluster, 80)));
    }
    // A node renamed in the lab since keeps its records under the name it had then.
    named("a node", &record.node, is_plain_name(&record.node)).map_err(|e| format!("{e} (asked as node `{node}`)"))?;
    entries("sessions", record.sessions.len())?;
    entries("images", record.images.len())?;
    entries("vfolders", record.vfolders.len())?;
    entries("labels", record.labels.len())?;
    for (name, session) in &record.sessions {
        named("a session", name, is_session_name(name))?;
        if !is_token(&session.hash) {
            return Err(format!("it recorded session `{name}` with a malformed spec hash"));
        }
        for dependency in &session.depends_on {
            named("a dependency", dependency, is_session_name(dependency))?;
        }
    }
    for (name, image) in &record.images {
        named("an image", name, is_plain_name(name))?;
        if !is_token(&image.hash) {
            return Err(format!("it recorded image `{name}` with a malformed spec hash"));
        }
    }
    for name in record.vfolders.keys() {
        named("a vfolder", name, is_vfolder_name(name))?;
    }
    clean_meta(&mut record.meta);
    Ok(())
}

/// A watcher's `probe` reply: sessions and squatted names checked, at most one health result per check
/// asked, and their details escaped.
pub fn check_probe(reply: &mut ProbeReply, checks_asked: usize) -> Result<(), String> {
    check_sessions(&mut reply.sessions)?;
    check_unowned(&mut reply.unowned)?;
    if reply.health.len() > checks_asked {
        return Err(format!("it answered {} health checks to {checks_asked} asked", reply.health.len()));
    }
    for result in &mut reply.health {
        named("a health check's session", &result.session, is_session_name(&result.session))?;
        clean(&mut result.detail);
    }
    Ok(())
}

/// A generation record's description (who, when, which bai, which plan), escaped: it is shown as the
/// node wrote it. The lock's text is left as it is: it is data a rollback restores, never printed raw.
pub fn clean_meta(meta: &mut crate::generation::Meta) {
    clean(&mut meta.applied_at);
    clean(&mut meta.applied_by);
    clean(&mut meta.bai_version);
    clean(&mut meta.config_hash);
    clean_opt(&mut meta.plan_id);
}

/// A node's list of generations: bounded, each description escaped.
pub fn check_generations(reply: &mut crate::protocol::ListGenerationsReply) -> Result<(), String> {
    entries("generations", reply.generations.len())?;
    for g in &mut reply.generations {
        clean_meta(&mut g.meta);
    }
    Ok(())
}

/// A node's inventory: GPU names, UUIDs and versions escaped, the GPU list bounded.
fn clean_holder(h: &mut crate::state::snapshot::GpuHolder) {
    clean_opt(&mut h.container);
    clean_opt(&mut h.cluster);
    clean_opt(&mut h.session);
}

pub fn check_inventory(inventory: &mut Inventory) -> Result<(), String> {
    entries("GPUs", inventory.gpus.len())?;
    for gpu in &mut inventory.gpus {
        clean(&mut gpu.name);
        clean(&mut gpu.uuid);
        entries("MIG instances", gpu.mig.len())?;
        entries("GPU users", gpu.holders.len())?;
        gpu.holders.iter_mut().for_each(clean_holder);
        for m in &mut gpu.mig {
            clean(&mut m.uuid);
            clean(&mut m.profile);
            entries("GPU users", m.holders.len())?;
            m.holders.iter_mut().for_each(clean_holder);
        }
    }
    clean_opt(&mut inventory.gpu_error);
    clean_opt(&mut inventory.docker_version);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keeps_lines_and_tabs_and_escapes_the_rest() {
        assert_eq!(escape_output("a\tb\nc\n"), "a\tb\nc\n");
        assert_eq!(escape_output("red \u{1b}[31mX\r\n"), "red \\u{1b}[31mX\\r\n");
    }

    #[test]
    fn terminal_controls_are_made_visible() {
        assert!(matches!(escape("plain text, ünïcode 日本"), Cow::Borrowed(_)));
        assert_eq!(escape("a\nok node0 Applied 9 of 9"), "a\\nok node0 Applied 9 of 9");
        assert_eq!(escape("\u{1b}[2K\rok"), "\\u{1b}[2K\\rok");
        assert_eq!(escape("tab\there\u{7f}\u{9b}31m"), "tab\\there\\u{7f}\\u{9b}31m");
        assert_eq!(escape("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(escape("\0"), "\\u{0}");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(10);
        let cut = excerpt(&long, 5);
        assert_eq!(cut, "éé… (16 more bytes)");
        assert_eq!(excerpt("short", 10), "short");
        let mut field = "x".repeat(MAX_TEXT + 10);
        clean(&mut field);
        assert!(field.ends_with("… (10 more bytes)"), "{field}");
        let mut fine = "fine".to_string();
        clean(&mut fine);
        assert_eq!(fine, "fine");
    }
}
