//! The debug console's event log: what happens on this node (connects, disconnects,
//! subscriptions, client events, server events, webhook deliveries), as entries anyone may
//! write and the console's stream reads. A leaf: it imports nothing of the crate, so every
//! layer may write to it. Emitting costs one atomic load when no console is open.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

/// Log lines kept for slow readers before they miss some (and are told so).
const BACKLOG: usize = 1024;

/// One thing that happened, as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    /// App the entry belongs to (not sent to the page: the stream is per app).
    #[serde(skip)]
    pub app_id: String,
    /// `connected`, `disconnected`, `subscribed`, `unsubscribed`, `client_event`,
    /// `server_event`, `webhook`.
    pub kind: &'static str,
    /// Channel, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Event name, for events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Socket, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_id: Option<String>,
    /// Free text: a close reason, a webhook's URL and status, an event's data (shortened).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl LogEntry {
    /// An entry of `kind` for `app_id`, stamped now.
    pub fn new(app_id: &str, kind: &'static str) -> Self {
        let at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        LogEntry {
            at,
            app_id: app_id.to_owned(),
            kind,
            channel: None,
            event: None,
            socket_id: None,
            detail: None,
        }
    }

    /// With a channel.
    pub fn channel(mut self, channel: &str) -> Self {
        self.channel = Some(channel.to_owned());
        self
    }

    /// With an event name.
    pub fn event(mut self, event: &str) -> Self {
        self.event = Some(event.to_owned());
        self
    }

    /// With a socket id.
    pub fn socket(mut self, socket_id: &str) -> Self {
        self.socket_id = Some(socket_id.to_owned());
        self
    }

    /// With detail text, cut to 300 characters.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        let mut detail: String = detail.into();
        if let Some((cut, _)) = detail.char_indices().nth(300) {
            detail.truncate(cut);
            detail.push('…');
        }
        self.detail = Some(detail);
        self
    }
}

/// Where log entries go. Emitting costs one atomic load when no console is open.
#[derive(Clone, Debug)]
pub struct ConsoleLog {
    tx: broadcast::Sender<Arc<LogEntry>>,
}

impl Default for ConsoleLog {
    fn default() -> Self {
        ConsoleLog { tx: broadcast::Sender::new(BACKLOG) }
    }
}

impl ConsoleLog {
    /// Records what `entry` builds, only if someone is watching.
    pub fn emit(&self, entry: impl FnOnce() -> LogEntry) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(entry()));
        }
    }

    /// A receiver of every entry from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LogEntry>> {
        self.tx.subscribe()
    }
}
