//! Secrets in the pure core: the keyed digest that stands for a secret's value in a session's spec, how
//! an unknown digest is compared, and how a secret is shown (`(sensitive)`, never its value or digest).
//!
//! Why a digest at all: a session's spec hash decides whether its container is replaced, and a secret
//! whose value changed must replace the container that holds the old value. The value itself must never
//! enter the spec (the spec is recorded on the container, and its hash is shown in plans, status, labels
//! and CI logs), so the spec carries HMAC-SHA256(key, value) instead.
//!
//! Why keyed, and why the key lives on the node: a plain SHA-256 of a short token can be brute-forced by
//! anyone who reads a CI log. The key is 32 random bytes kept by each node's agent per cluster (mode
//! 0600, see `agent::secret_key`), handed only to a controller that speaks to the agent, and held in the
//! controller's memory only while it works. Readers of plans, status or labels never see it. And because
//! the key is the node's, every controller (an operator's laptop, CI) computes the same digest, which a
//! key of each controller's own could not give.
//!
//! An unknown digest: where the value cannot be known (`bai diff` of two files, `plan --offline` or
//! `--state`, a variable missing on the machine that runs `bai status` or `bai watch`), the desired spec
//! has `digest: None`. Such a session must not be planned for replacement on that account alone, so
//! [`settle_unknown`] treats an unknown desired digest as equal to the observed one: when the desired
//! spec and the observed spec are the same apart from digests, the desired session takes the observed
//! spec and hash.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::state::spec::{SessionSpec, hash_of, hex_digest};
use crate::state::{ClusterState, SessionState};

/// How a secret's value (and its digest) is shown everywhere bai prints.
pub const SENSITIVE: &str = "(sensitive)";

/// Digests of secret values by (session, variable name).
pub type Digests = BTreeMap<(String, String), String>;

/// Lowercase hex HMAC-SHA256 of a secret's value under a node's key.
pub fn digest(key: &[u8], value: &[u8]) -> String {
    // HMAC takes a key of any length; the error case cannot happen.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(value);
    hex_digest(&mac.finalize().into_bytes())
}

/// Sets the digests of `spec`'s secrets from `digests` (by `session`); returns whether any changed.
pub fn fill(spec: &mut SessionSpec, session: &str, digests: &Digests) -> bool {
    let mut changed = false;
    for (name, env) in spec.env.iter_mut() {
        if !env.is_secret() {
            continue;
        }
        if let Some(d) = digests.get(&(session.to_string(), name.clone()))
            && env.digest() != Some(d.as_str())
        {
            *env = env.with_digest(Some(d.clone()));
            changed = true;
        }
    }
    changed
}

/// The digests a state holds, by (session, variable): what [`ClusterState::with_digests`] puts back.
pub fn digests_of(state: &ClusterState) -> Digests {
    let mut out = Digests::new();
    for (session, s) in &state.sessions {
        for (name, env) in s.spec.iter().flat_map(|spec| &spec.env) {
            if let Some(d) = env.digest() {
                out.insert((session.to_string(), name.clone()), d.to_string());
            }
        }
    }
    out
}

/// Whether a spec has a secret whose digest is not known.
pub fn has_unknown(spec: &SessionSpec) -> bool {
    spec.env.values().any(|e| e.is_secret() && e.digest().is_none())
}

/// The spec with every digest forgotten: what two specs are compared by when one side cannot know them.
pub fn without_digests(spec: &SessionSpec) -> SessionSpec {
    let mut out = spec.clone();
    for env in out.env.values_mut() {
        *env = env.with_digest(None);
    }
    out
}

/// Whether `desired`, its unknown digests taken as the observed ones, is `observed`: a known digest
/// must still match, and a node that reported no digest (a status snapshot) matches an unknown one.
pub fn same_but_unknown(desired: &SessionSpec, observed: &SessionSpec) -> bool {
    if !has_unknown(desired) {
        return false;
    }
    let mut filled = desired.clone();
    for (name, env) in filled.env.iter_mut() {
        if let (true, None, Some(seen)) = (env.is_secret(), env.digest(), observed.env.get(name))
            && env.with_digest(None) == seen.with_digest(None)
        {
            *env = seen.clone();
        }
    }
    filled == *observed
}

