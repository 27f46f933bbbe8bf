//! The plan for machines (schema/plan.schema.json).

use serde::Serialize;

use crate::plan::{Action, FieldChange, Plan, Summary};

#[derive(Serialize)]
struct JsonChange<'a> {
    cluster: &'a str,
    id: String,
    kind: crate::graph::Kind,
    node: Option<&'a str>,
    action: Action,
    reasons: &'a [String],
    fields: &'a [FieldChange],
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    format_version: u32,
    bai_version: &'static str,
    changes: Vec<JsonChange<'a>>,
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
                fields: &c.fields,
            })
            .collect(),
        summary: plan.summary(),
    };
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}
