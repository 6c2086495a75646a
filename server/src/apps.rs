//! Apps: credentials, switches and limits ([`App`]), and where they come from ([`AppStore`]).
//! [`StaticApps`] serves the apps of the configuration; a Kubernetes-backed store that watches
//! `PusherApp` objects implements the same trait.

use std::collections::HashMap;
use std::sync::Arc;

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
}

/// Apps fixed at start-up (flags, environment, config file).
#[derive(Debug, Default)]
pub struct StaticApps {
    by_key: HashMap<String, Arc<App>>,
    by_id: HashMap<String, Arc<App>>,
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
}
