//! Many nodes through one Redis. Counts live in Redis per *incarnation* (one run of a node,
//! `{node_id}:{random}`), so occupied / vacated and member added / removed are decided once,
//! atomically, by Lua scripts ([`keys::Scripts`]) whose results become [`Transition`]s.
//! Frames travel over pub/sub channels a node subscribes to only while it has a local
//! subscriber. Each incarnation holds a lease; a live node claims a dead incarnation's cleanup
//! once its lease expired ([`lease`]) and sends the transitions that causes to the announcer.
//!
//! Redis trouble never takes sockets down: the node's [`Link`] goes down, socket operations fall
//! back to this node's registry, the node reports unhealthy (not ready, HTTP API 503), and when
//! Redis answers again the node starts a new incarnation, republishes what it holds and removes
//! its old incarnation.

mod bus;
mod buslog;
mod journal;
mod keys;
mod lease;
mod live;
mod membership;
mod source;
mod users;

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use self::keys::{Entry, Keys, Scripts};
use self::live::{Link, LinkState, Live};
use self::source::{Connections, Source};
use super::{
    AnnounceSender, Announcement, ChannelState, ChannelStats, FanOut, FanOutError, Health, Hold, Origin,
    PresenceFull, RedisSettings, Transition, Window,
};
use crate::channels::{Member, Registry};
use crate::metrics::Metrics;
use crate::outbox::Outbox;

/// Cheap-clone handle to the Redis backend.
#[derive(Clone)]
pub struct RedisCluster {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RedisSettings,
    keys: Keys,
    scripts: Scripts,
    registry: Registry,
    /// Where connections come from (one address, or the primary Sentinel names).
    source: Source,
    /// The connections in use; replaced when a failover moved the primary.
    conns: RwLock<Connections>,
    /// Where the pub/sub connection's messages go (kept to open a new one).
    push: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    /// The current incarnation, `{node_id}:{random}`.
    incarnation: RwLock<Arc<str>>,
    /// Every incarnation this process has run as: messages from them are its own (already
    /// delivered locally). Another process with the same node id is someone else.
    own: RwLock<Vec<Arc<str>>>,
    /// Whether Redis answers for this node: up, rejoining, or down.
    link: Link,
    /// Count-changing socket operations hold it shared; a resync holds it exclusively while it
    /// republishes, so no join or leave is counted twice or lost in between.
    gate: tokio::sync::RwLock<()>,
    /// The dataset epoch this node last saw (see [`Keys::epoch`]).
    epoch: RwLock<String>,
    /// Publishes a bus message and appends it to the bus log ([`buslog`]).
    publish: redis::Script,
    /// Told when a resync subscribed anew: the bus task makes up for what it missed.
    resubscribed: tokio::sync::Notify,
    /// Where the transitions of clean-ups and resyncs go.
    announce: AnnounceSender,
    metrics: Arc<Metrics>,
    /// Cancelled on graceful shutdown: the lease and bus tasks end.
    stopped: CancellationToken,
}

/// How long a held webhook's release keeps asking a Redis that does not answer.
const RELEASE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

fn new_incarnation(node_id: &str) -> Arc<str> {
    format!("{node_id}:{:016x}", rand::random::<u64>()).into()
}

impl RedisCluster {
    /// Connects, registers this node's first incarnation and starts the lease and bus tasks.
    /// Fails when Redis cannot be reached: a configured backend never silently becomes local.
    pub async fn connect(
        settings: RedisSettings,
        registry: Registry,
        announce: AnnounceSender,
        metrics: Arc<Metrics>,
    ) -> redis::RedisResult<RedisCluster> {
        let source = Source::new(&settings)?;
        let (push, rx) = tokio::sync::mpsc::unbounded_channel();
        let conns = source.open(push.clone()).await?;
        let keys = Keys::new(&settings.prefix);
        let incarnation = new_incarnation(&settings.node_id);
        let cluster = RedisCluster {
            inner: Arc::new(Inner {
                keys,
                scripts: Scripts::new(),
                registry,
                source,
                conns: RwLock::new(conns),
                push,
                own: RwLock::new(vec![incarnation.clone()]),
                incarnation: RwLock::new(incarnation),
                link: Link::default(),
                epoch: RwLock::new(String::new()),
                gate: tokio::sync::RwLock::new(()),
                publish: buslog::publish_script(),
                resubscribed: tokio::sync::Notify::new(),
                announce,
                metrics,
                settings,
                stopped: CancellationToken::new(),
            }),
        };
        cluster.warn_about_twins().await;
        cluster.register().await?;
        let (_, epoch) = cluster.current_epoch().await?;
        cluster.remember_epoch(epoch);
        let control = cluster.inner.keys.control();
        cluster.subscriber().subscribe(&control).await?;
        // Read on the pub/sub connection after subscribing: every message from here on arrives.
        let checkpoint = buslog::tail(&mut cluster.subscriber(), &cluster.inner.keys.bus_log()).await?.last;
        tokio::spawn(bus::run(cluster.clone(), rx, checkpoint));
        tokio::spawn(lease::run(cluster.clone()));
        tracing::info!(incarnation = %cluster.incarnation(), "joined the Redis cluster");
        Ok(cluster)
    }

