//! The handle every edge (a connection task, an HTTP handler) receives: the settings, the
//! state modules (apps, cluster, webhooks, rate windows, console log, metrics) and the two
//! rules built over them ([`Announcer`], [`Publisher`]). The wiring (`crate::server`) builds
//! it; the rules and state modules never see it, so each of them says in its own signature
//! what it touches.

use std::ops::Deref;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::announce::Announcer;
use crate::apps::AppStore;
use crate::cluster::Cluster;
use crate::config::Settings;
use crate::console_log::ConsoleLog;
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::ratelimit::AppRates;
use crate::webhooks::Webhooks;

/// What every handler and connection task shares.
pub struct Shared {
    /// Server-wide settings.
    pub settings: Settings,
    /// Where apps come from.
    pub apps: Arc<dyn AppStore>,
    /// What crosses nodes, by concern.
    pub cluster: Cluster,
    /// Turns transitions into frames, webhooks and subscription counts.
    pub announcer: Announcer,
    /// The one publish path of server events.
    pub publisher: Publisher,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for their close frames.
    pub connections: TaskTracker,
    /// Where webhook events that are not transitions go (client events, cache misses).
    pub webhooks: Webhooks,
    /// Per-app rate windows of the HTTP API.
    pub rates: Arc<AppRates>,
    /// What the debug console streams.
    pub console: ConsoleLog,
}

/// Cheap-clone handle to [`Shared`].
#[derive(Clone)]
pub struct ServerState(pub Arc<Shared>);

impl Deref for ServerState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
