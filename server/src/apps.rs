//! Apps: credentials, switches and limits ([`App`]), and where they come from ([`AppStore`]).
//! [`StaticApps`] serves the apps of the configuration; [`kubernetes::KubeApps`] watches the
//! `PusherApp` objects of a cluster and the Secrets they name, and changes live.

pub mod kubernetes;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Per-app limits. Defaults are hosted Pusher's, except where noted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent connections allowed; `None` is unlimited.
    pub max_connections: Option<u64>,
    /// Close code when over `max_connections`: 4004 (Pusher, no reconnect) or 4100 (soketi,
    /// reconnect with backoff).
    pub connection_quota_code: QuotaCode,
    /// Members of one presence channel. Pusher allows 100; raise it freely, large presence
    /// channels are kept fast.
    pub max_presence_members: usize,
    /// Bytes of one member's `user_info` JSON.
    pub max_presence_member_size: usize,
    /// Characters of a presence user id.
    pub max_user_id_length: usize,
    /// Bytes of an event's `data` (HTTP API and client events); over it: HTTP 413.
    pub max_event_data_size: usize,
    /// Characters of an event name.
    pub max_event_name_length: usize,
    /// Characters of a channel name (200, what the SDKs allow; 164 is Pusher's documented value).
    pub max_channel_name_length: usize,
    /// Channels one `POST events` may name.
    pub max_channels_per_event: usize,
    /// Events one `POST batch_events` may carry.
    pub max_batch_size: usize,
    /// Client events one connection may send per second; more get `pusher:error` 4301.
    pub client_events_per_second: u32,
    /// Channels one connection may be subscribed to at once (not a Pusher limit: a guard
    /// against one socket growing server memory without bound).
    pub max_subscriptions_per_connection: usize,
    /// Subscribes and unsubscribes one connection may make per second, after a burst of
    /// `max_subscriptions_per_connection` (a reconnect subscribes everything at once); past it
    /// a subscribe is refused with `LimitReached`. 0 is unlimited.
    pub subscription_changes_per_second: u32,
    /// User ids one sign-in may watch; more are dropped with `pusher:error` 4302.
    pub max_watchlist_size: usize,
    /// Events published through the HTTP API per second (all channels of one event count
    /// once per channel); over it: HTTP 429. `None` is unlimited.
    pub max_backend_events_per_second: Option<u32>,
    /// HTTP API read requests (`GET`) per second; over it: HTTP 429. `None` is unlimited.
    pub max_read_requests_per_second: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: None,
            connection_quota_code: QuotaCode::Quota4004,
            max_presence_members: 100,
            max_presence_member_size: 1024,
            max_user_id_length: 128,
            max_event_data_size: 10 * 1024,
            max_event_name_length: 200,
            max_channel_name_length: 200,
            max_channels_per_event: 100,
            max_batch_size: 10,
            client_events_per_second: 10,
            max_subscriptions_per_connection: 1000,
            subscription_changes_per_second: 100,
            max_watchlist_size: 100,
            max_backend_events_per_second: None,
            max_read_requests_per_second: None,
        }
    }
}

/// Which close code a connection over the app's quota gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaCode {
    /// 4004: over quota, do not reconnect (hosted Pusher).
    Quota4004,
    /// 4100: over capacity, reconnect with backoff (soketi).
    Capacity4100,
}

/// One Pusher app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// Numeric app id, as in `/apps/{id}/...`.
    pub id: String,
    /// Public key, as in `/app/{key}`.
    pub key: String,
    /// Signing secret; never logged.
    pub secret: String,
    /// A disabled app refuses connections (4003) and API calls (403).
    pub enabled: bool,
    /// Whether clients may send `client-` events.
    pub client_events: bool,
    /// Limits.
    pub limits: Limits,
    /// "Authorized connections": a socket must sign in or join a private or presence channel
    /// within `user_authentication_timeout`, or it is closed with 4009.
    pub user_authentication: bool,
    /// How long an unauthenticated socket may stay when `user_authentication` is on.
    pub user_authentication_timeout: Duration,
    /// Send `pusher_internal:watchlist_events` to signed-in users with a watchlist.
    pub watchlist_events: bool,
    /// Send `pusher_internal:subscription_count` on non-presence channels.
    pub subscription_count: bool,
    /// How long a cache channel keeps its last event.
    pub cache_ttl: Duration,
    /// Browser origins allowed to open WebSockets (`Origin` header); empty allows any.
    pub allowed_origins: Vec<String>,
    /// Where webhooks go.
    pub webhooks: Vec<WebhookTarget>,
    /// Events of one app within this window go out in one webhook request; zero sends each
    /// event on its own.
    pub webhook_batch_window: Duration,
}