    /// Whether a bus message's origin is this process (any of its incarnations).
    fn is_own(&self, origin: &str) -> bool {
        self.inner.own.read().unwrap_or_else(|p| p.into_inner()).iter().any(|i| **i == *origin)
    }

    /// Logs when another live process already runs under this node id: both work (each is its
    /// own incarnation), but per-node views such as the console and logs are then ambiguous.
    async fn warn_about_twins(&self) {
        let prefix = format!("{}:", self.inner.settings.node_id);
        let live: redis::RedisResult<Vec<String>> =
            self.conn().zrangebyscore(self.inner.keys.nodes(), lease::now_ms(), "+inf").await;
        if let Some(twin) = live.unwrap_or_default().into_iter().find(|i| i.starts_with(&prefix)) {
            tracing::warn!(
                node_id = %self.inner.settings.node_id,
                other = %twin,
                "another live node uses this node id; both run as distinct incarnations, but give each its own --node-id"
            );
        }
    }

    fn incarnation(&self) -> Arc<str> {
        self.inner.incarnation.read().map(|m| m.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The connection of the lease task: always tries Redis.
    fn conn(&self) -> ConnectionManager {
        self.inner.conns.read().unwrap_or_else(|p| p.into_inner()).conn.clone()
    }

    /// The pub/sub connection.
    fn subscriber(&self) -> ConnectionManager {
        self.inner.conns.read().unwrap_or_else(|p| p.into_inner()).subscriber.clone()
    }

    /// With Sentinel: asks for the primary again and opens new connections to it (the old ones
    /// may point at a demoted or dead node). A standalone node keeps its connections, which
    /// reconnect by themselves.
    async fn follow_primary(&self) -> redis::RedisResult<()> {
        if !self.inner.source.follows_failover() {
            return Ok(());
        }
        let conns = self.inner.source.open(self.inner.push.clone()).await?;
        *self.inner.conns.write().unwrap_or_else(|p| p.into_inner()) = conns;
        Ok(())
    }

    /// The connection of socket and API operations: fails at once while the link is down, so
    /// no socket ever waits on an unreachable Redis.
    fn live(&self) -> Live {
        Live { conn: self.conn(), offline: self.offline() }
    }

    /// While the link is down, socket operations skip Redis entirely and use this node's
    /// registry; the lease task probes Redis and resyncs.
    fn offline(&self) -> bool {
        self.inner.link.get() == LinkState::Down
    }

    /// Records a Redis failure: the link goes down and this node answers for itself only until
    /// the lease task resyncs. Counted once per outage.
    fn degrade(&self, what: &str, error: &redis::RedisError) {
        let unreachable = error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.to_string().contains("FENCED")
            // A primary demoted by a failover answers writes with READONLY: find the new one.
            || error.code() == Some("READONLY");
        if !unreachable {
            // Redis answered, just not as expected: a bug to log, not an outage to degrade for.
            tracing::error!(%error, what, "unexpected Redis reply");
            return;
        }
        if self.inner.link.set(LinkState::Down) != LinkState::Down {
            self.inner.metrics.redis_errors.inc();
            tracing::warn!(%error, what, "Redis unavailable: serving local sockets only, not ready");
        }
    }

    /// Hands transitions this backend decided on its own to the announcer.
    fn announce(&self, app_id: &str, origin: Origin, transitions: Vec<Transition>) {
        if transitions.is_empty() {
            return;
        }
        let announcement = Announcement::Transitions { app_id: app_id.to_owned(), origin, transitions };
        if self.inner.announce.send(announcement).is_err() {
            tracing::debug!(app_id, "announcer gone: transitions not announced");
        }
    }

    async fn subscribe_bus(&self, app_id: &str, channel: &str) {
        if self.offline() {
            return; // the resync subscribes to every local channel
        }
        let name = self.inner.keys.bus(app_id, channel);
        // A pub/sub connection that just dropped reconnects by itself (and the bus log makes up
        // for what it missed): try again on the new one before degrading the whole node.
        for attempt in 0..3 {
            match self.subscriber().subscribe(&name).await {
                Ok(()) => return,
                Err(e) if attempt < 2 && (e.is_connection_dropped() || e.is_io_error()) => {
                    tracing::debug!(error = %e, "subscribing again on a new pub/sub connection");
                }
                Err(e) => {
                    self.degrade("subscribe", &e);
                    return;
                }
            }
        }
    }

    async fn unsubscribe_bus(&self, app_id: &str, channel: &str) {
        if self.offline() {
            return;
        }
        let name = self.inner.keys.bus(app_id, channel);
        if let Err(e) = self.subscriber().unsubscribe(&name).await {
            self.degrade("unsubscribe", &e);
        }
    }

    /// Sends a frame to the other nodes' subscribers of a channel. A timed-out publish counts
    /// as sent: Redis received it and delivers it when it answers again (a stall, not a loss).
    async fn broadcast_remote(
        &self,
        app_id: &str,
        channel: &str,
        frame: &str,
        except: Option<&str>,
    ) -> Result<(), FanOutError> {
        let sender = bus::sender(&self.incarnation(), except);
        let except = except.filter(|e| !e.starts_with('@'));
        let payload = bus::encode(&sender, except, frame);
        match self.publish(&self.inner.keys.bus(app_id, channel), &payload).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.degrade("publish", &e);
                if e.is_timeout() {
                    Ok(())
                } else {
                    Err(FanOutError::Unreachable(e.to_string()))
                }
            }
        }
    }

