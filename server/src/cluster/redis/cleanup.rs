//! Cleaning up after an incarnation: a dead one (claimed by [`super::lease`]), this node's
//! previous one after a resync, or its own on a graceful shutdown. App by app — each app's
//! steps touch that app's slot only — then the node-level keys; every step is idempotent, so a
//! clean-up cut short is finished by whoever claims the incarnation next.

use redis::AsyncCommands;

use super::conn::Conn;
use super::keys::Entry;
use super::membership::{hold_token, HOLD_TTL_MS};
use super::RedisCluster;
use crate::cluster::{Hold, Origin, Transition, Window};

/// What a clean-up found to announce.
#[derive(Default)]
struct Found {
    announced: Vec<(String, Origin, Vec<Transition>)>,
}

impl Found {
    fn add(&mut self, app: &str, origin: Origin, t: Transition) {
        match self.announced.iter_mut().find(|(a, o, _)| a == app && *o == origin) {
            Some((_, _, list)) => list.push(t),
            None => self.announced.push((app.to_owned(), origin, vec![t])),
        }
    }
}

impl RedisCluster {
    /// Removes everything `incarnation` held, announcing (with `announce`) the transitions
    /// that causes. A failed republish removes its half-written incarnation without a word:
    /// nobody was told about it.
    pub(super) async fn cleanup(&self, incarnation: &str, announce: bool) -> redis::RedisResult<()> {
        let k = &self.inner.keys;
        let me = self.incarnation();
        let mut conn = self.conn();
        let mut found = Found::default();
        let apps: Vec<String> = conn.smembers(k.apps(incarnation)).await?;
        for app in &apps {
            // The fence first: no script of that incarnation changes this app from here on.
            let _: i64 = conn.del(k.alive(app, incarnation)).await?;
            // The webhooks this clean-up holds for their window are listed with this node, so
            // the node that cleans up after it, should it die within the window, takes them over.
            if *me != *incarnation {
                self.enter_app(&mut conn, &me, app).await?;
            }
            self.cleanup_app(&mut conn, incarnation, app, &mut found).await?;
            let _: i64 = conn.del(k.nodekeys(app, incarnation)).await?;
        }
        // Requests the dead incarnation was delivering: finished here, unless they are this
        // process's own (a resync's old incarnation: still delivered from memory).
        let stored: Vec<(String, String)> = conn.hgetall(k.hooks(incarnation)).await?;
        let resumed: Vec<crate::webhooks::StoredRequest> = if self.is_own(incarnation) {
            Vec::new()
        } else {
            stored.into_iter().filter_map(|(_, json)| serde_json::from_str(&json).ok()).collect()
        };
        // Leaving `nodes` comes last: until then, a clean-up cut short is found and finished by
        // another node (every step above is idempotent).
        redis::pipe()
            .del(k.hooks(incarnation))
            .ignore()
            .del(k.apps(incarnation))
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
            for (app_id, origin, transitions) in found.announced {
                self.announce(&app_id, origin, transitions);
            }
            if !resumed.is_empty() {
                tracing::warn!(count = resumed.len(), dead = %incarnation, "taking over webhook deliveries");
                let _ = self.inner.announce.send(crate::cluster::Announcement::Resume(resumed));
            }
        }
        Ok(())
    }

    /// Takes away what `incarnation` held in one app.
    async fn cleanup_app(
        &self,
        conn: &mut Conn,
        incarnation: &str,
        app: &str,
        found: &mut Found,
    ) -> redis::RedisResult<()> {
        let k = &self.inner.keys;
        let s = &self.inner.scripts;
        let me = self.incarnation();
        let mut entries: Vec<String> = conn.smembers(k.nodekeys(app, incarnation)).await?;
        // Counts first, announcements after: whoever reacts to a member_removed must already
        // see the dead incarnation's subscriptions gone.
        entries.sort_by_key(|e| match e.as_bytes().first() {
            Some(b'c') | Some(b'n') => 0,
            _ => 1,
        });
        for raw in &entries {
            let Some(entry) = Entry::decode(raw) else { continue };
            match entry {
                Entry::Channel(a, c) => {
                    let entry = Entry::HeldVacate(a, c).encode();
                    let hold = Hold {
                        key: k.held_vacate(a, c),
                        token: hold_token(),
                        listed: Some((k.nodekeys(a, &me), entry.clone())),
                    };
                    let vacated: i64 = s
                        .clean_channel
                        .key(k.chan(a, c))
                        .key(k.channels(a))
                        .key(&hold.key)
                        .key(k.nodekeys(a, &me))
                        .arg(incarnation)
                        .arg(c)
                        .arg(&hold.token)
                        .arg(HOLD_TTL_MS)
                        .arg(&entry)
                        .invoke_async(conn)
                        .await?;
                    if vacated == 1 {
                        found.add(
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
                        .key(k.nodekeys(a, &me))
                        .arg(k.held_removes(a, c))
                        .arg(&token)
                        .arg(HOLD_TTL_MS)
                        .arg(Entry::HeldRemove(a, c, "").encode())
                        .invoke_async(conn)
                        .await?;
                    for user_id in gone {
                        let listed = Some((k.nodekeys(a, &me), Entry::HeldRemove(a, c, &user_id).encode()));
                        let hold = Hold { key: k.held_remove(a, c, &user_id), token: token.clone(), listed };
                        let user_id = user_id.into();
                        let window = Window::Cluster(hold);
                        found.add(
                            a,
                            Origin::reaped(incarnation),
                            Transition::MemberRemoved { channel: c.into(), user_id, window, seq: 0 },
                        );
                    }
                }
                Entry::Users(a) => {
                    let offline: Vec<String> = s
                        .clean_hash
                        .key(k.users(a))
                        .key(k.users(a))
                        .key(k.umem(a, incarnation))
                        .key(k.nodekeys(a, &me))
                        .arg("")
                        .arg("")
                        .arg(0)
                        .arg("")
                        .invoke_async(conn)
                        .await?;
                    for user_id in offline {
                        found.add(
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
                Entry::HeldVacate(a, c) => {
                    let key = k.held_vacate(a, c);
                    let token: Option<String> = conn.get(&key).await?;
                    // `token#releaser`: released already, its webhook sent.
                    if let Some(token) = token.filter(|t| !t.contains('#')) {
                        let listed = self.list_hold(conn, &me, Entry::HeldVacate(a, c)).await?;
                        let window = Window::Cluster(Hold { key, token, listed });
                        found.add(a, Origin::Takeover, Transition::Vacated { channel: c.into(), window });
                    }
                }
                Entry::HeldRemove(a, c, user) => {
                    let key = k.held_remove(a, c, user);
                    let token: Option<String> = conn.get(&key).await?;
                    if let Some(token) = token.filter(|t| !t.contains('#')) {
                        let listed = self.list_hold(conn, &me, Entry::HeldRemove(a, c, user)).await?;
                        let window = Window::Cluster(Hold { key, token, listed });
                        let user_id = user.into();
                        let t = Transition::MemberRemoved { channel: c.into(), user_id, window, seq: 0 };
                        found.add(a, Origin::Takeover, t);
                    }
                }
            }
        }
        Ok(())
    }

    /// Lists a hold this node took over with it (see [`Entry::HeldVacate`]), for its release to
    /// unlist.
    async fn list_hold(
        &self,
        conn: &mut Conn,
        me: &str,
        entry: Entry<'_>,
    ) -> redis::RedisResult<Option<(String, String)>> {
        let app = match &entry {
            Entry::HeldVacate(app, _) | Entry::HeldRemove(app, _, _) => *app,
            Entry::Channel(app, _) | Entry::Presence(app, _) | Entry::Users(app) | Entry::Conns(app) => *app,
        };
        let (nodekeys, entry) = (self.inner.keys.nodekeys(app, me), entry.encode());
        let _: i64 = conn.sadd(&nodekeys, &entry).await?;
        Ok(Some((nodekeys, entry)))
    }
}
