//! The plan for machines (schema/plan.schema.json).

use serde::Serialize;

use crate::plan::{Action, FieldChange, Plan, Risk, Summary};

#[derive(Serialize)]
struct JsonChange<'a> {
    cluster: &'a str,
    id: String,
    kind: crate::graph::Kind,
    node: Option<&'a str>,
    action: Action,
    reasons: &'a [String],
    fields: Vec<JsonField<'a>>,
    risks: &'a [Risk],
}

/// A field change with both sides always written, `null` when absent (the plan's own serde leaves an
/// absent side out).
#[derive(Serialize)]
struct JsonField<'a> {
    path: &'a str,
    before: Option<&'a serde_json::Value>,
    after: Option<&'a serde_json::Value>,
}

impl<'a> From<&'a FieldChange> for JsonField<'a> {
    fn from(f: &'a FieldChange) -> Self {
        JsonField { path: &f.path, before: f.before.as_ref(), after: f.after.as_ref() }
    }
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    format_version: u32,
    bai_version: &'static str,
    changes: Vec<JsonChange<'a>>,
    /// Every GPU session's placed devices.
    gpus: &'a [crate::plan::PlacedGpus],
    summary: Summary,
}

pub fn render_json(plan: &Plan) -> String {
    let doc = JsonPlan {
        format_version: 1,
        bai_version: env!("CARGO_PKG_VERSION"),
        changes: plan
            .changes
            .iter()
            .map(|c| JsonChange {
                cluster: c.cluster.as_str(),
                id: c.id.to_string(),
                kind: c.id.kind,
                node: c.node.as_deref(),
                action: c.action,
                reasons: &c.reasons,
                fields: c.fields.iter().map(JsonField::from).collect(),
                risks: &c.risks,
            })
            .collect(),
        gpus: &plan.gpus,
        summary: plan.summary(),
    };
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}