    async fn control(&self, message: String) {
        if let Err(e) = self.publish(&self.inner.keys.control(), &message).await {
            self.degrade("publish control", &e);
        }
    }

    /// Publishes a message on the bus and logs it, in one script: a node whose pub/sub
    /// connection broke meanwhile finds it in the log.
    async fn publish(&self, channel: &str, message: &str) -> redis::RedisResult<()> {
        let _id: String = self
            .inner
            .publish
            .key(self.inner.keys.bus_log())
            .arg(channel)
            .arg(message)
            .arg(buslog::WINDOW.as_millis() as u64)
            .invoke_async(&mut self.live())
            .await?;
        Ok(())
    }

    /// Advances every node's bus-log checkpoint (see [`bus::tick`]). A failure is the lease
    /// task's to notice.
    async fn tick(&self) {
        if self.offline() {
            return;
        }
        if let Err(e) = self.publish(&self.inner.keys.control(), &bus::tick(&self.incarnation())).await {
            tracing::debug!(error = %e, "bus tick not published");
        }
    }
}

/// Transitions a degraded node decided from its registry alone: their frames reach this node's
/// sockets, but no webhook goes out (the rest of the cluster may see nothing change). The
/// resync announces what really changed.
fn local_view(transitions: Vec<Transition>) -> Vec<Transition> {
    transitions
        .into_iter()
        .map(|t| match t {
            Transition::Occupied { channel, .. } => Transition::Occupied { channel, webhook: false },
            Transition::MemberAdded { channel, member, .. } => {
                Transition::MemberAdded { channel, member, webhook: false }
            }
            Transition::Vacated { channel, .. } => Transition::Vacated { channel, window: Window::Skip },
            Transition::MemberRemoved { channel, user_id, .. } => {
                Transition::MemberRemoved { channel, user_id, window: Window::Skip }
            }
            other => other,
        })
        .collect()
}

