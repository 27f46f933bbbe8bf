//! What a watched node is held to: the watched file, or a generation that another controller recorded
//! on the node since — an apply of another version of the lab, a `bai destroy`, a rollback. A running
//! watcher must take such a change as the new truth, not as drift to heal back (a `watch --heal` that
//! recreated what `bai destroy` had just removed would make destroy useless).
//!
//! The rule: each version of the watched file is held against the generation the node had when that
//! version was first compared with it (its baseline). A newer generation whose sessions are the file's
//! (the operator applied this very file) moves the baseline; any other newer generation supersedes the
//! file on that node until the file changes again. A generation that destroyed the cluster on the node
//! supersedes the file even at its baseline: destroy stands until someone applies again.
//!
//! Pure: the node's task fetches the records this asks for.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::generation::GenerationRecord;

/// One generation as recorded on the node, as far as the watcher cares. When it is the one the node is
/// held to instead of the file, it is "superseding".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    pub generation: u64,
    /// Session name → spec hash, as the generation has them on this node.
    pub hashes: BTreeMap<String, String>,
    /// The generation removed the cluster from the node (`bai destroy`).
    pub destroyed: bool,
    pub applied_by: String,
    pub applied_at: String,
}

impl From<&GenerationRecord> for Landed {
    fn from(record: &GenerationRecord) -> Self {
        Landed {
            generation: record.number,
            hashes: record.sessions.iter().map(|(name, s)| (name.clone(), s.hash.clone())).collect(),
            destroyed: !record.enrolled,
            applied_by: record.meta.applied_by.clone(),
            applied_at: record.meta.applied_at.clone(),
        }
    }
}

/// The truth of one node; `V` is the watched file's version (compared by identity).
#[derive(Debug)]
pub struct Truth<V> {
    /// The file version, and the node's generation when that version was first compared with it.
    baseline: Option<(Arc<V>, Option<u64>)>,
    superseded: Option<Landed>,
    /// A record asked for and not yet taken in (asked again until it is).
    pending: Option<u64>,
}

impl<V> Default for Truth<V> {
    fn default() -> Self {
        Truth { baseline: None, superseded: None, pending: None }
    }
}

impl<V> Truth<V> {
    /// Takes in the generation one probe reported under file version `version`. Returns the number of
    /// a record the node's task must fetch and hand to [`Truth::record`] before judging drift.
    pub fn observe(&mut self, version: &Arc<V>, generation: Option<u64>) -> Option<u64> {
        let same_version = self.baseline.as_ref().is_some_and(|(v, _)| Arc::ptr_eq(v, version));
        if !same_version {
            self.baseline = Some((version.clone(), generation));
            self.superseded = None;
            // Only to see whether it is a destroy.
            self.pending = generation;
            return self.pending;
        }
        if self.pending.is_some() {
            return self.pending;
        }
        let baseline = self.baseline.as_ref().and_then(|(_, g)| *g);
        let following = self.superseded.as_ref().map(|s| s.generation);
        if let Some(g) = generation.filter(|g| Some(*g) != baseline && Some(*g) != following) {
            self.pending = Some(g);
        }
        self.pending
    }

    /// Takes in a fetched record, judged against `desired` (the file's session hashes on this node).
    /// Returns the generation when it newly supersedes the file, for the watcher to say so.
    pub fn record(&mut self, landed: Landed, desired: &BTreeMap<String, String>) -> Option<&Landed> {
        if self.pending == Some(landed.generation) {
            self.pending = None;
        }
        let (_, baseline) = self.baseline.as_mut()?;
        let at_baseline = *baseline == Some(landed.generation);
        // At the baseline only a destroy that left the file's sessions out holds the node.
        if at_baseline && (!landed.destroyed || desired.is_empty()) {
            return None;
        }
        if !at_baseline && !landed.destroyed && &landed.hashes == desired {
            // The file itself was applied: the node and the file agree again.
            *baseline = Some(landed.generation);
            self.superseded = None;
            return None;
        }
        if self.superseded.as_ref().is_some_and(|s| s.generation == landed.generation) {
            return None;
        }
        self.superseded = Some(landed);
        self.superseded.as_ref()
    }

