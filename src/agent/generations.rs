//! The node's generation records of a cluster: `generations/<cluster>/<N>.json`, one per generation that
//! touched the node, each written atomically (temporary file, then rename), and `index.json` with the
//! lowest number ever pruned. The newest record is the node's current generation.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::generation::{GenerationRecord, to_prune};
use crate::protocol::{ErrorKind, ListGenerationsReply, RpcError};

const INDEX: &str = "index.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Index {
    lowest_pruned: Option<u64>,
}

fn failed(path: &Path, e: impl std::fmt::Display) -> RpcError {
    RpcError::new(ErrorKind::Failed, format!("cannot use `{}`: {e}", path.display())).with_code("bai::agent::records")
}

fn file(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number}.json"))
}

fn write_atomically(path: &Path, text: &str) -> Result<(), RpcError> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| failed(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| failed(path, e))
}

/// The kept record numbers, oldest first.
pub fn numbers(dir: &Path) -> Result<Vec<u64>, RpcError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(failed(dir, e)),
    };
    let mut out: Vec<u64> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json")?.parse().ok())
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// The node's current generation: its newest record.
pub fn current(dir: &Path) -> Result<Option<u64>, RpcError> {
    Ok(numbers(dir)?.last().copied())
}

fn index(dir: &Path) -> Result<Index, RpcError> {
    let path = dir.join(INDEX);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| failed(&path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
        Err(e) => Err(failed(&path, e)),
    }
}

/// One record; a number the node does not hold is refused.
pub fn get(dir: &Path, number: u64) -> Result<GenerationRecord, RpcError> {
    let path = file(dir, number);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| failed(&path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(RpcError::new(ErrorKind::Refused, format!("this node holds no generation {number}")))
        }
        Err(e) => Err(failed(&path, e)),
    }
}

/// Summaries of the kept records, oldest first, and the lowest number pruned.
pub fn list(dir: &Path) -> Result<ListGenerationsReply, RpcError> {
    let generations = numbers(dir)?.into_iter().map(|n| get(dir, n).map(|r| r.summary())).collect::<Result<_, _>>()?;
    Ok(ListGenerationsReply { generations, lowest_pruned: index(dir)?.lowest_pruned })
}

/// Stores `record` and prunes to the newest `keep`; returns the numbers pruned. Numbers only grow: a
/// record at or below the node's current generation is refused (two controllers cannot both hold the
/// lease, so this means a confused caller, not a race).
pub fn record(dir: &Path, record: &GenerationRecord, keep: u64) -> Result<Vec<u64>, RpcError> {
    if record.number == 0 {
        return Err(RpcError::new(ErrorKind::BadRequest, "generations are numbered from 1"));
    }
    if let Some(current) = current(dir)?
        && record.number <= current
    {
        return Err(RpcError::new(
            ErrorKind::Refused,
            format!("generation {} is not newer than this node's current generation {current}", record.number),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    let path = file(dir, record.number);
    let text = serde_json::to_string_pretty(record).map_err(|e| failed(&path, e))?;
    write_atomically(&path, &text)?;
    let pruned = to_prune(&numbers(dir)?, keep);
    if let Some(&lowest) = pruned.first() {
        // The index first: a crash between the two leaves a kept record counted as pruned, which only
        // makes a rollback more careful, never wrong.
        let mut idx = index(dir)?;
        idx.lowest_pruned = Some(idx.lowest_pruned.map_or(lowest, |l| l.min(lowest)));
        let text = serde_json::to_string(&idx).map_err(|e| failed(&dir.join(INDEX), e))?;
        write_atomically(&dir.join(INDEX), &text)?;
    }
    for n in &pruned {
        let path = file(dir, *n);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(&path, e)),
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::Meta;

    fn rec(number: u64) -> GenerationRecord {
        GenerationRecord {
            number,
            cluster: "lab".into(),
            node: "a".into(),
            meta: Meta {
                applied_at: "2026-11-25T00:00:00Z".into(),
                applied_by: "me".into(),
                bai_version: "0.1.0".into(),
                config_hash: "00".into(),
                lock: None,
                plan_id: None,
                rollback_of: None,
            },
            enrolled: true,
            labels: Default::default(),
            images: Default::default(),
            vfolders: Default::default(),
            sessions: Default::default(),
        }
    }

    #[test]
    fn records_are_kept_listed_and_pruned_oldest_first() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("generations/lab");
        assert_eq!(current(&dir), Ok(None));
        for n in [1, 2, 4] {
            assert_eq!(record(&dir, &rec(n), 10), Ok(vec![]));
        }
        assert_eq!(current(&dir), Ok(Some(4)));
        assert_eq!(get(&dir, 2).map(|r| r.number), Ok(2));
        assert_eq!(get(&dir, 3).map_err(|e| e.kind), Err(ErrorKind::Refused));
        assert_eq!(record(&dir, &rec(4), 10).map_err(|e| e.kind), Err(ErrorKind::Refused), "numbers only grow");
        assert_eq!(record(&dir, &rec(5), 2), Ok(vec![1, 2]));
        let listed = list(&dir).expect("lists");
        assert_eq!(listed.generations.iter().map(|s| s.number).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(listed.lowest_pruned, Some(1));
        assert_eq!(record(&dir, &rec(6), 1), Ok(vec![4, 5]));
        assert_eq!(list(&dir).expect("lists").lowest_pruned, Some(1));
        assert_eq!(numbers(&dir), Ok(vec![6]));
    }
}