fn member_from(user_id: String, info: String) -> Member {
    let user_info =
        (!info.is_empty()).then(|| RawValue::from_string(info).ok()).flatten().map(Arc::<RawValue>::from);
    Member { user_id: user_id.into(), user_info }
}

#[async_trait]
impl FanOut for RedisCluster {
    async fn publish(
        &self,
        app_id: &str,
        channel: &str,
        frame: Utf8Bytes,
        except: Option<&str>,
    ) -> Result<(), FanOutError> {
        self.inner.registry.broadcast(app_id, channel, &frame, except);
        self.broadcast_remote(app_id, channel, frame.as_str(), except).await
    }

    async fn publish_elsewhere(&self, app_id: &str, channel: &str, frame: Utf8Bytes) {
        // A rejoin's announcement that fails is repeated by the next resync.
        let _ = self.broadcast_remote(app_id, channel, frame.as_str(), None).await;
    }
}

#[async_trait]
impl ChannelState for RedisCluster {
    async fn connect(&self, app_id: &str, limit: Option<u64>) -> bool {
        let _gate = self.inner.gate.read().await;
        let k = &self.inner.keys;
        let me = self.incarnation();
        let result: redis::RedisResult<i64> = self
            .inner
            .scripts
            .connect
            .key(k.conns(app_id))
            .key(k.nodekeys(&me))
            .key(k.lease(&me))
            .arg(&*me)
            .arg(limit.map_or(-1, |l| l as i64))
            .arg(Entry::Conns(app_id).encode())
            .arg(1)
            .invoke_async(&mut self.live())
            .await;
        match result {
            Ok(0) => false,
            Ok(_) => self.inner.registry.connection_opened(app_id, None),
            Err(e) => {
                self.degrade("connect", &e);
                self.inner.registry.connection_opened(app_id, limit)
            }
        }
    }

    async fn disconnect(&self, app_id: &str) {
        let _gate = self.inner.gate.read().await;
        self.inner.registry.connection_closed(app_id);
        let result: redis::RedisResult<i64> = self
            .inner
            .scripts
            .disconnect
            .key(self.inner.keys.conns(app_id))
            .arg(&*self.incarnation())
            .invoke_async(&mut self.live())
            .await;
        if let Err(e) = result {
            self.degrade("disconnect", &e);
        }
    }

    async fn join(
        &self,
        app_id: &str,
        channel: &str,
        outbox: Outbox,
        member: Option<Member>,
        max_members: usize,
    ) -> Result<Vec<Transition>, PresenceFull> {
        let _gate = self.inner.gate.read().await;
        let remote = self.try_join(app_id, channel, member.as_ref(), max_members).await;
        let local_max = if matches!(remote, Ok(Ok(_))) { usize::MAX } else { max_members };
        let added = match &remote {
            Ok(Err(full)) => return Err(full.clone()),
            _ => self.inner.registry.add(app_id, channel, outbox, member.clone(), local_max)?,
        };
        if added.subscriptions == 1 {
            self.subscribe_bus(app_id, channel).await;
        }
        Ok(match remote {
            Ok(Ok(joined)) => joined.transitions(channel, member),
            Ok(Err(_)) => unreachable!("handled above"),
            Err(e) => {
                self.degrade("join", &e);
                local_view(super::local::joined(channel, &added, member))
            }
        })
    }

    async fn leave(&self, app_id: &str, channel: &str, socket_id: &str) -> Vec<Transition> {
        let _gate = self.inner.gate.read().await;
        let removed = self.inner.registry.remove(app_id, channel, socket_id);
        if !removed.was_subscribed {
            return Vec::new();
        }
        if removed.subscriptions == 0 {
            self.unsubscribe_bus(app_id, channel).await;
        }
        match self.try_leave(app_id, channel, removed.user_id.as_deref()).await {
            Ok(left) => left.transitions(channel, removed.user_id),
            Err(e) => {
                self.degrade("leave", &e);
                local_view(super::local::left(channel, removed))
            }
        }
    }

    async fn channel_stats(&self, app_id: &str, channel: &str) -> ChannelStats {
        let k = &self.inner.keys;
        let result: redis::RedisResult<(Vec<u64>, u64)> = redis::pipe()
            .hvals(k.chan(app_id, channel))
            .hlen(k.pres(app_id, channel))
            .query_async(&mut self.live())
            .await;
        match result {
            Ok((counts, users)) => {
                ChannelStats { subscription_count: counts.iter().sum(), user_count: users }
            }
            Err(e) => {
                self.degrade("channel stats", &e);
                self.inner.registry.stats(app_id, channel).into()
            }
        }
    }

