//! Where this node stands in each bus log it reads ([`super::buslog`]): one log on one Redis; on
//! a Redis Cluster the control log and one log per app bucket this node has subscribers in.
//! Shared by the bus task (which delivers pushes and makes up for gaps) and the subscribe path
//! (which starts a log's position when its first channel is subscribed).

use std::collections::HashMap;
use std::sync::Mutex;

use super::buslog::LogId;

/// Where a node stands in one bus log.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Position {
    /// Every message meant for this node with an id up to it was received (or made up for).
    pub(super) checkpoint: LogId,
    /// Messages up to it were delivered from the log: the same ones arriving by pub/sub after a
    /// reconnect are repeats.
    pub(super) replayed: LogId,
}

#[derive(Debug, Default)]
struct Log {
    /// Bus channels subscribed in this log (the control log is pinned with one).
    listeners: usize,
    /// Unknown until its tail was read after subscribing, or a message arrived.
    at: Option<Position>,
}

/// The bus logs this node reads, and its position in each.
#[derive(Debug, Default)]
pub(super) struct Logs(Mutex<HashMap<String, Log>>);

impl Logs {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Log>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One more channel subscribed in `log`; true for its first (its position is then unknown).
    pub(super) fn listen(&self, log: &str) -> bool {
        let mut map = self.map();
        let entry = map.entry(log.to_owned()).or_default();
        entry.listeners += 1;
        entry.at.is_none()
    }

    /// One channel fewer in `log`; a log nobody listens to is forgotten.
    pub(super) fn unlisten(&self, log: &str) {
        let mut map = self.map();
        if let Some(entry) = map.get_mut(log) {
            entry.listeners = entry.listeners.saturating_sub(1);
            if entry.listeners == 0 {
                map.remove(log);
            }
        }
    }

    /// The logs listened to.
    pub(super) fn names(&self) -> Vec<String> {
        self.map().keys().cloned().collect()
    }

    pub(super) fn position(&self, log: &str) -> Option<Position> {
        self.map().get(log).and_then(|l| l.at)
    }

    /// Starts a position at `last` (a tail read on the pub/sub connection after subscribing)
    /// unless a message already started it.
    pub(super) fn start(&self, log: &str, last: LogId) {
        if let Some(entry) = self.map().get_mut(log) {
            entry.at.get_or_insert(Position { checkpoint: last, replayed: LogId::default() });
        }
    }

    /// A message `id` of `log` arrived by pub/sub: false when it was already delivered from the
    /// log.
    pub(super) fn received(&self, log: &str, id: LogId) -> bool {
        let mut map = self.map();
        let Some(entry) = map.get_mut(log) else { return true };
        let at = entry.at.get_or_insert_with(Position::default);
        if id <= at.replayed {
            return false;
        }
        at.checkpoint = at.checkpoint.max(id);
        true
    }

    /// The log's tail, read on the pub/sub connection, is `last`: everything up to it has been
    /// received. False when the log is behind the checkpoint (Redis lost it): a catch-up sorts
    /// that out.
    pub(super) fn advance(&self, log: &str, last: LogId) -> bool {
        let mut map = self.map();
        let Some(at) = map.get_mut(log).and_then(|l| l.at.as_mut()) else { return true };
        if last < at.checkpoint {
            return false;
        }
        at.checkpoint = last;
        true
    }

    /// Everything up to `last` was received or delivered from the log.
    pub(super) fn caught_up(&self, log: &str, last: LogId) {
        if let Some(entry) = self.map().get_mut(log) {
            entry.at = Some(Position { checkpoint: last, replayed: last });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> LogId {
        LogId::parse(s).unwrap()
    }

    #[test]
    fn a_log_is_read_while_a_channel_in_it_is_subscribed_and_repeats_are_dropped() {
        let logs = Logs::default();
        assert!(logs.listen("a"));
        logs.start("a", id("5-0"));
        assert!(!logs.listen("a"), "the second channel finds the position started");
        assert!(logs.received("a", id("6-0")));
        assert_eq!(logs.position("a").map(|p| p.checkpoint), Some(id("6-0")));
        logs.caught_up("a", id("9-0"));
        assert!(!logs.received("a", id("8-0")), "delivered from the log already");
        assert!(logs.received("a", id("10-0")));
        assert!(!logs.advance("a", id("1-0")), "a log behind the checkpoint is a new log");
        logs.unlisten("a");
        assert_eq!(logs.names(), vec!["a".to_owned()]);
        logs.unlisten("a");
        assert!(logs.names().is_empty());
    }
}