    /// The generation the node is held to instead of the file, if any.
    pub fn superseded(&self) -> Option<&Landed> {
        self.superseded.as_ref()
    }

    /// The generation a heal expects to find on the node: another one means the node changed hands
    /// while the heal waited for its lease.
    pub fn expected(&self) -> Option<u64> {
        self.baseline.as_ref().and_then(|(_, g)| *g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn landed(generation: u64, destroyed: bool, sessions: &[(&str, &str)]) -> Landed {
        Landed {
            generation,
            hashes: desired(sessions),
            destroyed,
            applied_by: "alice@ws pid 7".into(),
            applied_at: "2026-12-05T00:00:00Z".into(),
        }
    }

    fn desired(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(n, h)| (n.to_string(), h.to_string())).collect()
    }

    #[test]
    fn the_file_is_the_truth_until_another_generation_lands() {
        let v1 = Arc::new(());
        let file = desired(&[("job", "h1")]);
        let mut t = Truth::default();
        assert_eq!(t.observe(&v1, Some(4)), Some(4), "the baseline is fetched once to see if it is a destroy");
        assert_eq!(t.observe(&v1, Some(4)), Some(4), "asked again until it is taken in");
        assert!(t.record(landed(4, false, &[("job", "old")]), &file).is_none(), "the file was loaded after it");
        assert_eq!(t.observe(&v1, Some(4)), None);
        assert_eq!(t.expected(), Some(4));

        // Another controller applies another version: the node follows it.
        assert_eq!(t.observe(&v1, Some(5)), Some(5));
        let s = t.record(landed(5, false, &[("job", "h2")]), &file).cloned().expect("superseded");
        assert_eq!((s.generation, s.destroyed, s.hashes), (5, false, desired(&[("job", "h2")])));
        assert_eq!(t.observe(&v1, Some(5)), None, "asked once");
        assert!(t.superseded().is_some());

        // The file changes: it is the truth again against generation 5.
        let v2 = Arc::new(());
        assert_eq!(t.observe(&v2, Some(5)), Some(5));
        assert!(t.record(landed(5, false, &[("job", "h2")]), &file).is_none());
        assert!(t.superseded().is_none());
        assert_eq!(t.expected(), Some(5));
    }

    #[test]
    fn applying_the_watched_file_moves_the_baseline() {
        let v = Arc::new(());
        let file = desired(&[("job", "h1")]);
        let mut t = Truth::default();
        assert_eq!(t.observe(&v, None), None, "a node with no generation yet");
        assert_eq!(t.observe(&v, Some(1)), Some(1));
        assert!(t.record(landed(1, false, &[("job", "h1")]), &file).is_none());
        assert!(t.superseded().is_none());
        assert_eq!(t.expected(), Some(1));
    }

    #[test]
    fn a_destroy_stands_until_an_apply_even_across_file_versions() {
        let v1 = Arc::new(());
        let file = desired(&[("job", "h1")]);
        let mut t = Truth::default();
        t.observe(&v1, Some(1));
        t.record(landed(1, false, &[("job", "h1")]), &file);
        assert_eq!(t.observe(&v1, Some(2)), Some(2));
        let s = t.record(landed(2, true, &[]), &file).cloned().expect("destroyed");
        assert!(s.destroyed && s.hashes.is_empty());
        let v2 = Arc::new(());
        assert_eq!(t.observe(&v2, Some(2)), Some(2));
        assert!(t.record(landed(2, true, &[]), &file).is_some(), "still destroyed under the new file");
        // A lab with nothing on this node is not held back by a destroy.
        let v3 = Arc::new(());
        t.observe(&v3, Some(2));
        assert!(t.record(landed(2, true, &[]), &desired(&[])).is_none());
        // An apply after the destroy that is the file's: the file again.
        assert_eq!(t.observe(&v3, Some(3)), Some(3));
        assert!(t.record(landed(3, false, &[]), &desired(&[])).is_none());
        assert!(t.superseded().is_none());
    }
}
