//! The plan as one pull-request comment: a summary heading; a warning listing the risky changes; per
//! cluster, a collapsible section per node with a `diff` block (GitHub colours creates green and deletes
//! red; `!` marks in-place and replacing changes, as tfcmt does); then a Mermaid graph of the changed
//! resources and what depends on them.
//!
//! The text is a function of the plan alone, byte for byte: everything is iterated in plan order or
//! sorted, and Mermaid ids are numbered in sorted order of the resources they stand for.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::graph::{ResourceId, mermaid_text};
use crate::model::ClusterName;
use crate::plan::{Action, Change, Plan, Risk};

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
    risk_block(plan, &mut out);
    for cluster in &plan.clusters {
        let changes: Vec<&Change> = plan.changes.iter().filter(|c| &c.cluster == cluster).collect();
        if changes.is_empty() {
            let _ = writeln!(out, "#### Cluster `{cluster}`: no changes\n");
            continue;
        }
        let _ = writeln!(out, "#### Cluster `{cluster}`\n");
        node_sections(&changes, &mut out);
        mermaid(plan, cluster, &changes, &mut out);
    }
    out
}

/// A GitHub alert naming every risky change, by risk; nothing when the plan has none.
fn risk_block(plan: &Plan, out: &mut String) {
    let risky = plan.risks();
    if risky.is_empty() {
        return;
    }
    let several_clusters = plan.clusters.len() > 1;
    let mut by_risk: BTreeMap<Risk, Vec<String>> = BTreeMap::new();
    for (risk, c) in risky {
        let id = if several_clusters { format!("`{}` (`{}`)", c.id, c.cluster) } else { format!("`{}`", c.id) };
        by_risk.entry(risk).or_default().push(id);
    }
    out.push_str("> [!WARNING]\n> This plan:\n");
    for (risk, ids) in by_risk {
        let _ = writeln!(out, "> - **{}**: {}", risk.describe(), ids.join(", "));
    }
    out.push('\n');
}

fn sign(action: Action) -> &'static str {
    match action {
        Action::Create => "+",
        Action::Delete => "-",
        Action::Update | Action::Replace => "!",
    }
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Create => "create",
        Action::Update => "update",
        Action::Replace => "replace",
        Action::Delete => "delete",
    }
}

/// One `<details>` per node, in node order (changes of no node last), opened where a change is risky.
fn node_sections(changes: &[&Change], out: &mut String) {
    let mut by_node: BTreeMap<Option<&str>, Vec<&Change>> = BTreeMap::new();
    for c in changes {
        by_node.entry(c.node.as_deref()).or_default().push(c);
    }
    // `None` sorts first in a BTreeMap; a cluster-wide section reads better after the nodes.
    let mut sections: Vec<_> = by_node.into_iter().collect();
    sections.sort_by_key(|(node, _)| node.is_none());
    for (node, changes) in sections {
        let mut counts = [0usize; 4];
        for c in &changes {
            counts[c.action as usize] += 1;
        }
        let counted: Vec<String> = [Action::Create, Action::Update, Action::Replace, Action::Delete]
            .into_iter()
            .filter(|a| counts[*a as usize] > 0)
            .map(|a| format!("{} to {}", counts[a as usize], verb(a)))
            .collect();
        let risks: BTreeSet<Risk> = changes.iter().flat_map(|c| c.risks.iter().copied()).collect();
        let name = match node {
            Some(n) => format!("node <code>{}</code>", html(n)),
            None => "cluster-wide".to_string(),
        };
        let mut title = format!("{name}: {}", counted.join(", "));
        if !risks.is_empty() {
            let words: Vec<&str> = risks.iter().map(|r| r.describe()).collect();
            let _ = write!(title, " ⚠️ {}", words.join(", "));
        }
        let open = if risks.is_empty() { "" } else { " open" };
        let _ = writeln!(out, "<details{open}><summary>{title}</summary>\n\n```diff");
        for c in changes {
            let sign = sign(c.action);
            let _ = write!(out, "{sign} {} ({})", c.id, verb(c.action));
            if !c.risks.is_empty() {
                let words: Vec<&str> = c.risks.iter().map(|r| r.describe()).collect();
                let _ = write!(out, " (!) {}", words.join(", "));
            }
            out.push('\n');
            for reason in &c.reasons {
                let _ = writeln!(out, "{sign}     {}", reason.replace('`', ""));
            }
        }
        out.push_str("```\n\n</details>\n\n");
    }
}