    async fn channels(&self, app_id: &str, prefix: Option<&str>) -> Vec<(String, ChannelStats)> {
        let local = || -> Vec<(String, ChannelStats)> {
            let local = self.inner.registry.channels(app_id, prefix);
            local.into_iter().map(|(n, s)| (n, s.into())).collect()
        };
        let k = &self.inner.keys;
        let listed: redis::RedisResult<Vec<String>> = self.live().smembers(k.channels(app_id)).await;
        let names: Vec<String> = match listed {
            Ok(all) => all.into_iter().filter(|c| prefix.is_none_or(|p| c.starts_with(p))).collect(),
            Err(e) => {
                self.degrade("channels", &e);
                return local();
            }
        };
        if names.is_empty() {
            return Vec::new();
        }
        // One round trip for every channel's counts.
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.hvals(k.chan(app_id, name)).hlen(k.pres(app_id, name));
        }
        let counts: Vec<redis::Value> = match pipe.query_async(&mut self.live()).await {
            Ok(c) => c,
            Err(e) => {
                self.degrade("channels", &e);
                return local();
            }
        };
        let mut out = Vec::with_capacity(names.len());
        for (name, pair) in names.into_iter().zip(counts.chunks(2)) {
            let subs: Vec<u64> =
                pair.first().and_then(|v| redis::from_redis_value_ref(v).ok()).unwrap_or_default();
            let users: u64 =
                pair.get(1).and_then(|v| redis::from_redis_value_ref(v).ok()).unwrap_or_default();
            let subscription_count = subs.iter().sum();
            if subscription_count > 0 {
                out.push((name, ChannelStats { subscription_count, user_count: users }));
            }
        }
        out
    }

    async fn release(&self, hold: &Hold) -> bool {
        // Unlisted from its holder's nodekeys either way: the window is over.
        let (listing, entry) = match &hold.listed {
            Some((nodekeys, entry)) => (nodekeys.clone(), entry.as_str()),
            None => (self.inner.keys.nodekeys(&self.incarnation()), ""),
        };
        // Until Redis says whether the channel or member came back, nothing is sent: a stall or
        // an outage at the end of a window must not turn a flap into a departure. The release
        // is idempotent, so asking again after a timeout gets the answer of a release Redis ran.
        let mut backoff = std::time::Duration::from_millis(250);
        let give_up = std::time::Instant::now() + RELEASE_PATIENCE;
        let releaser = format!("{:016x}", rand::random::<u64>());
        loop {
            let result: redis::RedisResult<i64> = self
                .inner
                .scripts
                .release
                .key(&hold.key)
                .key(&listing)
                .arg(&hold.token)
                .arg(entry)
                .arg(membership::HOLD_TTL_MS)
                .arg(&releaser)
                .invoke_async(&mut self.conn())
                .await;
            match result {
                Ok(released) => return released == 1,
                Err(e) => self.degrade("release a held webhook", &e),
            }
            if std::time::Instant::now() + backoff > give_up || self.inner.stopped.is_cancelled() {
                // Still listed with this incarnation: the resync (or the node that cleans up
                // after this one) takes the hold over and asks again.
                tracing::warn!(hold = %hold.key, "Redis did not answer whether a held webhook is still due");
                return false;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
        }
    }

    async fn members(&self, app_id: &str, channel: &str) -> Vec<Member> {
        let result: redis::RedisResult<Vec<(String, String)>> =
            self.live().hgetall(self.inner.keys.pinfo(app_id, channel)).await;
        match result {
            Ok(pairs) => pairs.into_iter().map(|(id, info)| member_from(id, info)).collect(),
            Err(e) => {
                self.degrade("members", &e);
                self.inner.registry.members(app_id, channel)
            }
        }
    }
}

#[async_trait]
impl Health for RedisCluster {
    fn healthy(&self) -> bool {
        self.inner.link.get() == LinkState::Up
    }

    async fn shutdown(&self) {
        lease::release(self).await;
    }
}