impl ClusterState {
    /// Desired state with each secret's digest filled in (the hashes recomputed): the digests come from
    /// the controller, which resolved the values and asked each node for its key.
    pub fn with_digests(mut self, digests: &Digests) -> Self {
        for (name, s) in self.sessions.iter_mut() {
            if let Some(spec) = s.spec.as_mut()
                && fill(spec, name.as_str(), digests)
            {
                s.hash = hash_of(spec);
            }
        }
        self
    }
}

/// Applies the unknown-digest rule (see the module doc) to every desired session with an unknown digest.
pub fn settle_unknown(desired: &mut ClusterState, observed: &ClusterState) {
    for (name, want) in desired.sessions.iter_mut() {
        let Some(have) = observed.sessions.get(name) else { continue };
        settle_session(want, have.spec.as_ref(), &have.hash);
    }
}

/// The unknown-digest rule for one session, against the spec and hash a node reported.
pub fn settle_session(want: &mut SessionState, observed: Option<&SessionSpec>, observed_hash: &str) {
    if let (Some(spec), Some(seen)) = (want.spec.as_ref(), observed)
        && same_but_unknown(spec, seen)
    {
        want.spec = Some(seen.clone());
        want.hash = observed_hash.to_string();
    }
}

/// `message` with every secret in `secrets` (variable name → value) taken out: for error text that may
/// echo what it was given (an engine refusing a container's environment).
///
/// Engines echo values escaped, not as they are: runc quotes a variable with Go's `%q`
/// (`"TOKEN=a\"b\\c\nd\x00"`), a JSON body escapes it again, a shell-ish message backslashes quotes. So
/// every form in [`escaped_forms`] of every non-empty value is replaced by `(sensitive)`, longest first,
/// even a short value that mangles other words: a garbled message is better than a leaked secret.
///
/// And because no list of forms is complete, a message that still shows `NAME=` for a secret's
/// variable followed by anything but `(sensitive)` is taken to echo the environment in a form not
/// recognised: everything from that value on is withheld.
pub fn redact<'a>(message: &str, secrets: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let secrets: Vec<(&String, &String)> = secrets.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let mut forms: Vec<String> = secrets.iter().flat_map(|(_, v)| escaped_forms(v)).collect();
    // Longest first, so that a form holding another (a value holding another) is replaced whole.
    forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    forms.dedup();
    let mut out = message.to_string();
    for form in &forms {
        out = out.replace(form.as_str(), SENSITIVE);
    }
    let mut cut = out.len();
    for (name, _) in &secrets {
        let assign = format!("{name}=");
        for (at, _) in out.match_indices(assign.as_str()) {
            let value_at = at + assign.len();
            let starts_a_name = out[..at].chars().next_back().is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
            if starts_a_name && !out[value_at..].starts_with(SENSITIVE) {
                cut = cut.min(value_at);
            }
        }
    }
    if cut < out.len() {
        out.truncate(cut);
        out.push_str("(sensitive: the rest of the engine's message is withheld)");
    }
    out
}

/// The forms an engine may echo `value` in: as it is; quoted as Go does (`%q`, and `%+q` with only ASCII
/// left); JSON-escaped as serde and Go do (Go's also `\u003c` for `<`, `>`, `&`, with `\b` and `\f` or
/// their `\u` forms, hex in either case); backslash-escaped quotes and shell characters;
/// percent-encoded; and each quoted or JSON form escaped once more (a message inside a message).
pub fn escaped_forms(value: &str) -> Vec<String> {
    let mut first = vec![
        value.to_string(),
        go_quote(value, false),
        go_quote(value, true),
        backslashed(value, "\\\"'"),
        backslashed(value, "\\\"'$`"),
        percent_encoded(value),
    ];
    for short_controls in [true, false] {
        for html in [false, true] {
            for upper in [false, true] {
                first.push(json_escape(value, short_controls, html, upper));
            }
        }
    }
    let mut all = first.clone();
    for form in &first[1..] {
        all.push(go_quote(form, false));
        all.push(json_escape(form, true, false, false));
        all.push(json_escape(form, false, true, false));
    }
    all.sort();
    all.dedup();
    all.retain(|f| !f.is_empty());
    all
}