/// A Mermaid label is quoted and may hold HTML or, between backticks, Markdown: write those characters
/// as entities so that an odd name shows as itself.
fn label_text(s: &str) -> String {
    mermaid_text(s).replace('<', "#lt;").replace('>', "#gt;").replace('`', "#96;")
}

/// Escapes the few characters that would otherwise be read as HTML inside `<summary>`.
fn html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The Mermaid class of each kind of vertex, with its style: GitHub's diff colours, a dashed outline
/// for what goes away, grey for an unchanged dependant.
const CLASSES: [(&str, &str); 5] = [
    ("create", "fill:#dafbe1,stroke:#1a7f37,color:#1f2328"),
    ("update", "fill:#fff8c5,stroke:#9a6700,color:#1f2328"),
    ("replace", "fill:#fff1e5,stroke:#bc4c00,color:#1f2328"),
    ("delete", "fill:#ffebe9,stroke:#cf222e,color:#1f2328,stroke-dasharray: 5 5"),
    ("dependant", "fill:#f6f8fa,stroke:#8c959f,color:#1f2328"),
];

/// GitHub's Mermaid refuses a graph of more than 500 edges, and a comment holds 65536 characters: beyond
/// these the graph is left out rather than broken.
const MAX_EDGES: usize = 400;
const MAX_VERTICES: usize = 250;

