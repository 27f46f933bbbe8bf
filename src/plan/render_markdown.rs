//! The plan as one pull-request comment: a summary heading, then a `diff` block per cluster so that
//! GitHub colours creates green and deletes red (`!` marks in-place and replacing changes, as tfcmt does).

use std::fmt::Write;

use crate::plan::{Action, Plan};

pub fn render_markdown(plan: &Plan) -> String {
    let summary = plan.summary();
    let mut out = String::new();
    if summary.is_empty() {
        out.push_str("### bai plan: no changes\n\nThe nodes already match the configuration.\n");
        return out;
    }
    let _ = writeln!(
        out,
        "### bai plan: {} to create, {} to update, {} to replace, {} to delete\n",
        summary.create, summary.update, summary.replace, summary.delete
    );
    for cluster in &plan.clusters {
        let changes: Vec<_> = plan.changes.iter().filter(|c| &c.cluster == cluster).collect();
        if changes.is_empty() {
            let _ = writeln!(out, "#### Cluster `{cluster}`: no changes\n");
            continue;
        }
        let _ = writeln!(out, "#### Cluster `{cluster}`\n\n```diff");
        for c in changes {
            let sign = match c.action {
                Action::Create => "+",
                Action::Delete => "-",
                Action::Update => "!",
                Action::Replace => "!",
            };
            let verb = match c.action {
                Action::Create => "create",
                Action::Update => "update",
                Action::Replace => "replace",
                Action::Delete => "delete",
            };
            let _ = writeln!(out, "{sign} {} ({verb})", c.id);
            for reason in &c.reasons {
                let _ = writeln!(out, "{sign}     {}", reason.replace('`', ""));
            }
        }
        out.push_str("```\n\n");
    }
    out
}