/// The inside of Go's `strconv.Quote` (`%q`), or of `QuoteToASCII` (`%+q`) when `ascii`. Go leaves
/// printable characters as they are; what Go counts as printable is approximated by "not a control
/// character and not a space other than ` `" (the `NAME=` rule in [`redact`] covers the rest).
fn go_quote(value: &str, ascii: bool) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            ' '..='~' => out.push(c),
            c if !ascii && !c.is_control() && !c.is_whitespace() => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out
}

/// A JSON string's inside: `"` and `\` escaped, `\n` `\r` `\t` short, `\b` `\f` short when
/// `short_controls`, other controls as `\u00XX` (in upper-case hex when `upper`); with `html`, as Go's
/// encoder does, `<` `>` `&` and U+2028, U+2029 as `\u` escapes too.
fn json_escape(value: &str, short_controls: bool, html: bool, upper: bool) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    let hex = |out: &mut String, c: char| {
        if upper {
            out.push_str(&format!("\\u{:04X}", c as u32));
        } else {
            out.push_str(&format!("\\u{:04x}", c as u32));
        }
    };
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' if short_controls => out.push_str("\\b"),
            '\u{c}' if short_controls => out.push_str("\\f"),
            c if (c as u32) < 0x20 => hex(&mut out, c),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' if html => hex(&mut out, c),
            c => out.push(c),
        }
    }
    out
}

