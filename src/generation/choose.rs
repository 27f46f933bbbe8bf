//! Which record: a node's at generation N (its newest numbered N or less), the target of a rollback, and
//! the generations a node prunes beyond `generations keep=`.

use super::*;

/// Where a node stands for a rollback to generation N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Its state at N is this record.
    Record(u64),
    /// It held nothing of the cluster at N.
    Empty,
    /// Its record for N was pruned: it cannot be restored. `oldest` is its oldest kept record.
    Pruned { oldest: Option<u64> },
}

/// A node's state at `target` from its kept record numbers and the lowest number it ever pruned.
pub fn pick(kept: &[u64], lowest_pruned: Option<u64>, target: u64) -> Pick {
    if let Some(&n) = kept.iter().filter(|&&n| n <= target).max() {
        return Pick::Record(n);
    }
    // Pruning takes the oldest first: a pruned number at or below N was the node's state at N.
    match lowest_pruned {
        Some(p) if p <= target => Pick::Pruned { oldest: kept.iter().min().copied() },
        _ => Pick::Empty,
    }
}

/// The generation a rollback goes to: `--to N` (which must exist: at most the current), else the highest
/// number below the current one that some node still holds.
pub fn target(known: &BTreeSet<u64>, to: Option<u64>) -> Result<u64, String> {
    let Some(&current) = known.iter().max() else {
        return Err("no generation is recorded yet: `bai apply` records one".into());
    };
    match to {
        Some(0) => Err("generations are numbered from 1".into()),
        Some(n) if n > current => Err(format!("there is no generation {n}: the current one is {current}")),
        Some(n) => Ok(n),
        None => known
            .range(..current)
            .next_back()
            .copied()
            .ok_or_else(|| format!("generation {current} is the only one kept: there is nothing before it")),
    }
}

/// The numbers to prune so that the newest `keep` remain; the newest is never pruned.
pub fn to_prune(kept: &[u64], keep: u64) -> Vec<u64> {
    let mut sorted: Vec<u64> = kept.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let keep = keep.max(1) as usize;
    let cut = sorted.len().saturating_sub(keep);
    sorted.truncate(cut);
    sorted
}
