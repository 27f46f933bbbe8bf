//! "Did you mean" suggestions for misspelt names, properties and nodes.

/// The candidate closest to `word`, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_lowercase();
    // Allow about one edit per three characters: `datset` → `datasets`, `gpu-1` → `gpu-01`; a word of one
    // or two characters is too short to guess from.
    let limit = word.chars().count() / 3;
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

/// A `help` line for an unknown name, or a list of what is allowed when nothing is close.
pub fn help_for<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str> + Clone, kind: &str) -> Option<String> {
    if let Some(best) = did_you_mean(word, candidates.clone()) {
        return Some(format!("did you mean `{best}`?"));
    }
    let mut all: Vec<&str> = candidates.into_iter().collect();
    if all.is_empty() || all.len() > 12 {
        return None;
    }
    all.sort_unstable();
    all.dedup();
    let list = all.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
    Some(format!("known {kind}: {list}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_words_are_suggested() {
        assert_eq!(did_you_mean("datset", ["datasets", "ckpt"]), Some("datasets"));
        assert_eq!(did_you_mean("gpu-1", ["gpu-01", "gpu-02"]), Some("gpu-01"));
        assert_eq!(did_you_mean("readonyl", ["alias", "readonly"]), Some("readonly"));
        assert_eq!(did_you_mean("zzz", ["datasets"]), None);
    }

    #[test]
    fn help_lists_small_sets() {
        assert_eq!(help_for("x", ["b", "a"], "properties").unwrap(), "known properties: `a`, `b`");
    }
}