/// `value` with a backslash before each of `special`.
fn backslashed(value: &str, special: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if special.contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `value` with every byte but `A-Z a-z 0-9 - . _ ~` percent-encoded.
fn percent_encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClusterName, NodeName, Restart, SessionName};
    use crate::state::spec::{EnvSpec, ResourceSpec};

    fn spec(env: &[(&str, EnvSpec)]) -> SessionSpec {
        SessionSpec {
            image: "box".into(),
            image_ref: "lab/box:1".into(),
            image_digest: None,
            node: "n1".into(),
            command: vec![],
            env: env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            mounts: vec![],
            resources: ResourceSpec { cpus: None, memory: None, gpus: 0, ..Default::default() },
            ports: BTreeMap::new(),
            restart: Restart::No,
            ..Default::default()
        }
    }

    fn state(spec: SessionSpec) -> ClusterState {
        let mut s = ClusterState::empty(ClusterName("lab".into()));
        s.sessions.insert(
            SessionName("job-a".into()),
            SessionState { node: NodeName("n1".into()), hash: hash_of(&spec), spec: Some(spec), container: None },
        );
        s
    }

    fn known(d: &str) -> EnvSpec {
        EnvSpec::FromEnv { var: "TOKEN".into(), digest: Some(d.into()) }
    }

    #[test]
    fn digest_is_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            digest(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(digest(&[1; 32], b"s3cret"), digest(&[2; 32], b"s3cret"), "the key matters");
        assert_ne!(digest(&[1; 32], b"s3cret"), digest(&[1; 32], b"s3cret2"));
    }

    #[test]
    fn digests_fill_the_spec_and_change_the_hash() {
        let desired = state(spec(&[("T", EnvSpec::from_env("TOKEN")), ("A", EnvSpec::Value("1".into()))]));
        let before = desired.sessions.values().next().map(|s| s.hash.clone());
        let digests = Digests::from([(("job-a".into(), "T".into()), "d1".into())]);
        let filled = desired.with_digests(&digests);
        let s = filled.sessions.values().next().expect("one session");
        assert_eq!(s.spec.as_ref().and_then(|sp| sp.env["T"].digest()), Some("d1"));
        assert_eq!(s.spec.as_ref().map(|sp| sp.env["A"].clone()), Some(EnvSpec::Value("1".into())));
        assert_ne!(Some(s.hash.clone()), before);
        assert_eq!(s.hash, hash_of(s.spec.as_ref().expect("spec")));
        assert_eq!(digests_of(&filled), digests);
    }

    #[test]
    fn an_unknown_digest_reads_as_the_observed_one() {
        let observed = state(spec(&[("T", known("d1"))]));
        let mut desired = state(spec(&[("T", EnvSpec::from_env("TOKEN"))]));
        settle_unknown(&mut desired, &observed);
        assert_eq!(desired, observed, "same spec apart from the digest: no change planned");

        // A node that reported no digest (a status snapshot) settles the same way.
        let redacted = state(spec(&[("T", EnvSpec::from_env("TOKEN"))]));
        let mut desired = state(spec(&[("T", EnvSpec::from_env("TOKEN"))]));
        settle_unknown(&mut desired, &redacted);
        assert_eq!(desired, redacted);

        // Anything else that differs still shows, and a known digest is never overridden.
        let mut other = state(spec(&[("T", EnvSpec::from_env("OTHER"))]));
        settle_unknown(&mut other, &observed);
        assert_ne!(other.sessions.values().next().map(|s| &s.hash), observed.sessions.values().next().map(|s| &s.hash));
        let mut changed = state(spec(&[("T", known("d2"))]));
        settle_unknown(&mut changed, &observed);
        assert_ne!(changed, observed);

        // With two secrets, one unknown and one known to have changed: the change still shows.
        let observed = state(spec(&[
            ("T", known("d1")),
            ("U", EnvSpec::FromFile { path: "/u".into(), digest: Some("e1".into()) }),
        ]));
        let mut desired = state(spec(&[("T", known("d2")), ("U", EnvSpec::from_file("/u"))]));
        settle_unknown(&mut desired, &observed);
        assert_ne!(desired, observed);
        let mut desired = state(spec(&[("T", known("d1")), ("U", EnvSpec::from_file("/u"))]));
        settle_unknown(&mut desired, &observed);
        assert_eq!(desired, observed);
    }

    #[test]
    fn secrets_show_as_sensitive_and_a_value_change_says_so() {
        use crate::plan::fields::{env_field, is_secret_change, reason, secret_changes};
        let field = env_field(&known("d1"));
        assert_eq!(field, serde_json::json!({"from_env": "TOKEN", "value": "(sensitive)"}));
        assert!(!field.to_string().contains("d1"));
        assert_eq!(env_field(&EnvSpec::Value("1".into())), serde_json::json!({"value": "1"}));

        let changes = secret_changes(&spec(&[("T", known("d1"))]), &spec(&[("T", known("d2"))]));
        assert_eq!(changes.len(), 1);
        assert!(is_secret_change(&changes[0]));
        assert_eq!(reason(&changes[0]), "`env.T`: (sensitive) → (sensitive) (the secret's value changed)");
        assert!(secret_changes(&spec(&[("T", known("d1"))]), &spec(&[("T", known("d1"))])).is_empty());
        assert!(secret_changes(&spec(&[("T", known("d1"))]), &spec(&[("T", EnvSpec::from_env("TOKEN"))])).is_empty());
        let upgrade = secret_changes(&spec(&[("T", EnvSpec::from_env("TOKEN"))]), &spec(&[("T", known("d1"))]));
        assert_eq!(upgrade.len(), 1);
        assert!(is_secret_change(&upgrade[0]));
        assert!(reason(&upgrade[0]).contains("recorded no digest"), "{}", reason(&upgrade[0]));
    }

    #[test]
    fn a_plan_shows_a_changed_secret_as_sensitive_and_never_its_digest() {
        let observed = state(spec(&[("T", known("d1digest")), ("A", EnvSpec::Value("1".into()))]));
        let desired = state(spec(&[("T", known("d2digest")), ("A", EnvSpec::Value("2".into()))]));
        let graph = crate::graph::ResourceGraph::default();
        let plan = crate::plan::diff(&[(&desired, &observed, &graph)]);
        let text = crate::plan::render_text(&plan);
        assert!(text.contains("-/+ session:job-a"), "{text}");
        assert!(text.contains("`env.T`: (sensitive) → (sensitive) (the secret's value changed)"), "{text}");
        assert!(text.contains("`env.A`"), "{text}");
        for rendered in [text, crate::plan::render_json(&plan), crate::plan::render_markdown(&plan)] {
            assert!(!rendered.contains("d1digest") && !rendered.contains("d2digest"), "{rendered}");
        }
    }

    fn secrets(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn redacted(message: &str, pairs: &[(String, String)]) -> String {
        redact(message, pairs.iter().map(|(k, v)| (k, v)))
    }

    #[test]
    fn redaction_replaces_every_value() {
        let s = secrets(&[("X", "hunter22"), ("Y", "hunter2"), ("Z", "")]);
        assert_eq!(redacted("env X=hunter22 and Y=hunter2 refused", &s), "env X=(sensitive) and Y=(sensitive) refused");
    }

    #[test]
    fn redaction_recognises_the_forms_engines_echo() {
        let value = "pl4nted\"q'\\b\nline\u{0}tail\u{1b}<é>";
        let s = secrets(&[("TOKEN", value)]);
        // runc, as captured from Docker 20.10: Go's %q of the variable, inside a JSON body that bollard
        // decodes; the second message is that body still encoded.
        let go = "error during container init: environment variable value can't contain null(\\x00): \
                  \"TOKEN=pl4nted\\\"q'\\\\b\\nline\\x00tail\\x1b<é>\": unknown";
        let body = serde_json::to_string(go).unwrap_or_default();
        let serde = format!("{{\"env\":[{}]}}", serde_json::to_string(&format!("TOKEN={value}")).unwrap_or_default());
        let ascii = "\"TOKEN=pl4nted\\\"q'\\\\b\\nline\\x00tail\\x1b<\\u00e9>\"";
        let go_json = "TOKEN=pl4nted\\\"q'\\\\b\\nline\\u0000tail\\u001b\\u003c\u{e9}\\u003e";
        for message in [go, body.as_str(), &serde, ascii, go_json] {
            let out = redacted(message, &s);
            assert!(!out.contains("pl4nted") && !out.contains("tail"), "{message}\n→ {out}");
            assert!(out.contains("TOKEN=(sensitive)"), "{out}");
        }
        assert!(redacted(go, &s).ends_with("\": unknown"), "the rest of a recognised message stays");
    }

    #[test]
    fn an_echoed_environment_in_an_unknown_form_is_withheld() {
        let s = secrets(&[("TOKEN", "s3cret")]);
        // Some form bai does not know (here: every character doubled) after the variable's name.
        let out = redacted("refused env [A=1 TOKEN=ss33ccrreett B=2]", &s);
        assert_eq!(out, "refused env [A=1 TOKEN=(sensitive: the rest of the engine's message is withheld)");
        // A name that merely ends in the secret's is not it; a redacted value is left as it is.
        assert_eq!(redacted("MY_TOKEN=1 TOKEN=s3cret", &s), "MY_TOKEN=1 TOKEN=(sensitive)");
        assert_eq!(redacted("no environment here", &s), "no environment here");
    }

    #[test]
    fn escaped_forms_cover_go_json_and_backslashes() {
        let forms = escaped_forms("a\"b\\c\nd\u{0}");
        for form in ["a\"b\\c\nd\u{0}", "a\\\"b\\\\c\\nd\\x00", "a\\\"b\\\\c\\nd\\u0000", "a\\\"b\\\\c\\nd\\u0000"] {
            assert!(forms.iter().any(|f| f == form), "{form:?} missing from {forms:?}");
        }
        assert!(forms.iter().any(|f| f == "a%22b%5Cc%0Ad%00"));
        assert!(escaped_forms("x\u{2028}").iter().any(|f| f == "x\\u2028"));
        assert!(escaped_forms("x\u{10ffff}").iter().any(|f| f == "x\\U0010ffff"));
        assert!(
            escaped_forms("x\u{8}").iter().any(|f| f == "x\\b")
                && escaped_forms("x\u{8}").iter().any(|f| f == "x\\u0008")
        );
    }
}
