//! Many nodes through one Redis. Counts live in Redis per *member* (one incarnation of a node),
//! so occupied / vacated and member added / removed are decided once, atomically, by Lua
//! scripts ([`keys::Scripts`]). Frames travel over pub/sub channels a node subscribes to only
//! while it has a local subscriber. Each member holds a lease; a live node claims a dead
//! member's cleanup once its lease expired ([`lease`]).
//!
//! Redis trouble never takes sockets down: socket operations fall back to this node's registry,
//! the node reports unhealthy (not ready, HTTP API 503), and when Redis answers again the node
//! starts a new incarnation, republishes what it holds and removes its old incarnation.

mod bus;
mod keys;
mod lease;
mod live;
mod membership;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use self::keys::{Entry, Keys, Scripts};
use self::live::Live;
use super::{ChannelStats, Cluster, ClusterError, JoinError, Joined, Left};
use crate::apps::AppStore;
use crate::channels::{Member, Registry};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::protocol::CloseReason;
use crate::webhooks::Webhooks;

/// How to reach Redis and who this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port/db` (RESP3 is switched on here).
    pub url: String,
    /// This node's name (the pod name in Kubernetes).
    pub node_id: String,
    /// How long a lease lives without renewal. 10 s: renewed every 3.3 s, so two missed
    /// renewals are survived, and a crashed node is cleaned up within about 15 s.
    pub lease_ttl: Duration,
    /// Prefix of every key and channel.
    pub prefix: String,
}

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
    conn: ConnectionManager,
    subscriber: ConnectionManager,
    /// The current incarnation, `{node_id}:{random}`.
    member: RwLock<Arc<str>>,
    healthy: AtomicBool,
    needs_resync: AtomicBool,
    /// Count-changing socket operations hold it shared; a resync holds it exclusively while it
    /// republishes, so no join or leave is counted twice or lost in between.
    gate: tokio::sync::RwLock<()>,
    /// The dataset epoch this node last saw (see [`Keys::epoch`]).
    epoch: RwLock<String>,
    apps: Arc<dyn AppStore>,
    webhooks: Webhooks,
    metrics: Arc<Metrics>,
    /// Cancelled on graceful shutdown: the lease and bus tasks end.
    stopped: CancellationToken,
}

/// The longest a Redis call may take before the node treats Redis as unavailable.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

fn new_member(node_id: &str) -> Arc<str> {
    format!("{node_id}:{:016x}", rand::random::<u64>()).into()
}

fn resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

