//! The fields a plan compares and shows for a session (`resources.gpus`, `env.A`, …), and how a secret
//! reads among them: its reference and `(sensitive)`, never its value or digest, and a change of its
//! value as a change of its own.

use std::collections::BTreeMap;

use crate::plan::FieldChange;
use crate::secret::SENSITIVE;
use crate::state::spec::{EnvSpec, SessionSpec};

/// Converts a spec to the fields a plan compares and shows (`resources.gpus`, `env.A`, …).
pub fn session_fields(spec: &SessionSpec) -> BTreeMap<String, serde_json::Value> {
    fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
        serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
    }
    let mut fields = BTreeMap::new();
    fields.insert("image".into(), json(&spec.image));
    fields.insert("image_ref".into(), json(&spec.image_ref));
    fields.insert("image_digest".into(), json(&spec.image_digest));
    fields.insert("node".into(), json(&spec.node));
    fields.insert("command".into(), json(&spec.command));
    for (k, v) in &spec.env {
        // A secret shows its reference and `(sensitive)`, never its value or digest.
        fields.insert(format!("env.{k}"), env_field(v));
    }
    for m in &spec.mounts {
        fields.insert(
            format!("mounts.{}", m.destination),
            serde_json::json!({"vfolder": m.vfolder, "readonly": m.readonly}),
        );
    }
    fields.insert("resources.cpus".into(), json(&spec.resources.cpus));
    fields.insert("resources.memory".into(), json(&spec.resources.memory));
    fields.insert("resources.gpus".into(), json(&spec.resources.gpus));
    // The settings that came later are fields only when set: a plan shows `absent → value` for them.
    if !spec.resources.devices.is_empty() {
        fields.insert("resources.devices".into(), json(&spec.resources.devices));
    }
    if let Some(mig) = &spec.resources.mig {
        fields.insert("resources.mig".into(), json(mig));
    }
    for (k, v) in &spec.ports {
        fields.insert(format!("ports.{k}"), json(v));
    }
    for (k, v) in &spec.published {
        fields.insert(format!("ports.{k}.publish"), json(&format!("{}:{}", v.address, v.port)));
    }
    fields.insert("restart".into(), json(&spec.restart));
    if let Some(shm) = spec.shm_size {
        fields.insert("shm_size".into(), json(&shm));
    }
    for (k, v) in &spec.ulimits {
        fields.insert(format!("ulimits.{k}"), json(v));
    }
    if let Some(user) = &spec.user {
        fields.insert("user".into(), json(&format!("{}:{}", user.uid, user.gid)));
    }
    if let Some(network) = spec.network {
        fields.insert("network".into(), json(&network));
    }
    fields
}

/// An env variable as a plan shows it: a literal's value, a secret's reference with `(sensitive)` in
/// place of its value. The digest is left out: it changes when the value does, which
/// [`secret_changes`] reports without showing it.
pub fn env_field(env: &EnvSpec) -> serde_json::Value {
    match env {
        EnvSpec::Value(v) => serde_json::json!({ "value": v }),
        EnvSpec::FromEnv { var, .. } => serde_json::json!({ "from_env": var, "value": SENSITIVE }),
        EnvSpec::FromFile { path, .. } => serde_json::json!({ "from_file": path, "value": SENSITIVE }),
    }
}

/// How the before side of a secret reads when the node recorded no digest of it (a container made by a
/// bai from before digests): replaced once, and the plan says why.
const UNRECORDED: &str = "(sensitive, no digest recorded)";

/// The secrets whose value changed while their reference stayed: both digests known and different, or
/// one about to be recorded where the node has none. Shown as `(sensitive)`; [`reason`] words it.
pub fn secret_changes(before: &SessionSpec, after: &SessionSpec) -> Vec<FieldChange> {
    let mut out = Vec::new();
    for (name, b) in &before.env {
        let Some(a) = after.env.get(name) else { continue };
        if !b.is_secret() || b.with_digest(None) != a.with_digest(None) {
            continue;
        }
        let was = match (b.digest(), a.digest()) {
            (Some(old), Some(new)) if old != new => SENSITIVE,
            (None, Some(_)) => UNRECORDED,
            _ => continue,
        };
        out.push(FieldChange { path: format!("env.{name}"), before: Some(was.into()), after: Some(SENSITIVE.into()) });
    }
    out
}

/// Whether a field change is a secret's (as made by [`secret_changes`]).
pub fn is_secret_change(f: &FieldChange) -> bool {
    let is = |v: &Option<serde_json::Value>, what: &str| v.as_ref().and_then(serde_json::Value::as_str) == Some(what);
    f.path.starts_with("env.") && (is(&f.before, SENSITIVE) || is(&f.before, UNRECORDED)) && is(&f.after, SENSITIVE)
}

/// The plan's reason for a secret's change.
pub fn reason(f: &FieldChange) -> String {
    if f.before == f.after {
        format!("`{}`: {SENSITIVE} → {SENSITIVE} (the secret's value changed)", f.path)
    } else {
        format!(
            "`{}`: {SENSITIVE} → {SENSITIVE} (its container was made by an earlier bai that recorded no digest)",
            f.path
        )
    }
}
