//! Leases. Each incarnation renews its `lease` (and its score in `nodes`) every third of the
//! TTL, and with it the `alive` key of each app it wrote to: the fence its scripts check in the
//! app's own slot, so no script spans two slots on a Redis Cluster. Live nodes look up
//! incarnations whose score is in the past; the one whose `claim` script removes it from `nodes`
//! cleans up after it ([`super::cleanup`]). An incarnation that finds its own lease gone (it was
//! cut off and declared dead) never writes under the old id again: it starts a new incarnation
//! and republishes what it holds, announcing to the other nodes what they saw disappear.

use std::time::{SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionLike;
use redis::AsyncCommands;

use super::keys::Entry;
use super::live::LinkState;
use super::{new_incarnation, RedisCluster};
use crate::channels::AppSnapshot;
use crate::cluster::{Origin, Transition};

pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl RedisCluster {
    /// Loads every script into Redis (every primary of a Redis Cluster) before the first socket
    /// needs one: a first call that finds its script missing costs two more round trips, and
    /// a frame published late is one a node that subscribes meanwhile receives after its
    /// snapshot already told of it. Again after every resync (a restarted Redis forgot them).
    pub(super) async fn load_scripts(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn();
        for script in self.inner.scripts.all().into_iter().chain([&self.inner.publish]) {
            script.prepare_invoke().load_async(&mut conn).await?;
        }
        Ok(())
    }

    /// Takes the lease of the current incarnation.
    pub(super) async fn register(&self) -> redis::RedisResult<()> {
        let me = self.incarnation();
        let ttl = self.inner.settings.lease_ttl.as_millis() as u64;
        let k = &self.inner.keys;
        redis::pipe()
            .cmd("SET")
            .arg(k.lease(&me))
            .arg(1)
            .arg("PX")
            .arg(ttl)
            .ignore()
            .zadd(k.nodes(), &*me, now_ms() + ttl)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
    }

    /// Reads (creating it if missing) the dataset epoch, and whether it is the one this node
    /// saw before, i.e. Redis kept its data. [`RedisCluster::remember_epoch`] records it.
    pub(super) async fn current_epoch(&self) -> redis::RedisResult<(bool, String)> {
        let key = self.inner.keys.epoch();
        let fresh = format!("{:016x}", rand::random::<u64>());
        let (epoch,): (String,) = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(&fresh)
            .arg("NX")
            .ignore()
            .get(&key)
            .query_async(&mut self.conn())
            .await?;
        let seen = self.inner.epoch.read().unwrap_or_else(|p| p.into_inner());
        Ok((*seen == epoch, epoch))
    }

    pub(super) fn remember_epoch(&self, epoch: String) {
        *self.inner.epoch.write().unwrap_or_else(|p| p.into_inner()) = epoch;
    }

    /// Lists the current incarnation with `app` and sets its `alive` key there, for no longer
    /// than its lease has left, before its first write to the app: the node that cleans up after
    /// it finds the app, and a fenced script in the app fails once the lease is gone. Fenced
    /// itself when the lease is.
    pub(super) async fn enter_app(
        &self,
        conn: &mut impl ConnectionLike,
        me: &std::sync::Arc<str>,
        app: &str,
    ) -> redis::RedisResult<()> {
        let entered = |apps: &(std::sync::Arc<str>, std::collections::HashSet<String>)| {
            apps.0 == *me && apps.1.contains(app)
        };
        if entered(&self.inner.apps.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(());
        }
        let k = &self.inner.keys;
        let left: i64 =
            self.inner.scripts.touch_app.key(k.lease(me)).key(k.apps(me)).arg(app).invoke_async(conn).await?;
        redis::cmd("SET").arg(k.alive(app, me)).arg(1).arg("PX").arg(left).query_async::<()>(conn).await?;
        let mut apps = self.inner.apps.lock().unwrap_or_else(|p| p.into_inner());
        if apps.0 == *me {
            apps.1.insert(app.to_owned());
        }
        Ok(())
    }

    /// Whether Redis still holds this node's lease, asked by the readiness probe: a Redis that
    /// restarted empty since the last renewal forgot it, with everything this node published.
    /// The link then goes down and the lease task resyncs at once.
    pub(super) async fn holds_lease(&self) -> bool {
        let me = self.incarnation();
        let held: redis::RedisResult<bool> = self.conn().exists(self.inner.keys.lease(&me)).await;
        match held {
            Ok(true) => true,
            Ok(false) => {
                // Only from up: a resync under way (or done since we asked) owns the state.
                if self.inner.link.replace(LinkState::Up, LinkState::Down) {
                    tracing::warn!(incarnation = %me, "lease gone (Redis restarted, or this node was declared dead): not ready; rejoining");
                    self.inner.check_lease.notify_one();
                }
                false
            }
            Err(e) => {
                self.degrade("readiness check", &e);
                false
            }
        }
    }

    async fn renew(&self) -> redis::RedisResult<bool> {
        let me = self.incarnation();
        let k = &self.inner.keys;
        let ttl = self.inner.settings.lease_ttl;
        let started = std::time::Instant::now();
        let renewed: i64 = self
            .inner
            .scripts
            .renew
            .key(k.lease(&me))
            .key(k.nodes())
            .arg(&*me)
            .arg(ttl.as_millis() as u64)
            .arg(now_ms())
            .invoke_async(&mut self.conn())
            .await?;
        if renewed != 1 {
            return Ok(false);
        }
        // The apps' fences follow, never outliving the lease: they start from when it was asked.
        let apps: Vec<String> = {
            let apps = self.inner.apps.lock().unwrap_or_else(|p| p.into_inner());
            if apps.0 != me {
                return Ok(true);
            }
            apps.1.iter().cloned().collect()
        };
        // Each app's key in its own slot: one command each, sent at once (one round trip).
        let left = ttl.saturating_sub(started.elapsed()).as_millis().max(1) as u64;
        let conn = self.conn();
        futures_util::future::try_join_all(
            apps.iter().map(|app| {
                let mut conn = conn.clone();
                let key = k.alive(app, &me);
                async move {
                    redis::cmd("SET").arg(key).arg(1).arg("PX").arg(left).query_async::<()>(&mut conn).await
                }
            }),
        )
        .await?;
        Ok(true)
    }

    /// Subscribes the control channel and the bus channel of every local channel in
    /// `snapshot` (again: a subscription Redis already has is kept as it is).
    pub(super) async fn listen_all(&self, snapshot: &[AppSnapshot]) -> redis::RedisResult<()> {
        let mut subscriber = self.subscriber();
        subscriber.listen(&self.inner.keys.control()).await?;
        for app in snapshot {
            for ch in &app.channels {
                subscriber.listen(&self.inner.keys.bus(&app.app_id, &ch.channel)).await?;
            }
        }
        Ok(())
    }

    /// Starts a new incarnation, republishes this node's state under it, then removes the old
    /// one. Counts never pass through zero for what is still here, so nothing flaps.
    async fn resync(&self) -> redis::RedisResult<()> {
        let _gate = self.inner.gate.write().await;
        // Everything that can fail without writing goes first: a half-done resync would leave
        // a partial incarnation behind for others to reap, with spurious transitions.
        self.follow_primary().await?;
        redis::cmd("PING").query_async::<()>(&mut self.conn()).await?;
        self.load_scripts().await?;
        let snapshot = self.inner.registry.snapshot();
        self.listen_all(&snapshot).await?;
        // What was published before these subscriptions took hold is in the bus log.
        self.inner.resubscribed.notify_one();
        // Redis kept its data: others may have cleaned our old incarnation up and told clients
        // and webhooks; what we republish is then news to them. Redis restarted empty: the
        // republish restores state nobody saw disappear, so it announces nothing.
        let (announce, epoch) = self.current_epoch().await?;
        let old = self.incarnation();
        let new = new_incarnation(&self.inner.settings.node_id);
        self.set_incarnation(new.clone());
        // Socket operations wait on the gate; let this task's own writes through.
        self.inner.link.set(LinkState::Rejoining);
        if let Err(e) = self.republish(&snapshot, announce).await {
            let _ = self.cleanup(&new, false).await;
            self.set_incarnation(old);
            self.inner.link.set(LinkState::Down);
            return Err(e);
        }
        self.remember_epoch(epoch);
        if let Err(e) = self.cleanup(&old, true).await {
            // The old incarnation's lease expires and another node (or we) reap it.
            tracing::warn!(error = %e, previous = %old, "could not remove the previous incarnation yet");
        }
        tracing::info!(incarnation = %new, previous = %old, "rejoined the Redis cluster");
        Ok(())
    }

    fn set_incarnation(&self, incarnation: std::sync::Arc<str>) {
        let mut own = self.inner.own.write().unwrap_or_else(|p| p.into_inner());
        if !own.contains(&incarnation) {
            // Only recent incarnations can still have messages in flight.
            if own.len() >= 8 {
                own.remove(0);
            }
            own.push(incarnation.clone());
        }
        drop(own);
        *self.inner.apps.lock().unwrap_or_else(|p| p.into_inner()) =
            (incarnation.clone(), Default::default());
        *self.inner.incarnation.write().unwrap_or_else(|p| p.into_inner()) = incarnation;
    }

    /// Writes this node's state under the current incarnation. With `announce` (Redis kept its
    /// data, so the other nodes may have seen it cleaned up), what that makes true again is
    /// announced to the other nodes.
    async fn republish(&self, snapshot: &[AppSnapshot], announce: bool) -> redis::RedisResult<()> {
        self.register().await?;
        let me = self.incarnation();
        let k = &self.inner.keys;
        let s = &self.inner.scripts;
        let mut conn = self.conn();
        let cutoff = super::membership::window_cutoff();
        for app in snapshot {
            let a = app.app_id.as_str();
            let mut transitions = Vec::new();
            self.enter_app(&mut conn, &me, a).await?;
            if app.connections > 0 {
                let _: i64 = s
                    .connect
                    .key(k.conns(a))
                    .key(k.nodekeys(a, &me))
                    .key(k.alive(a, &me))
                    .arg(&*me)
                    .arg(-1)
                    .arg(Entry::Conns(a).encode())
                    .arg(app.connections)
                    .invoke_async(&mut conn)
                    .await?;
            }
            for ch in &app.channels {
                let c = ch.channel.as_str();
                for (member, sockets) in &ch.members {
                    let info = member.user_info.as_ref().map_or("", |i| i.get());
                    let added: i64 = s
                        .presence_join
                        .key(k.pres(a, c))
                        .key(k.pinfo(a, c))
                        .key(k.pmem(a, c, &me))
                        .key(k.nodekeys(a, &me))
                        .key(k.held_remove(a, c, &member.user_id))
                        .key(k.alive(a, &me))
                        .arg(&*member.user_id)
                        .arg(info)
                        .arg(i64::MAX)
                        .arg(Entry::Presence(a, c).encode())
                        .arg(*sockets)
                        .arg(cutoff)
                        .arg(&*me)
                        .invoke_async(&mut conn)
                        .await?;
                    if added == 3 {
                        let user_id = Some(member.user_id.clone());
                        transitions.push(Transition::Overdue { channel: c.into(), user_id });
                    }
                    if added >= 1 {
                        transitions.push(Transition::MemberAdded {
                            channel: c.into(),
                            member: member.clone(),
                            webhook: added != 2,
                            seq: 0,
                        });
                    }
                }
                let (before, _after, returned): (u64, u64, u64) =
                    self.join_channel(a, c, &me, ch.subscriptions, cutoff).invoke_async(&mut conn).await?;
                if before == 0 && returned == 2 {
                    transitions.push(Transition::Overdue { channel: c.into(), user_id: None });
                }
                if before == 0 {
                    transitions.push(Transition::Occupied { channel: c.into(), webhook: returned != 1 });
                }
            }
            for (user, sockets) in &app.users {
                let online: i64 = s
                    .user_in
                    .key(k.users(a))
                    .key(k.umem(a, &me))
                    .key(k.nodekeys(a, &me))
                    .key(k.alive(a, &me))
                    .arg(&**user)
                    .arg(Entry::Users(a).encode())
                    .arg(*sockets)
                    .invoke_async(&mut conn)
                    .await?;
                if online == 1 {
                    transitions.push(Transition::UserOnline { user_id: user.clone() });
                }
            }
            if announce {
                self.announce(a, Origin::Rejoin, transitions);
            }
        }
        Ok(())
    }

    /// How long a claim keeps other nodes off a dead incarnation's clean-up: two lease TTLs.
    /// A claimer that dies or stalls longer hands the clean-up to the next node that looks.
    fn claim_hold(&self) -> std::time::Duration {
        self.inner.settings.lease_ttl * 2
    }

    /// Claims and cleans up incarnations whose lease ran out.
    async fn reap(&self) -> redis::RedisResult<()> {
        let k = &self.inner.keys;
        let me = self.incarnation();
        let stale: Vec<String> = self.conn().zrangebyscore(k.nodes(), "-inf", now_ms()).await?;
        for dead in stale.into_iter().filter(|m| **m != *me) {
            let claimed: i64 = self
                .inner
                .scripts
                .claim
                .key(k.nodes())
                .key(k.lease(&dead))
                .key(k.claim(&dead))
                .arg(&dead)
                .arg(now_ms())
                .arg(self.claim_hold().as_millis() as u64)
                .arg(&*me)
                .invoke_async(&mut self.conn())
                .await?;
            if claimed == 1 {
                tracing::warn!(dead = %dead, cleaner = %me, "lease expired: cleaning up after a dead node");
                self.cleanup(&dead, true).await?;
            }
        }
        Ok(())
    }
}

/// The first wait before a failed resync is tried again.
const RESYNC_RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest wait between resync attempts (shorter when a third of the lease is).
const RESYNC_RETRY_CAP: std::time::Duration = std::time::Duration::from_secs(2);

/// Renews the lease, resyncs after trouble, reaps dead members; until the cluster stops.
pub(super) async fn run(cluster: RedisCluster) {
    let inner = &cluster.inner;
    let mut tick = tokio::time::interval(inner.settings.lease_ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // After this node was cut off, it reaps nobody for one lease: others cut off by the same
    // outage (every node, when a Redis or the primary holding the leases was away longer than
    // a lease) find their leases gone and rejoin by themselves, with no member or channel
    // passing through zero. Reaping them first would tell clients they left and came back.
    let mut reap_from = std::time::Instant::now();
    // A failed resync is retried sooner than the next renewal, so a node is ready again soon
    // after Redis is; doubling up to the renewal period (or two seconds) while Redis stays away.
    let retry_cap = (inner.settings.lease_ttl / 3).min(RESYNC_RETRY_CAP);
    let mut retry = RESYNC_RETRY_MIN;
    loop {
        let down = inner.link.get() == LinkState::Down;
        tokio::select! {
            _ = inner.stopped.cancelled() => return,
            _ = tick.tick() => {}
            _ = inner.check_lease.notified() => {}
            _ = tokio::time::sleep(retry), if down => {}
        }
        // Renewed while the link is down too: a node that reaches the leases but not some
        // other part of Redis (a Redis Cluster shard failing over) still holds its sockets, so
        // it must not be declared dead and its members announced gone, then back.
        let down = inner.link.get() == LinkState::Down;
        let started = std::time::Instant::now();
        let renewed = cluster.renew().await;
        inner.metrics.redis_latency.observe(started.elapsed().as_secs_f64());
        match renewed {
            Ok(true) => {
                inner.metrics.lease_renewals.inc();
            }
            Ok(false) if !down => {
                tracing::warn!(incarnation = %cluster.incarnation(), "lease gone (Redis restarted empty, or this node was declared dead): rejoining");
                inner.link.set(LinkState::Down);
            }
            Err(e) if !down => cluster.degrade("renew lease", &e),
            // Down already: the resync below tries again.
            Ok(false) | Err(_) => {}
        }
        if inner.link.get() == LinkState::Down {
            match cluster.resync().await {
                Ok(()) => {
                    inner.link.set(LinkState::Up);
                    reap_from = std::time::Instant::now() + inner.settings.lease_ttl;
                    retry = RESYNC_RETRY_MIN;
                }
                Err(e) => {
                    inner.metrics.redis_errors.inc();
                    tracing::debug!(error = %e, ?retry, "resync failed; retrying");
                    retry = (retry * 2).min(retry_cap);
                    continue;
                }
            }
        }
        if std::time::Instant::now() < reap_from {
            continue;
        }
        if let Err(e) = cluster.reap().await {
            cluster.degrade("reap", &e);
        }
    }
}

/// Graceful shutdown: stop renewing and remove this incarnation at once.
pub(super) async fn release(cluster: &RedisCluster) {
    cluster.inner.stopped.cancel();
    let me = cluster.incarnation();
    match cluster.cleanup(&me, true).await {
        Ok(()) => tracing::info!(incarnation = %me, "left the Redis cluster"),
        Err(e) => tracing::warn!(error = %e, "could not release the lease; it will expire"),
    }
}