/// A `graph LR` of the cluster's changed resources and their dependants, edges dependency → dependant.
fn mermaid(plan: &Plan, cluster: &ClusterName, changes: &[&Change], out: &mut String) {
    let changed: BTreeMap<&ResourceId, &Change> = changes.iter().map(|c| (&c.id, *c)).collect();
    let edges: Vec<(&ResourceId, &ResourceId)> =
        plan.edges.iter().filter(|e| &e.cluster == cluster).map(|e| (&e.from, &e.to)).collect();
    let mut vertices: BTreeSet<&ResourceId> = changed.keys().copied().collect();
    vertices.extend(edges.iter().flat_map(|(a, b)| [*a, *b]));
    if edges.len() > MAX_EDGES || vertices.len() > MAX_VERTICES {
        let _ = writeln!(
            out,
            "The {} changed resources and their dependants ({} edges) are too many to draw here; \
             `bai graph --format mermaid` draws the whole lab.\n",
            vertices.len(),
            edges.len()
        );
        return;
    }
    let ids: BTreeMap<&ResourceId, String> = vertices.iter().enumerate().map(|(i, v)| (*v, format!("n{i}"))).collect();

    out.push_str(
        "The changed resources and what depends on them (green create, yellow update, orange replace, \
         red dashed delete, grey unchanged):\n\n```mermaid\ngraph LR\n",
    );
    let mut classes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for v in &vertices {
        let id = &ids[v];
        let (label, class) = match changed.get(v) {
            Some(c) => {
                let warn = if c.risks.is_empty() { "" } else { "⚠️ " };
                (format!("{warn}{v} ({})", verb(c.action)), verb(c.action))
            }
            None => (v.to_string(), "dependant"),
        };
        let _ = writeln!(out, "    {id}[\"{}\"]", label_text(&label));
        classes.entry(class).or_default().push(id);
    }
    for (a, b) in &edges {
        let _ = writeln!(out, "    {} --> {}", ids[a], ids[b]);
    }
    for (name, style) in CLASSES {
        let _ = writeln!(out, "    classDef {name} {style}");
    }
    for (name, _) in CLASSES {
        if let Some(members) = classes.get(name) {
            let _ = writeln!(out, "    class {} {name}", members.join(","));
        }
    }
    out.push_str("```\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Edge, FieldChange};

    fn change(id: ResourceId, node: Option<&str>, action: Action, risks: Vec<Risk>) -> Change {
        Change {
            reasons: vec!["`quota`: 1GiB → 2GiB".into()],
            fields: vec![FieldChange { path: "quota".into(), before: Some(1.into()), after: Some(2.into()) }],
            risks,
            ..Change::new(ClusterName("lab".into()), id, node.map(str::to_string), action)
        }
    }

    fn plan() -> Plan {
        let lab = ClusterName("lab".into());
        Plan {
            clusters: vec![lab.clone()],
            changes: vec![
                change(ResourceId::vfolder("ckpt"), Some("n1"), Action::Update, vec![]),
                change(ResourceId::session("tr\"ain"), Some("n1"), Action::Replace, vec![Risk::InterruptsGpuSession]),
                change(ResourceId::node("a<b"), None, Action::Delete, vec![Risk::RemovesNode]),
            ],
            edges: vec![
                Edge { cluster: lab.clone(), from: ResourceId::vfolder("ckpt"), to: ResourceId::session("tr\"ain") },
                Edge { cluster: lab, from: ResourceId::session("tr\"ain"), to: ResourceId::session("report") },
            ],
            gpus: Vec::new(),
        }
    }

    #[test]
    fn no_changes_is_one_line_of_news() {
        let empty = Plan { clusters: vec![ClusterName("lab".into())], ..Plan::default() };
        assert_eq!(render_markdown(&empty), "### bai plan: no changes\n\nThe nodes already match the configuration.\n");
    }

    #[test]
    fn the_same_plan_renders_the_same_bytes() {
        assert_eq!(render_markdown(&plan()), render_markdown(&plan().clone()));
    }

    #[test]
    fn sections_risks_and_graph() {
        let md = render_markdown(&plan());
        assert!(md.contains("> [!WARNING]\n> This plan:\n> - **interrupts a running GPU session**: `session:tr\"ain`\n> - **removes a node**: `node:a<b`\n"), "{md}");
        // Nodes in order, changes of no node last; a risky section is open, a quiet one closed.
        let n1 = md.find("<details open><summary>node <code>n1</code>: 1 to update, 1 to replace ⚠️ interrupts a running GPU session</summary>");
        let wide = md.find("<details open><summary>cluster-wide: 1 to delete ⚠️ removes a node</summary>");
        assert!(n1.is_some() && wide.is_some() && n1 < wide, "{md}");
        assert!(
            md.contains("! session:tr\"ain (replace) (!) interrupts a running GPU session\n!     quota: 1GiB → 2GiB\n"),
            "{md}"
        );
        // Mermaid ids follow the sorted resources; quotes in labels become entities; dependency → dependant.
        for line in [
            "    n0[\"⚠️ node:a#lt;b (delete)\"]\n",
            "    n1[\"vfolder:ckpt (update)\"]\n",
            "    n2[\"session:report\"]\n",
            "    n3[\"⚠️ session:tr#quot;ain (replace)\"]\n",
            "    n1 --> n3\n    n3 --> n2\n",
            "    class n0 delete\n",
            "    class n2 dependant\n",
        ] {
            assert!(md.contains(line), "{line} missing:\n{md}");
        }
    }

    #[test]
    fn a_graph_too_large_for_github_is_left_out() {
        let lab = ClusterName("lab".into());
        let mut p = plan();
        p.changes.truncate(1);
        p.edges = (0..=MAX_EDGES)
            .map(|i| Edge {
                cluster: lab.clone(),
                from: ResourceId::vfolder("ckpt"),
                to: ResourceId::session(&format!("job-{i:03}")),
            })
            .collect();
        let md = render_markdown(&p);
        assert!(!md.contains("```mermaid"), "{md}");
        assert!(md.contains("The 402 changed resources and their dependants (401 edges) are too many"), "{md}");
    }

    #[test]
    fn a_quiet_node_is_collapsed() {
        let mut p = plan();
        p.changes.truncate(1);
        p.edges.clear();
        let md = render_markdown(&p);
        assert!(md.contains("<details><summary>node <code>n1</code>: 1 to update</summary>\n\n```diff\n"), "{md}");
        assert!(!md.contains("[!WARNING]"), "{md}");
    }
}
