//! The Kubernetes probe model: a verdict flips to bad after `failure` consecutive misses and back to
//! good after `success` consecutive answers. Before either run completes the verdict is unknown.

/// Consecutive results and the verdict they support.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threshold {
    failure: u32,
    success: u32,
    good: Option<bool>,
    misses: u32,
    answers: u32,
}

impl Threshold {
    /// Thresholds below 1 are read as 1: one result always counts.
    pub fn new(failure: u32, success: u32) -> Self {
        Threshold { failure: failure.max(1), success: success.max(1), good: None, misses: 0, answers: 0 }
    }

    /// The verdict: `Some(true)` good, `Some(false)` bad, `None` not yet known.
    pub fn verdict(&self) -> Option<bool> {
        self.good
    }

    /// Consecutive misses so far (0 after an answer).
    pub fn misses(&self) -> u32 {
        self.misses
    }

    /// Records one result; returns the new verdict when it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.answers += 1;
            self.misses = 0;
            if self.good != Some(true) && self.answers >= self.success {
                self.good = Some(true);
                return self.good;
            }
        } else {
            self.misses += 1;
            self.answers = 0;
            if self.good != Some(false) && self.misses >= self.failure {
                self.good = Some(false);
                return self.good;
            }
        }
        None
    }

    /// New thresholds (after a reload) keep the counts and the verdict.
    pub fn retune(&mut self, failure: u32, success: u32) {
        self.failure = failure.max(1);
        self.success = success.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_bad_after_the_failure_threshold_and_good_after_the_success_threshold() {
        let mut t = Threshold::new(3, 2);
        assert_eq!(t.verdict(), None);
        assert_eq!(t.record(true), None, "one answer of two needed");
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.misses(), 2);
        assert_eq!(t.record(false), Some(false));
        assert_eq!(t.record(false), None, "already bad: no new transition");
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None, "an answer run is broken by a miss");
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
    }

    #[test]
    fn an_interrupted_miss_run_starts_over() {
        let mut t = Threshold::new(2, 1);
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
    }

    #[test]
    fn unknown_resolves_either_way_and_zero_thresholds_mean_one() {
        let mut t = Threshold::new(0, 0);
        assert_eq!(t.record(false), Some(false));
        let mut t = Threshold::new(3, 1);
        t.retune(1, 1);
        assert_eq!(t.record(false), Some(false));
    }
}
