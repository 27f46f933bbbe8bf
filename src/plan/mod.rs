//! Plans: the changes that turn observed state into desired state, in graph order, and their renderings.

mod diff;
mod render_json;
mod render_markdown;
mod render_text;

pub use diff::diff;
pub use render_json::render_json;
pub use render_markdown::render_markdown;
pub use render_text::render_text;

use serde::Serialize;

use crate::graph::ResourceId;
use crate::model::ClusterName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
}

impl Action {
    /// The sign a plan shows before the resource id.
    pub fn sign(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }
}

/// One field that differs, with its values before and after (`None`: absent on that side).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub path: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub cluster: ClusterName,
    pub id: ResourceId,
    /// The node the change happens on.
    pub node: Option<String>,
    pub action: Action,
    /// Why, in words: one line each.
    pub reasons: Vec<String>,
    pub fields: Vec<FieldChange>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
}

impl Summary {
    pub fn is_empty(&self) -> bool {
        self.create + self.update + self.replace + self.delete == 0
    }

    pub fn line(&self) -> String {
        if self.is_empty() {
            return "No changes.".to_string();
        }
        format!(
            "Plan: {} to create, {} to update, {} to replace, {} to delete.",
            self.create, self.update, self.replace, self.delete
        )
    }
}

/// Every change for every cluster planned, in execution order within each cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub clusters: Vec<ClusterName>,
    pub changes: Vec<Change>,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.changes {
            match c.action {
                Action::Create => s.create += 1,
                Action::Update => s.update += 1,
                Action::Replace => s.replace += 1,
                Action::Delete => s.delete += 1,
            }
        }
        s
    }
}

/// A JSON value as a reviewer reads it: strings quoted, sizes and lists compact.
pub fn show_value(value: Option<&serde_json::Value>) -> String {
    match value {
        None => "(none)".to_string(),
        Some(v) => v.to_string(),
    }
}