impl RedisCluster {
    /// Connects, registers this node's first incarnation and starts the lease and bus tasks.
    /// Fails when Redis cannot be reached: a configured backend never silently becomes local.
    pub async fn connect(
        settings: RedisSettings,
        registry: Registry,
        apps: Arc<dyn AppStore>,
        webhooks: Webhooks,
        metrics: Arc<Metrics>,
    ) -> redis::RedisResult<RedisCluster> {
        let client = redis::Client::open(resp3(&settings.url))?;
        // Bounded waits: a socket task must never hang on an unreachable Redis.
        let bounded = || {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(REDIS_TIMEOUT))
                .set_response_timeout(Some(REDIS_TIMEOUT))
                .set_number_of_retries(1)
                .set_max_delay(REDIS_TIMEOUT)
        };
        let conn = client.get_connection_manager_with_config(bounded()).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let config = bounded().set_push_sender(tx).set_automatic_resubscription();
        let subscriber = client.get_connection_manager_with_config(config).await?;
        let keys = Keys::new(&settings.prefix);
        let member = new_member(&settings.node_id);
        let cluster = RedisCluster {
            inner: Arc::new(Inner {
                keys,
                scripts: Scripts::new(),
                registry,
                conn,
                subscriber,
                member: RwLock::new(member),
                healthy: AtomicBool::new(true),
                epoch: RwLock::new(String::new()),
                gate: tokio::sync::RwLock::new(()),
                needs_resync: AtomicBool::new(false),
                apps,
                webhooks,
                metrics,
                settings,
                stopped: CancellationToken::new(),
            }),
        };
        cluster.register().await?;
        let (_, epoch) = cluster.current_epoch().await?;
        cluster.remember_epoch(epoch);
        let control = cluster.inner.keys.control();
        cluster.inner.subscriber.clone().subscribe(&control).await?;
        tokio::spawn(bus::run(cluster.clone(), rx));
        tokio::spawn(lease::run(cluster.clone()));
        tracing::info!(member = %cluster.member(), "joined the Redis cluster");
        Ok(cluster)
    }

    fn member(&self) -> Arc<str> {
        self.inner.member.read().map(|m| m.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The connection of the lease task: always tries Redis.
    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// The connection of socket and API operations: fails at once while degraded, so no socket
    /// ever waits on an unreachable Redis.
    fn live(&self) -> Live {
        Live { conn: self.inner.conn.clone(), offline: self.offline() }
    }

    /// While degraded, socket operations skip Redis entirely and use this node's registry;
    /// the lease task probes Redis and resyncs.
    fn offline(&self) -> bool {
        self.inner.needs_resync.load(Ordering::Acquire)
    }

    /// Records a Redis failure: this node now answers for itself only until the lease task
    /// resyncs. Counted once per episode.
    fn degrade(&self, what: &str, error: &redis::RedisError) {
        let unreachable = error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.to_string().contains("FENCED");
        if !unreachable {
            // Redis answered, just not as expected: a bug to log, not an outage to degrade for.
            tracing::error!(%error, what, "unexpected Redis reply");
            return;
        }
        self.inner.healthy.store(false, Ordering::Release);
        if !self.inner.needs_resync.swap(true, Ordering::AcqRel) {
            self.inner.metrics.redis_errors.inc();
            tracing::warn!(%error, what, "Redis unavailable: serving local sockets only, not ready");
        }
    }

    async fn subscribe_bus(&self, app_id: &str, channel: &str) {
        if self.offline() {
            return; // the resync subscribes to every local channel
        }
        let name = self.inner.keys.bus(app_id, channel);
        if let Err(e) = self.inner.subscriber.clone().subscribe(&name).await {
            self.degrade("subscribe", &e);
        }
    }

    async fn unsubscribe_bus(&self, app_id: &str, channel: &str) {
        if self.offline() {
            return;
        }
        let name = self.inner.keys.bus(app_id, channel);
        if let Err(e) = self.inner.subscriber.clone().unsubscribe(&name).await {
            self.degrade("unsubscribe", &e);
        }
    }

    /// Sends a frame to the other nodes' subscribers of a channel.
    async fn broadcast_remote(&self, app_id: &str, channel: &str, frame: &str, except: Option<&str>) {
        let payload = bus::encode(&self.member(), except, frame);
        let result: redis::RedisResult<i64> =
            self.live().publish(self.inner.keys.bus(app_id, channel), payload).await;
        if let Err(e) = result {
            self.degrade("publish", &e);
        }
    }

    async fn control(&self, message: String) {
        let result: redis::RedisResult<i64> = self.live().publish(self.inner.keys.control(), message).await;
        if let Err(e) = result {
            self.degrade("publish control", &e);
        }
    }
}

fn member_from(user_id: String, info: String) -> Member {
    let user_info =
        (!info.is_empty()).then(|| RawValue::from_string(info).ok()).flatten().map(Arc::<RawValue>::from);
    Member { user_id: user_id.into(), user_info }
}

#[async_trait]
impl Cluster for RedisCluster {
    async fn connect(&self, app_id: &str, limit: Option<u64>) -> Result<bool, ClusterError> {
        let _gate = self.inner.gate.read().await;
        let k = &self.inner.keys;
        let me = self.member();
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
            Ok(0) => Ok(false),
            Ok(_) => Ok(self.inner.registry.connection_opened(app_id, None)),
            Err(e) => {
                self.degrade("connect", &e);
                Ok(self.inner.registry.connection_opened(app_id, limit))
            }
        }
    }

    async fn disconnect(&self, app_id: &str) -> Result<(), ClusterError> {
        let _gate = self.inner.gate.read().await;
        self.inner.registry.connection_closed(app_id);
        let result: redis::RedisResult<i64> = self
            .inner
            .scripts
            .disconnect
            .key(self.inner.keys.conns(app_id))
            .arg(&*self.member())
            .invoke_async(&mut self.live())
            .await;
        if let Err(e) = result {
            self.degrade("disconnect", &e);
        }
        Ok(())
    }

    async fn join(
        &self,
        app_id: &str,
        channel: &str,
        outbox: Outbox,
        member: Option<Member>,
        max_members: usize,
    ) -> Result<Joined, JoinError> {
        let _gate = self.inner.gate.read().await;
        let remote = self.try_join(app_id, channel, member.as_ref(), max_members).await;
        let local_max = if matches!(remote, Ok(Ok(_))) { usize::MAX } else { max_members };
        let added = match &remote {
            Ok(Err(full)) => return Err(JoinError::Refused(full.clone())),
            _ => self.inner.registry.add(app_id, channel, outbox, member, local_max)?,
        };
        if added.subscriptions == 1 {
            self.subscribe_bus(app_id, channel).await;
        }
        Ok(match remote {
            Ok(Ok((occupied, member_added, count))) => {
                Joined { occupied, member_added, subscription_count: count }
            }
            Ok(Err(_)) => unreachable!("handled above"),
            Err(e) => {
                self.degrade("join", &e);
                Joined {
                    occupied: added.subscriptions == 1,
                    member_added: added.member_added,
                    subscription_count: added.subscriptions as u64,
                }
            }
        })
    }

    async fn leave(&self, app_id: &str, channel: &str, socket_id: &str) -> Result<Left, ClusterError> {
        let _gate = self.inner.gate.read().await;
        let removed = self.inner.registry.remove(app_id, channel, socket_id);
        let user_id = removed.user_id.clone();
        if !removed.was_subscribed {
            return Ok(Left::default());
        }
        if removed.subscriptions == 0 {
            self.unsubscribe_bus(app_id, channel).await;
        }
        Ok(match self.try_leave(app_id, channel, user_id.as_deref()).await {
            Ok((vacated, member_removed, count)) => Left {
                was_subscribed: true,
                vacated,
                member_removed: member_removed.then_some(user_id).flatten(),
                subscription_count: count,
            },
            Err(e) => {
                self.degrade("leave", &e);
                Left {
                    was_subscribed: true,
                    vacated: removed.subscriptions == 0,
                    member_removed: removed.member_removed,
                    subscription_count: removed.subscriptions as u64,
                }
            }
        })
    }

    async fn publish(
        &self,
        app_id: &str,
        channel: &str,
        frame: Utf8Bytes,
        except: Option<&str>,
    ) -> Result<(), ClusterError> {
        self.inner.registry.broadcast(app_id, channel, &frame, except);
        self.broadcast_remote(app_id, channel, frame.as_str(), except).await;
        Ok(())
    }

    async fn channel_stats(&self, app_id: &str, channel: &str) -> Result<ChannelStats, ClusterError> {
        let k = &self.inner.keys;
        let result: redis::RedisResult<(Vec<u64>, u64)> = redis::pipe()
            .hvals(k.chan(app_id, channel))
            .hlen(k.pres(app_id, channel))
            .query_async(&mut self.live())
            .await;
        match result {
            Ok((counts, users)) => {
                Ok(ChannelStats { subscription_count: counts.iter().sum(), user_count: users })
            }
            Err(e) => {
                self.degrade("channel stats", &e);
                Ok(self.inner.registry.stats(app_id, channel).into())
            }
        }
    }

    async fn channels(
        &self,
        app_id: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<(String, ChannelStats)>, ClusterError> {
        let k = &self.inner.keys;
        let listed: redis::RedisResult<Vec<String>> = self.live().smembers(k.channels(app_id)).await;
        let names: Vec<String> = match listed {
            Ok(all) => all.into_iter().filter(|c| prefix.is_none_or(|p| c.starts_with(p))).collect(),
            Err(e) => {
                self.degrade("channels", &e);
                let local = self.inner.registry.channels(app_id, prefix);
                return Ok(local.into_iter().map(|(n, s)| (n, s.into())).collect());
            }
        };
        if names.is_empty() {
            return Ok(Vec::new());
        }
        // One round trip for every channel's counts.
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.hvals(k.chan(app_id, name)).hlen(k.pres(app_id, name));
        }
        let counts: redis::RedisResult<Vec<redis::Value>> = pipe.query_async(&mut self.live()).await;
        let counts = match counts {
            Ok(c) => c,
            Err(e) => {
                self.degrade("channels", &e);
                let local = self.inner.registry.channels(app_id, prefix);
                return Ok(local.into_iter().map(|(n, s)| (n, s.into())).collect());
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
        Ok(out)
    }

    async fn members(&self, app_id: &str, channel: &str) -> Result<Vec<Member>, ClusterError> {
        let result: redis::RedisResult<Vec<(String, String)>> =
            self.live().hgetall(self.inner.keys.pinfo(app_id, channel)).await;
        match result {
            Ok(pairs) => Ok(pairs.into_iter().map(|(id, info)| member_from(id, info)).collect()),
            Err(e) => {
                self.degrade("members", &e);
                Ok(self.inner.registry.members(app_id, channel))
            }
        }
    }

    async fn sign_in(&self, app_id: &str, user_id: &Arc<str>, outbox: Outbox) -> Result<bool, ClusterError> {
        let _gate = self.inner.gate.read().await;
        let local_first = self.inner.registry.sign_in(app_id, user_id, outbox);
        let k = &self.inner.keys;
        let me = self.member();
        let result: redis::RedisResult<i64> = self
            .inner
            .scripts
            .user_in
            .key(k.users(app_id))
            .key(k.umem(app_id, &me))
            .key(k.nodekeys(&me))
            .key(k.lease(&me))
            .arg(&**user_id)
            .arg(Entry::Users(app_id).encode())
            .arg(1)
            .invoke_async(&mut self.live())
            .await;
        match result {
            Ok(first) => Ok(first == 1),
            Err(e) => {
                self.degrade("sign in", &e);
                Ok(local_first)
            }
        }
    }

    async fn sign_out(&self, app_id: &str, user_id: &str, socket_id: &str) -> Result<bool, ClusterError> {
        let _gate = self.inner.gate.read().await;
        let local_last = self.inner.registry.sign_out(app_id, user_id, socket_id);
        let k = &self.inner.keys;
        let result: redis::RedisResult<i64> = self
            .inner
            .scripts
            .user_out
            .key(k.users(app_id))
            .key(k.umem(app_id, &self.member()))
            .arg(user_id)
            .invoke_async(&mut self.live())
            .await;
        match result {
            Ok(last) => Ok(last == 1),
            Err(e) => {
                self.degrade("sign out", &e);
                Ok(local_last)
            }
        }
    }

    async fn online(&self, app_id: &str, user_ids: &[Arc<str>]) -> Result<Vec<bool>, ClusterError> {
        let ids: Vec<&str> = user_ids.iter().map(|u| &**u).collect();
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.inner.keys.users(app_id)).arg(&ids);
        let result: redis::RedisResult<Vec<Option<i64>>> = cmd.query_async(&mut self.live()).await;
        match result {
            Ok(counts) => Ok(counts.into_iter().map(|c| c.unwrap_or(0) > 0).collect()),
            Err(e) => {
                self.degrade("online", &e);
                Ok(user_ids.iter().map(|u| self.inner.registry.is_signed_in(app_id, u)).collect())
            }
        }
    }

    async fn terminate_user(&self, app_id: &str, user_id: &str) -> Result<(), ClusterError> {
        self.inner.registry.close_user(app_id, user_id, CloseReason::Unauthorized);
        self.control(bus::terminate(&self.member(), app_id, user_id)).await;
        Ok(())
    }

    async fn watch(&self, app_id: &str, user_ids: &[Arc<str>], outbox: &Outbox) -> Result<(), ClusterError> {
        self.inner.registry.watch(app_id, user_ids, outbox);
        Ok(())
    }

    async fn unwatch(
        &self,
        app_id: &str,
        user_ids: &[Arc<str>],
        socket_id: &str,
    ) -> Result<(), ClusterError> {
        self.inner.registry.unwatch(app_id, user_ids, socket_id);
        Ok(())
    }

    async fn notify_watchers(
        &self,
        app_id: &str,
        user_id: &str,
        frame: Utf8Bytes,
    ) -> Result<(), ClusterError> {
        self.inner.registry.notify_watchers(app_id, user_id, &frame);
        self.control(bus::watchers(&self.member(), app_id, user_id, frame.as_str())).await;
        Ok(())
    }

    async fn cache_set(
        &self,
        app_id: &str,
        channel: &str,
        frame: Utf8Bytes,
        ttl: Duration,
    ) -> Result<(), ClusterError> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let result: redis::RedisResult<()> =
            self.live().pset_ex(self.inner.keys.cache(app_id, channel), frame.as_str(), ms).await;
        if let Err(e) = result {
            self.degrade("cache set", &e);
        }
        Ok(())
    }

    async fn cache_get(&self, app_id: &str, channel: &str) -> Result<Option<Utf8Bytes>, ClusterError> {
        let result: redis::RedisResult<Option<String>> =
            self.live().get(self.inner.keys.cache(app_id, channel)).await;
        match result {
            Ok(hit) => Ok(hit.map(Utf8Bytes::from)),
            Err(e) => {
                self.degrade("cache get", &e);
                Ok(None)
            }
        }
    }

    fn healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Acquire)
    }

    async fn shutdown(&self) {
        lease::release(self).await;
    }
}
