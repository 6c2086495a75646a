//! Leases. Each incarnation renews `{prefix}:lease:{incarnation}` (and its score in
//! `{prefix}:nodes`) every third of the TTL. Live nodes look up incarnations whose score is in
//! the past; the one whose `claim` script removes it from `nodes` cleans up after it: takes its
//! counts away and hands the transitions that causes (vacated, member removed, user offline) to
//! the announcer. An incarnation that finds its own lease gone (it was cut off and declared
//! dead) never writes under the old id again: it starts a new incarnation and republishes what
//! it holds, announcing to the other nodes what they saw disappear.

use std::time::{SystemTime, UNIX_EPOCH};

use redis::AsyncCommands;

use super::keys::Entry;
use super::live::LinkState;
use super::membership::{hold_token, HOLD_TTL_MS};
use super::{new_incarnation, RedisCluster};
use crate::channels::AppSnapshot;
use crate::cluster::{Hold, Origin, Transition, Window};

pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl RedisCluster {
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

    async fn renew(&self) -> redis::RedisResult<bool> {
        let me = self.incarnation();
        let k = &self.inner.keys;
        let renewed: i64 = self
            .inner
            .scripts
            .renew
            .key(k.lease(&me))
            .key(k.nodes())
            .arg(&*me)
            .arg(self.inner.settings.lease_ttl.as_millis() as u64)
            .arg(now_ms())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(renewed == 1)
    }

    /// Starts a new incarnation, republishes this node's state under it, then removes the old
    /// one. Counts never pass through zero for what is still here, so nothing flaps.
    async fn resync(&self) -> redis::RedisResult<()> {
        let _gate = self.inner.gate.write().await;
        // Everything that can fail without writing goes first: a half-done resync would leave
        // a partial incarnation behind for others to reap, with spurious transitions.
        self.follow_primary().await?;
        redis::cmd("PING").query_async::<()>(&mut self.conn()).await?;
        let snapshot = self.inner.registry.snapshot();
        let mut subscriber = self.subscriber();
        subscriber.subscribe(self.inner.keys.control()).await?;
        for app in &snapshot {
            for ch in &app.channels {
                subscriber.subscribe(self.inner.keys.bus(&app.app_id, &ch.channel)).await?;
            }
        }
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
        for app in snapshot {
            let a = app.app_id.as_str();
            let mut transitions = Vec::new();
            if app.connections > 0 {
                let _: i64 = s
                    .connect
                    .key(k.conns(a))
                    .key(k.nodekeys(&me))
                    .key(k.lease(&me))
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
                        .key(k.nodekeys(&me))
                        .key(k.held_remove(a, c, &member.user_id))
                        .key(k.lease(&me))
                        .arg(&*member.user_id)
                        .arg(info)
                        .arg(i64::MAX)
                        .arg(Entry::Presence(a, c).encode())
                        .arg(*sockets)
                        .invoke_async(&mut conn)
                        .await?;
                    if added >= 1 {
                        transitions.push(Transition::MemberAdded {
                            channel: c.into(),
                            member: member.clone(),
                            webhook: added == 1,
                        });
                    }
                }
                let (before, _after, returned): (u64, u64, u64) = s
                    .join_channel
                    .key(k.chan(a, c))
                    .key(k.channels(a))
                    .key(k.nodekeys(&me))
                    .key(k.held_vacate(a, c))
                    .key(k.lease(&me))
                    .arg(&*me)
                    .arg(c)
                    .arg(Entry::Channel(a, c).encode())
                    .arg(ch.subscriptions)
                    .invoke_async(&mut conn)
                    .await?;
                if before == 0 {
                    transitions.push(Transition::Occupied { channel: c.into(), webhook: returned == 0 });
                }
            }
            for (user, sockets) in &app.users {
                let online: i64 = s
                    .user_in
                    .key(k.users(a))
                    .key(k.umem(a, &me))
                    .key(k.nodekeys(&me))
                    .key(k.lease(&me))
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

    /// Removes everything `incarnation` held, announcing (with `announce`) the transitions
    /// that causes. A failed republish removes its half-written incarnation without a word:
    /// nobody was told about it.
    pub(super) async fn cleanup(&self, incarnation: &str, announce: bool) -> redis::RedisResult<()> {
        let k = &self.inner.keys;
        let s = &self.inner.scripts;
        // The webhooks this clean-up holds for their window are listed with this node, so the
        // node that cleans up after it, should it die within the window, takes them over.
        let me = self.incarnation();
        let mut conn = self.conn();
        let mut entries: Vec<String> = conn.smembers(k.nodekeys(incarnation)).await?;
        // Counts first, announcements after: whoever reacts to a member_removed must already
        // see the dead incarnation's subscriptions gone.
        entries.sort_by_key(|e| match e.as_bytes().first() {
            Some(b'c') | Some(b'n') => 0,
            _ => 1,
        });
        let mut announced: Vec<(String, Origin, Vec<Transition>)> = Vec::new();
        let mut resumed: Vec<crate::webhooks::StoredRequest> = Vec::new();
        let mut add_as = |app: &str, origin: Origin, t: Transition| match announced
            .iter_mut()
            .find(|(a, o, _)| a == app && *o == origin)
        {
            Some((_, _, list)) => list.push(t),
            None => announced.push((app.to_owned(), origin, vec![t])),
        };
        for raw in &entries {
            let Some(entry) = Entry::decode(raw) else { continue };
            match entry {
                Entry::Channel(a, c) => {
                    let entry = Entry::HeldVacate(a, c).encode();
                    let hold = Hold {
                        key: k.held_vacate(a, c),
                        token: hold_token(),
                        listed: Some((k.nodekeys(&me), entry.clone())),
                    };
                    let vacated: i64 = s
                        .clean_channel
                        .key(k.chan(a, c))
                        .key(k.channels(a))
                        .key(&hold.key)
                        .key(k.nodekeys(&me))
                        .arg(incarnation)
                        .arg(c)
                        .arg(&hold.token)
                        .arg(HOLD_TTL_MS)
                        .arg(&entry)
                        .invoke_async(&mut conn)
                        .await?;
                    if vacated == 1 {
                        add_as(
                            a,
                            Origin::reaped(incarnation),
                            Transition::Vacated { channel: c.into(), window: Window::Cluster(hold) },
                        );
                    }
                }
                Entry::Presence(a, c) => {
                    let token = hold_token();
                    let gone: Vec<String> = s
                        .clean_hash
                        .key(k.pres(a, c))
                        .key(k.pinfo(a, c))
                        .key(k.pmem(a, c, incarnation))
                        .key(k.nodekeys(&me))
                        .arg(k.held_removes(a, c))
                        .arg(&token)
                        .arg(HOLD_TTL_MS)
                        .arg(Entry::HeldRemove(a, c, "").encode())
                        .invoke_async(&mut conn)
                        .await?;
                    for user_id in gone {
                        let listed = Some((k.nodekeys(&me), Entry::HeldRemove(a, c, &user_id).encode()));
                        let hold = Hold { key: k.held_remove(a, c, &user_id), token: token.clone(), listed };
                        let user_id = user_id.into();
                        let window = Window::Cluster(hold);
                        add_as(
                            a,
                            Origin::reaped(incarnation),
                            Transition::MemberRemoved { channel: c.into(), user_id, window },
                        );
                    }
                }
                Entry::Users(a) => {
                    let offline: Vec<String> = s
                        .clean_hash
                        .key(k.users(a))
                        .key(k.users(a))
                        .key(k.umem(a, incarnation))
                        .key(k.nodekeys(&me))
                        .arg("")
                        .arg("")
                        .arg(0)
                        .arg("")
                        .invoke_async(&mut conn)
                        .await?;
                    for user_id in offline {
                        add_as(
                            a,
                            Origin::reaped(incarnation),
                            Transition::UserOffline { user_id: user_id.into() },
                        );
                    }
                }
                Entry::Conns(a) => {
                    let _: i64 = conn.hdel(k.conns(a), incarnation).await?;
                }
                // A webhook the dead incarnation held for its window: still held (nobody came
                // back), so this node takes it over and ends its window.
                // Requests the dead incarnation was delivering: finished here, unless they are
                // this process's own (a resync's old incarnation: still delivered from memory).
                Entry::Webhooks => {
                    let stored: Vec<(String, String)> = conn.hgetall(k.hooks(incarnation)).await?;
                    let _: i64 = conn.del(k.hooks(incarnation)).await?;
                    if !self.is_own(incarnation) {
                        resumed.extend(
                            stored.into_iter().filter_map(|(_, json)| serde_json::from_str(&json).ok()),
                        );
                    }
                }
                Entry::HeldVacate(a, c) => {
                    let key = k.held_vacate(a, c);
                    let token: Option<String> = conn.get(&key).await?;
                    // `token#releaser`: released already, its webhook sent.
                    if let Some(token) = token.filter(|t| !t.contains('#')) {
                        let listed = self.list_hold(&mut conn, &me, Entry::HeldVacate(a, c)).await?;
                        let window = Window::Cluster(Hold { key, token, listed });
                        add_as(a, Origin::Takeover, Transition::Vacated { channel: c.into(), window });
                    }
                }
                Entry::HeldRemove(a, c, user) => {
                    let key = k.held_remove(a, c, user);
                    let token: Option<String> = conn.get(&key).await?;
                    if let Some(token) = token.filter(|t| !t.contains('#')) {
                        let listed = self.list_hold(&mut conn, &me, Entry::HeldRemove(a, c, user)).await?;
                        let window = Window::Cluster(Hold { key, token, listed });
                        let t = Transition::MemberRemoved { channel: c.into(), user_id: user.into(), window };
                        add_as(a, Origin::Takeover, t);
                    }
                }
            }
        }
        // Leaving `nodes` comes last: until then, a clean-up cut short is found and finished by
        // another node (every step above is idempotent).
        redis::pipe()
            .atomic()
            .del(k.nodekeys(incarnation))
            .ignore()
            .del(k.lease(incarnation))
            .ignore()
            .del(k.claim(incarnation))
            .ignore()
            .zrem(k.nodes(), incarnation)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        self.inner.metrics.cleanups.inc();
        if announce {
            for (app_id, origin, transitions) in announced {
                self.announce(&app_id, origin, transitions);
            }
            if !resumed.is_empty() {
                tracing::warn!(count = resumed.len(), dead = %incarnation, "taking over webhook deliveries");
                let _ = self.inner.announce.send(crate::cluster::Announcement::Resume(resumed));
            }
        }
        Ok(())
    }

    /// Lists a hold this node took over with it (see [`Entry::HeldVacate`]), for its release to
    /// unlist.
    async fn list_hold(
        &self,
        conn: &mut redis::aio::ConnectionManager,
        me: &str,
        entry: Entry<'_>,
    ) -> redis::RedisResult<Option<(String, String)>> {
        let (nodekeys, entry) = (self.inner.keys.nodekeys(me), entry.encode());
        let _: i64 = conn.sadd(&nodekeys, &entry).await?;
        Ok(Some((nodekeys, entry)))
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

/// Renews the lease, resyncs after trouble, reaps dead members; until the cluster stops.
pub(super) async fn run(cluster: RedisCluster) {
    let inner = &cluster.inner;
    let mut tick = tokio::time::interval(inner.settings.lease_ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.stopped.cancelled() => return,
            _ = tick.tick() => {}
        }
        if inner.link.get() != LinkState::Down {
            let started = std::time::Instant::now();
            let renewed = cluster.renew().await;
            inner.metrics.redis_latency.observe(started.elapsed().as_secs_f64());
            match renewed {
                Ok(true) => {
                    inner.metrics.lease_renewals.inc();
                }
                Ok(false) => {
                    tracing::warn!(incarnation = %cluster.incarnation(), "lease lost: this node was declared dead; rejoining");
                    inner.link.set(LinkState::Down);
                }
                Err(e) => cluster.degrade("renew lease", &e),
            }
        }
        if inner.link.get() == LinkState::Down {
            match cluster.resync().await {
                Ok(()) => {
                    inner.link.set(LinkState::Up);
                }
                Err(e) => {
                    inner.metrics.redis_errors.inc();
                    tracing::debug!(error = %e, "resync failed; retrying");
                    continue;
                }
            }
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
