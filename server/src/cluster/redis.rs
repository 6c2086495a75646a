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
mod cleanup;
mod conn;
mod journal;
mod keys;
mod lease;
mod live;
mod logs;
mod membership;
mod source;
mod users;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use redis::AsyncCommands;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use self::conn::Conn;
use self::keys::{Entry, Keys, Scripts};
use self::live::{Link, LinkState, Live};
use self::logs::Logs;
use self::source::{Connections, Source};
use super::{
    AnnounceSender, Announcement, ChannelState, ChannelStats, FanOut, FanOutError, Health, Hold, Joined,
    MemberSeq, Origin, PresenceFull, RedisSettings, Transition, Window,
};
use crate::channels::{AddError, Member, Registry, PENDING};
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
    /// The apps the current incarnation is listed in, with a live `alive` key (see
    /// [`RedisCluster::enter_app`]); renewed with its lease.
    apps: Mutex<(Arc<str>, HashSet<String>)>,
    /// The bus logs this node reads and where it stands in each.
    logs: Logs,
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
    /// Told when the pub/sub connection dropped: the lease task checks Redis at once instead of
    /// at its next renewal, since a Redis that restarted empty forgot this node's state.
    check_lease: tokio::sync::Notify,
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
        let keys = Keys::new(&settings.prefix, source.sharded());
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
                apps: Mutex::new((incarnation.clone(), HashSet::new())),
                logs: Logs::default(),
                incarnation: RwLock::new(incarnation),
                link: Link::default(),
                epoch: RwLock::new(String::new()),
                gate: tokio::sync::RwLock::new(()),
                publish: buslog::publish_script(),
                resubscribed: tokio::sync::Notify::new(),
                check_lease: tokio::sync::Notify::new(),
                announce,
                metrics,
                settings,
                stopped: CancellationToken::new(),
            }),
        };
        cluster.warn_about_twins().await;
        cluster.load_scripts().await?;
        cluster.register().await?;
        let (_, epoch) = cluster.current_epoch().await?;
        cluster.remember_epoch(epoch);
        let control = cluster.inner.keys.control();
        let control_log = cluster.inner.keys.control_log();
        cluster.subscriber().listen(&control).await?;
        // Read on the pub/sub connection after subscribing: every message from here on arrives.
        cluster.inner.logs.listen(&control_log);
        let checkpoint = buslog::tail(&mut cluster.subscriber(), &control_log).await?.last;
        cluster.inner.logs.start(&control_log, checkpoint);
        tokio::spawn(bus::run(cluster.clone(), rx));
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
    fn conn(&self) -> Conn {
        self.inner.conns.read().unwrap_or_else(|p| p.into_inner()).conn.clone()
    }

    /// The pub/sub connection.
    fn subscriber(&self) -> Conn {
        self.inner.conns.read().unwrap_or_else(|p| p.into_inner()).subscriber.clone()
    }

    /// With Sentinel or a Redis Cluster: opens new connections (to the primary the sentinels
    /// name now; to the cluster as its seeds describe it now), since the old ones may point at a
    /// demoted or dead node. A standalone node keeps its connections, which reconnect by
    /// themselves.
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
        let unreachable = unavailable(error)
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
            // The lease task starts trying to resync now, not at its next renewal.
            self.inner.check_lease.notify_one();
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
}

/// Whether an error says Redis is not there (or not serving) rather than that it refused a
/// command: a connection that failed, timed out or dropped, or a cluster not serving.
fn unavailable(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || not_serving(error)
}

/// Whether Redis is not serving for now, though it is there: a Redis Cluster lost a primary, is
/// down, is loading, or the client has no connection to the node owning a slot; or the
/// sentinels name no primary that answers as one (a failover under way, the primary down).
pub(crate) fn not_serving(error: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    matches!(
        error.kind(),
        ErrorKind::ClusterConnectionNotFound
            | ErrorKind::MasterNameNotFoundBySentinel
            | ErrorKind::Server(ServerErrorKind::ClusterDown)
            | ErrorKind::Server(ServerErrorKind::TryAgain)
            | ErrorKind::Server(ServerErrorKind::MasterDown)
            | ErrorKind::Server(ServerErrorKind::BusyLoading)
    )
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
                Transition::MemberAdded { channel, member, webhook: false, seq: 0 }
            }
            Transition::Vacated { channel, .. } => Transition::Vacated { channel, window: Window::Skip },
            Transition::MemberRemoved { channel, user_id, .. } => {
                Transition::MemberRemoved { channel, user_id, window: Window::Skip, seq: 0 }
            }
            other => other,
        })
        .collect()
}

