//! How much of an upload a node's sshd still holds, so that an upload never runs far ahead of the command
//! reading it.
//!
//! OpenSSH's sshd opens a session channel with a 2 MB window, so a sender may put a whole agent (0.9 MB
//! as zstd, 1.4 MB when this was measured) on the wire at once. sshd then keeps what the command has not read yet in one buffer that it grows by
//! copying (and zeroing the old copy) on every packet: measured here, a burst of 1.38 MB costs the node's
//! sshd 17 ms of CPU more than the same bytes sent no faster than `cat` takes them (56 against 39 ms for
//! the whole connection). Under load, when the node's unpacker waits for a core, the burst is the rule.
//!
//! The remedy is the SSH window itself: sshd tells how much the command consumed (`WINDOW_ADJUST`) once
//! more than three packets (96 KiB) wait unconsumed, and the uploader keeps what sshd holds unconsumed
//! under [`IN_FLIGHT`]. The handler files each channel's window as the server last gave it
//! ([`Windows`]); [`Window::in_flight`] reckons from it and from the window the upload started with.
//! That starting window is read once the exec was granted, not at the channel's opening: sshd opens a
//! session channel with no window at all and grants its 2 MB when the command starts.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use russh::ChannelId;
use tokio::sync::watch;

/// The most of an upload left unconsumed in sshd before the uploader waits. Above sshd's adjustment
/// threshold (three 32 KiB packets) with a chunk to spare, so that an adjustment always comes while the
/// uploader waits for one.
pub(super) const IN_FLIGHT: u64 = 384 * 1024;

/// The longest the uploader waits for an adjustment before it sends anyway: a server of another make may
/// adjust later than OpenSSH, and an upload must always progress.
pub(super) const PATIENCE: std::time::Duration = std::time::Duration::from_millis(100);

/// How many channels' windows are kept before those nobody watches are let go of.
const KEPT: usize = 64;

/// A channel's window as the server last gave it (at opening, or by its latest adjustment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Window {
    /// What the server still accepted then (what was sent before, subtracted).
    pub(super) remaining: u32,
}

impl Window {
    /// The bytes sent and not yet consumed by the remote command, for an upload that started with the
    /// window `capacity`: by the latest adjustment, plus `sent_since` sent after it was seen.
    pub(super) fn in_flight(&self, capacity: u32, sent_since: u64) -> u64 {
        u64::from(capacity.saturating_sub(self.remaining)) + sent_since
    }

    /// Whether keeping an upload that starts now to [`IN_FLIGHT`] means anything: a server whose own
    /// window is smaller bounds the upload itself.
    pub(super) fn worth_pacing(&self) -> bool {
        u64::from(self.remaining) > IN_FLIGHT
    }
}

/// The windows of a connection's open channels, filed by its handler. Keyed by russh's channel ids (any
/// key in tests, which cannot make one).
pub(super) struct Windows<K = ChannelId> {
    open: Mutex<HashMap<K, watch::Sender<Window>>>,
}

impl<K> Default for Windows<K> {
    fn default() -> Self {
        Windows { open: Mutex::new(HashMap::new()) }
    }
}

impl<K: std::hash::Hash + Eq> Windows<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, watch::Sender<Window>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Files a channel's window at its opening. The channel's owner may have asked to watch it already:
    /// russh hands over the open channel before it calls the handler.
    pub(super) fn opened(&self, id: K, window: u32) {
        let mut open = self.lock();
        // Channels bai closes first may never be reported closed; what nobody watches is let go of, so a
        // long-lived connection never holds more than a few.
        if open.len() >= KEPT {
            open.retain(|_, sender| sender.receiver_count() > 0);
        }
        open.entry(id).or_insert_with(fresh).send_modify(|w| w.remaining = window);
    }

    pub(super) fn adjusted(&self, id: K, remaining: u32) {
        // Sent even when alike: every adjustment wakes the uploader.
        if let Some(sender) = self.lock().get(&id) {
            sender.send_modify(|w| w.remaining = remaining);
        }
    }

    pub(super) fn closed(&self, id: K) {
        self.lock().remove(&id);
    }

    /// The window of an open channel, as it changes. Whoever watches calls [`closed`](Self::closed) when
    /// done: the channel may have closed before it began to.
    pub(super) fn watch(&self, id: K) -> watch::Receiver<Window> {
        self.lock().entry(id).or_insert_with(fresh).subscribe()
    }
}

/// A channel's window before the server said anything: nothing may be sent.
fn fresh() -> watch::Sender<Window> {
    watch::Sender::new(Window { remaining: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_what_the_server_has_not_credited_back() {
        let capacity = 2 << 20;
        let w = Window { remaining: capacity };
        assert_eq!(w.in_flight(capacity, 0), 0);
        assert_eq!(w.in_flight(capacity, 65536), 65536);
        let w = Window { remaining: capacity - 100_000 };
        assert_eq!(w.in_flight(capacity, 10), 100_010);
        // A window grown past what the upload started with (servers may) is nothing in flight.
        let w = Window { remaining: 3 << 20 };
        assert_eq!(w.in_flight(capacity, 0), 0);
        assert!(w.worth_pacing());
        // sshd's session channel before its command runs: no window yet.
        assert!(!Window { remaining: 0 }.worth_pacing());
        assert!(!Window { remaining: 256 * 1024 }.worth_pacing());
    }

    #[test]
    fn windows_are_filed_by_channel_and_forgotten_on_close() {
        let windows = Windows::<u32>::default();
        let id = 7;
        // Watched before the handler saw it open (russh hands the channel over first).
        let mut rx = windows.watch(id);
        assert_eq!(*rx.borrow(), Window { remaining: 0 });
        windows.opened(id, 0);
        windows.adjusted(id, 900);
        assert!(rx.has_changed().unwrap_or(false));
        assert_eq!(*rx.borrow_and_update(), Window { remaining: 900 });
        windows.adjusted(id, 900);
        assert!(rx.has_changed().unwrap_or(false), "a like adjustment still wakes the uploader");
        windows.closed(id);
        assert!(rx.has_changed().is_err(), "the uploader learns the channel is gone");
        assert!(windows.lock().is_empty());
        windows.adjusted(id, 5);
        assert!(windows.lock().is_empty(), "an adjustment of a closed channel files nothing");
    }

    #[test]
    fn unwatched_windows_are_let_go_of_before_they_pile_up() {
        let windows = Windows::<usize>::default();
        let watched = windows.watch(0);
        for id in 1..KEPT * 3 {
            windows.opened(id, 1000);
        }
        let kept = windows.lock().len();
        assert!(kept <= KEPT, "{kept} kept");
        assert!(windows.lock().contains_key(&0), "a watched window stays");
        drop(watched);
    }
}
