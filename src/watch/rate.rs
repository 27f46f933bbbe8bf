//! The heal limit: at most `limit` heals of one session in any sliding minute, so that a session that
//! crashes as soon as it starts is reported, not recreated in a loop.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct HealLimit {
    limit: usize,
    recent: VecDeque<Instant>,
}

impl HealLimit {
    pub fn new(limit: usize) -> Self {
        HealLimit { limit, recent: VecDeque::new() }
    }

    /// Takes a slot at `now` when one is free; `false` when the last minute already had `limit` heals.
    pub fn try_take(&mut self, now: Instant) -> bool {
        while self.recent.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.limit {
            return false;
        }
        self.recent.push_back(now);
        true
    }

    /// When the next slot frees up, if none is free now.
    pub fn free_at(&self) -> Option<Instant> {
        (self.recent.len() >= self.limit).then(|| self.recent.front().map(|t| *t + WINDOW)).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_limit_heals_per_sliding_minute() {
        let start = Instant::now();
        let mut limit = HealLimit::new(2);
        assert!(limit.try_take(start));
        assert!(limit.try_take(start + Duration::from_secs(10)));
        assert!(!limit.try_take(start + Duration::from_secs(20)));
        assert_eq!(limit.free_at(), Some(start + WINDOW));
        assert!(!limit.try_take(start + Duration::from_secs(59)));
        assert!(limit.try_take(start + Duration::from_secs(60)), "the first heal left the window");
        assert!(!limit.try_take(start + Duration::from_secs(61)));
    }

    #[test]
    fn a_zero_limit_never_heals() {
        let mut limit = HealLimit::new(0);
        assert!(!limit.try_take(Instant::now()));
    }
}