pub(super) fn member_from(user_id: String, info: String) -> Member {
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
        self.broadcast_remote(app_id, channel, frame.as_str(), except, 0).await
    }

    async fn publish_member(
        &self,
        app_id: &str,
        channel: &str,
        frame: Utf8Bytes,
        except: Option<&str>,
        seq: MemberSeq,
    ) -> Result<(), FanOutError> {
        self.inner.registry.broadcast_member(app_id, channel, &frame, except, seq);
        self.broadcast_remote(app_id, channel, frame.as_str(), except, seq).await
    }

    async fn publish_all(&self, app_id: &str, frames: Vec<super::Outgoing>) -> Result<(), FanOutError> {
        for out in &frames {
            self.inner.registry.broadcast(app_id, &out.channel, &out.frame, out.except.as_deref());
        }
        match frames.as_slice() {
            [] => Ok(()),
            [one] => {
                self.broadcast_remote(app_id, &one.channel, one.frame.as_str(), one.except.as_deref(), 0)
                    .await
            }
            many => self.broadcast_remote_all(app_id, many).await,
        }
    }

    async fn publish_elsewhere(&self, app_id: &str, channel: &str, frame: Utf8Bytes) {
        // A rejoin's announcement that fails is repeated by the next resync.
        let _ = self.broadcast_remote(app_id, channel, frame.as_str(), None, 0).await;
    }
}

#[async_trait]
impl ChannelState for RedisCluster {
    async fn connect(&self, app_id: &str, limit: Option<u64>) -> bool {
        let _gate = self.inner.gate.read().await;
        let k = &self.inner.keys;
        let me = self.incarnation();
        let mut live = self.live();
        let result: redis::RedisResult<i64> = match self.enter_app(&mut live, &me, app_id).await {
            Ok(()) => {
                self.inner
                    .scripts
                    .connect
                    .key(k.conns(app_id))
                    .key(k.nodekeys(app_id, &me))
                    .key(k.alive(app_id, &me))
                    .arg(&*me)
                    .arg(limit.map_or(-1, |l| l as i64))
                    .arg(Entry::Conns(app_id).encode())
                    .arg(1)
                    .invoke_async(&mut live)
                    .await
            }
            Err(e) => Err(e),
        };
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
    ) -> Result<Joined, PresenceFull> {
        let _gate = self.inner.gate.read().await;
        let registry = &self.inner.registry;
        let socket_id = outbox.socket_id().clone();
        let presence = member.is_some();
        // The socket is registered and the bus subscribed before the script reads the member
        // list: a member event published after that read reaches this node, and is held for the
        // socket until the list's sequence says whether the list showed it. One published before
        // the bus subscription is of a change the list shows.
        let seen = if presence { PENDING } else { 0 };
        let added = registry.add_seen(app_id, channel, outbox, member.clone(), usize::MAX, seen)?;
        if added.subscriptions == 1 {
            self.subscribe_bus(app_id, channel).await;
        }
        match self.try_join(app_id, channel, member.as_ref(), max_members).await {
            Ok(Ok(mut joined)) => {
                if presence {
                    registry.members_seen(app_id, channel, &socket_id, joined.seq);
                }
                let transitions = joined.transitions(channel, member);
                Ok(Joined { transitions, members: joined.members.take() })
            }
            Ok(Err(full)) => {
                self.unregister(app_id, channel, &socket_id).await;
                Err(full)
            }
            Err(e) => {
                self.degrade("join", &e);
                registry.members_seen(app_id, channel, &socket_id, 0);
                if added.member_added && registry.stats(app_id, channel).users > max_members {
                    self.unregister(app_id, channel, &socket_id).await;
                    return Err(AddError::PresenceFull { max: max_members });
                }
                let transitions = local_view(super::local::joined(channel, &added, member));
                Ok(Joined { transitions, members: presence.then(|| registry.members(app_id, channel)) })
            }
        }
    }

    async fn leave(&self, app_id: &str, channel: &str, socket_id: &str) -> Vec<Transition> {
        let _gate = self.inner.gate.read().await;
        let removed = self.unregister(app_id, channel, socket_id).await;
        if !removed.was_subscribed {
            return Vec::new();
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
        // Unlisted from its holder's nodekeys either way: the window is over. An unlisted hold
        // names a key in its own slot that holds nothing.
        let (listing, entry) = match &hold.listed {
            Some((nodekeys, entry)) => (nodekeys.clone(), entry.as_str()),
            None => (format!("{}:unlisted", hold.key), ""),
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

    async fn ready(&self) -> bool {
        self.healthy() && self.holds_lease().await
    }

    async fn shutdown(&self) {
        lease::release(self).await;
    }
}
