//! The plan as a person reads it in a terminal or a CI log.

use std::collections::HashMap;
use std::fmt::Write;

use crate::gpu::place::DeviceView;
use crate::graph::Kind;
use crate::model::ClusterName;
use crate::plan::{Action, Plan};

/// Renders the plan: per cluster, each change with its sign, id and reasons, then the summary line.
pub fn render_text(plan: &Plan) -> String {
    let mut out = String::with_capacity(plan.changes.len() * 96 + 256);
    let placed: HashMap<(&ClusterName, &str), &[DeviceView]> =
        plan.gpus.iter().map(|g| ((&g.cluster, g.session.as_str()), g.devices.as_slice())).collect();
    for cluster in &plan.clusters {
        let changes: Vec<_> = plan.changes.iter().filter(|c| &c.cluster == cluster).collect();
        if changes.is_empty() {
            let _ = writeln!(out, "cluster `{cluster}`: no changes\n");
            continue;
        }
        let _ = writeln!(out, "cluster `{cluster}`:\n");
        for c in changes {
            let _ = write!(out, "  {:>3} {}", c.action.sign(), c.id);
            if !c.risks.is_empty() {
                let risks: Vec<&str> = c.risks.iter().map(|r| r.describe()).collect();
                let _ = write!(out, "  (!) {}", risks.join(", "));
            }
            out.push('\n');
            for reason in &c.reasons {
                let mark = match c.action {
                    Action::Update | Action::Replace if !c.fields.is_empty() => "~ ",
                    _ => "",
                };
                let _ = writeln!(out, "        {mark}{reason}");
            }
            // What a session being made gets, spelled out: the field shows ids only.
            if c.id.kind == Kind::Session && matches!(c.action, Action::Create | Action::Replace) {
                for d in placed.get(&(cluster, c.id.name.as_str())).copied().unwrap_or_default() {
                    let _ = writeln!(out, "        gpu: {}", d.describe());
                }
            }
        }
        out.push('\n');
    }
    out.push_str(&plan.summary().line());
    out.push('\n');
    out
}