/// The kinds of webhook event: the contract's enum, the same one a PusherApp names.
pub use herald_crds::contract::WebhookEventType as WebhookKind;

/// One webhook endpoint with its filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    /// `http://` or `https://` URL that receives `POST`s.
    pub url: String,
    /// Event kinds sent there; empty sends every kind.
    pub event_types: Vec<WebhookKind>,
    /// Only channels starting with this.
    pub channel_prefix: Option<String>,
    /// Only channels ending with this.
    pub channel_suffix: Option<String>,
}

impl WebhookTarget {
    /// Whether an event of `kind` on `channel` goes to this target.
    pub fn wants(&self, kind: WebhookKind, channel: &str) -> bool {
        (self.event_types.is_empty() || self.event_types.contains(&kind))
            && self.channel_prefix.as_deref().is_none_or(|p| channel.starts_with(p))
            && self.channel_suffix.as_deref().is_none_or(|s| channel.ends_with(s))
    }
}

impl App {
    /// A new enabled app with default limits and client events off.
    pub fn new(id: impl Into<String>, key: impl Into<String>, secret: impl Into<String>) -> Self {
        App {
            id: id.into(),
            key: key.into(),
            secret: secret.into(),
            enabled: true,
            client_events: false,
            limits: Limits::default(),
            user_authentication: false,
            user_authentication_timeout: Duration::from_secs(30),
            watchlist_events: false,
            subscription_count: false,
            cache_ttl: Duration::from_secs(30 * 60),
            allowed_origins: Vec::new(),
            webhooks: Vec::new(),
            webhook_batch_window: Duration::ZERO,
        }
    }
}

/// Where apps come from. Lookups are synchronous and cheap: implementations keep an in-memory
/// index and refresh it in the background.
pub trait AppStore: Send + Sync + 'static {
    /// The app with this public key.
    fn by_key(&self, key: &str) -> Option<Arc<App>>;
    /// The app with this id.
    fn by_id(&self, id: &str) -> Option<Arc<App>>;
    /// Every app, for start-up banners and metrics.
    fn all(&self) -> Vec<Arc<App>>;
    /// Ticks whenever any app is added, changed or removed. Connections hold their app's
    /// settings; on a tick they look it up again (new secret, new switches), or close with
    /// 4001 (deleted) or 4003 (disabled).
    fn changes(&self) -> watch::Receiver<u64>;
}

/// Apps fixed at start-up (flags, environment, config file).
#[derive(Debug)]
pub struct StaticApps {
    by_key: HashMap<String, Arc<App>>,
    by_id: HashMap<String, Arc<App>>,
    /// Never ticks: static apps do not change.
    changes: watch::Sender<u64>,
}

impl Default for StaticApps {
    fn default() -> Self {
        StaticApps { by_key: HashMap::new(), by_id: HashMap::new(), changes: watch::Sender::new(0) }
    }
}

impl StaticApps {
    /// Indexes `apps`; the configuration has already rejected duplicate ids and keys.
    pub fn new(apps: impl IntoIterator<Item = App>) -> Self {
        let mut store = StaticApps::default();
        for app in apps {
            let app = Arc::new(app);
            store.by_key.insert(app.key.clone(), app.clone());
            store.by_id.insert(app.id.clone(), app);
        }
        store
    }
}

impl AppStore for StaticApps {
    fn by_key(&self, key: &str) -> Option<Arc<App>> {
        self.by_key.get(key).cloned()
    }

    fn by_id(&self, id: &str) -> Option<Arc<App>> {
        self.by_id.get(id).cloned()
    }

    fn all(&self) -> Vec<Arc<App>> {
        let mut apps: Vec<_> = self.by_id.values().cloned().collect();
        apps.sort_by(|a, b| a.id.cmp(&b.id));
        apps
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_targets_filter_by_kind_prefix_and_suffix() {
        let t = WebhookTarget {
            url: "http://x".into(),
            event_types: vec![WebhookKind::ChannelOccupied],
            channel_prefix: Some("private-".into()),
            channel_suffix: Some("-orders".into()),
        };
        assert!(t.wants(WebhookKind::ChannelOccupied, "private-eu-orders"));
        assert!(!t.wants(WebhookKind::ChannelVacated, "private-eu-orders"));
        assert!(!t.wants(WebhookKind::ChannelOccupied, "public-eu-orders"));
        assert!(!t.wants(WebhookKind::ChannelOccupied, "private-eu-users"));
        let all = WebhookTarget {
            url: "http://x".into(),
            event_types: vec![],
            channel_prefix: None,
            channel_suffix: None,
        };
        assert!(all.wants(WebhookKind::CacheMiss, "anything"));
    }
}
