//! This node's registry: for each app, each channel's local subscribers and the presence members
//! those subscribers stand for. Fan-out reads it; the [`crate::cluster`] implementations update
//! it. Sharded maps (`DashMap`) keep a busy channel from blocking subscribes on others; no lock
//! here is ever held across an `.await` (every method is synchronous).

mod member;

pub use member::{ChannelDataError, Member, MemberSeq, PENDING};

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::{AppLabel, Metrics};
use crate::outbox::{Delivery, Outbox};

#[derive(Debug)]
struct Subscription {
    outbox: Outbox,
    /// The presence user this socket joined as.
    user_id: Option<Arc<str>>,
    /// The member sequence of the member list the socket was given: member events numbered up
    /// to it are in that list already.
    seen: MemberSeq,
}

#[derive(Debug)]
struct LocalMember {
    member: Member,
    /// How many local sockets hold this membership.
    sockets: u32,
}

#[derive(Debug, Default)]
struct Channel {
    subscribers: HashMap<Arc<str>, Subscription>,
    members: HashMap<Arc<str>, LocalMember>,
    /// Member events held for subscribers whose member list is still being read ([`PENDING`]):
    /// socket, the event's number, the frame.
    held: Vec<(Arc<str>, MemberSeq, Utf8Bytes)>,
}

/// Sockets keyed by socket id.
type Sockets = HashMap<Arc<str>, Outbox>;

#[derive(Debug)]
struct AppChannels {
    channels: DashMap<String, Channel>,
    /// Signed-in user → its sockets on this node.
    users: DashMap<Arc<str>, Sockets>,
    /// Watched user → the sockets watching it on this node.
    watchers: DashMap<Arc<str>, Sockets>,
    /// Open connections; also the `herald_connected` gauge of the app.
    connections: Gauge,
    /// The `herald_channels` gauge of the app.
    channel_count: Gauge,
}

/// What this node holds of one app.
#[derive(Debug, Clone)]
pub struct AppSnapshot {
    /// The app.
    pub app_id: String,
    /// Open connections.
    pub connections: u64,
    /// Channels with local subscribers.
    pub channels: Vec<ChannelSnapshot>,
    /// Signed-in users with their local socket counts.
    pub users: Vec<(Arc<str>, u64)>,
}

/// What this node holds of one channel.
#[derive(Debug, Clone)]
pub struct ChannelSnapshot {
    /// The channel.
    pub channel: String,
    /// Local subscribers.
    pub subscriptions: u64,
    /// Presence members with their local socket counts.
    pub members: Vec<(Member, u64)>,
}

/// Result of adding a socket to a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// Local subscribers after the add.
    pub subscriptions: usize,
    /// Whether this user was not a member before (presence only).
    pub member_added: bool,
}

/// Result of removing a socket from a channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Removed {
    /// Whether the socket was subscribed at all.
    pub was_subscribed: bool,
    /// Local subscribers after the removal.
    pub subscriptions: usize,
    /// The user whose last local socket left (presence only).
    pub member_removed: Option<Arc<str>>,
    /// The presence user the socket had joined as.
    pub user_id: Option<Arc<str>>,
}

/// Why a socket could not be added.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AddError {
    /// The presence channel already has its maximum of distinct members.
    #[error("presence channel is full ({max} members)")]
    PresenceFull {
        /// The app's member limit.
        max: usize,
    },
}

/// Cheap-clone handle to the registry.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    apps: Arc<DashMap<String, Arc<AppChannels>>>,
    connection_gauges: Family<AppLabel, Gauge>,
    channel_gauges: Family<AppLabel, Gauge>,
}

/// Local counts of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalStats {
    /// Sockets subscribed.
    pub subscriptions: usize,
    /// Distinct presence users.
    pub users: usize,
}

impl Registry {
    /// A registry that keeps the `herald_connected` and `herald_channels` gauges.
    pub fn new(metrics: &Metrics) -> Self {
        Registry {
            apps: Arc::default(),
            connection_gauges: metrics.connected.clone(),
            channel_gauges: metrics.channels.clone(),
        }
    }

    fn app(&self, app_id: &str) -> Arc<AppChannels> {
        if let Some(app) = self.apps.get(app_id) {
            return app.clone();
        }
        let label = AppLabel::new(app_id);
        self.apps
            .entry(app_id.to_owned())
            .or_insert_with(|| {
                Arc::new(AppChannels {
                    channels: DashMap::with_shard_amount(64),
                    users: DashMap::new(),
                    watchers: DashMap::new(),
                    connections: self.connection_gauges.get_or_create(&label).clone(),
                    channel_count: self.channel_gauges.get_or_create(&label).clone(),
                })
            })
            .clone()
    }

    fn existing(&self, app_id: &str) -> Option<Arc<AppChannels>> {
        self.apps.get(app_id).map(|a| a.clone())
    }

    /// Counts a new connection unless the app is at `limit`; returns whether it was admitted.
    pub fn connection_opened(&self, app_id: &str, limit: Option<u64>) -> bool {
        let app = self.app(app_id);
        let result =
            app.connections.inner().fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| match limit {
                Some(max) if n >= 0 && n as u64 >= max => None,
                _ => Some(n + 1),
            });
        result.is_ok()
    }

    /// Forgets a connection counted by [`Registry::connection_opened`].
    pub fn connection_closed(&self, app_id: &str) {
        if let Some(app) = self.existing(app_id) {
            app.connections.dec();
        }
    }

    /// Open connections of an app on this node.
    pub fn connections(&self, app_id: &str) -> u64 {
        self.existing(app_id).map_or(0, |a| a.connections.get().max(0) as u64)
    }

    /// Adds a socket (and, on presence channels, its member) to a channel. Adding a socket that
    /// is already subscribed changes nothing.
    pub fn add(
        &self,
        app_id: &str,
        channel: &str,
        outbox: Outbox,
        member: Option<Member>,
        max_members: usize,
    ) -> Result<Added, AddError> {
        self.add_seen(app_id, channel, outbox, member, max_members, 0)
    }

    /// [`Registry::add`] for a socket given a member list with sequence `seen` (see
    /// [`Registry::broadcast_member`]).
    pub fn add_seen(
        &self,
        app_id: &str,
        channel: &str,
        outbox: Outbox,
        member: Option<Member>,
        max_members: usize,
        seen: MemberSeq,
    ) -> Result<Added, AddError> {
        let app = self.app(app_id);
        let mut entry = match app.channels.entry(channel.to_owned()) {
            Entry::Occupied(e) => e.into_ref(),
            Entry::Vacant(e) => {
                app.channel_count.inc();
                e.insert(Channel::default())
            }
        };
        let ch = entry.value_mut();
        if ch.subscribers.contains_key(outbox.socket_id()) {
            return Ok(Added { subscriptions: ch.subscribers.len(), member_added: false });
        }
        let mut member_added = false;
        let user_id = match member {
            Some(member) => {
                let user_id = member.user_id.clone();
                let full = ch.members.len() >= max_members;
                match ch.members.get_mut(&user_id) {
                    Some(existing) => existing.sockets += 1,
                    None if full => {
                        let empty = ch.subscribers.is_empty();
                        drop(entry);
                        if empty {
                            Self::drop_if_empty(&app, channel);
                        }
                        return Err(AddError::PresenceFull { max: max_members });
                    }
                    None => {
                        ch.members.insert(user_id.clone(), LocalMember { member, sockets: 1 });
                        member_added = true;
                    }
                }
                Some(user_id)
            }
            None => None,
        };
        ch.subscribers.insert(outbox.socket_id().clone(), Subscription { outbox, user_id, seen });
        Ok(Added { subscriptions: ch.subscribers.len(), member_added })
    }

    /// Removes a socket from a channel; the channel entry goes when its last subscriber does.
    pub fn remove(&self, app_id: &str, channel: &str, socket_id: &str) -> Removed {
        let Some(app) = self.existing(app_id) else {
            return Removed::default();
        };
        let removed = {
            let Some(mut ch) = app.channels.get_mut(channel) else {
                return Removed::default();
            };
            let Some(sub) = ch.subscribers.remove(socket_id) else {
                return Removed { subscriptions: ch.subscribers.len(), ..Removed::default() };
            };
            if sub.seen == PENDING {
                ch.held.retain(|(id, _, _)| &**id != socket_id);
            }
            let mut member_removed = None;
            if let Some(user_id) = &sub.user_id {
                if let Some(m) = ch.members.get_mut(user_id) {
                    m.sockets -= 1;
                    if m.sockets == 0 {
                        ch.members.remove(user_id);
                        member_removed = Some(user_id.clone());
                    }
                }
            }
            Removed {
                was_subscribed: true,
                subscriptions: ch.subscribers.len(),
                member_removed,
                user_id: sub.user_id,
            }
        };
        if removed.subscriptions == 0 {
            Self::drop_if_empty(&app, channel);
        }
        removed
    }

    fn drop_if_empty(app: &AppChannels, channel: &str) {
        if app.channels.remove_if(channel, |_, c| c.subscribers.is_empty()).is_some() {
            app.channel_count.dec();
        }
    }

    /// Queues a shared frame for every local subscriber except `except`. Returns how many got it.
    /// Holding the shard's read lock while queuing is fine: `Outbox::deliver` never waits.
    pub fn broadcast(&self, app_id: &str, channel: &str, frame: &Utf8Bytes, except: Option<&str>) -> usize {
        let Some(app) = self.existing(app_id) else {
            return 0;
        };
        let Some(ch) = app.channels.get(channel) else {
            return 0;
        };
        let mut delivered = 0;
        for (socket_id, sub) in &ch.subscribers {
            if except == Some(&**socket_id) {
                continue;
            }
            if sub.outbox.deliver(frame) == Delivery::Queued {
                delivered += 1;
            }
        }
        delivered
    }

    /// [`Registry::broadcast`] for a `member_added` / `member_removed` frame numbered `seq` in the
    /// app's member sequence: a subscriber whose member list already showed the change skips it,
    /// one whose list is still being read ([`PENDING`]) has it held until
    /// [`Registry::members_seen`]. Returns how many got it now.
    pub fn broadcast_member(
        &self,
        app_id: &str,
        channel: &str,
        frame: &Utf8Bytes,
        except: Option<&str>,
        seq: MemberSeq,
    ) -> usize {
        if seq == 0 {
            return self.broadcast(app_id, channel, frame, except);
        }
        let Some(app) = self.existing(app_id) else {
            return 0;
        };
        let Some(mut ch) = app.channels.get_mut(channel) else {
            return 0;
        };
        let Channel { subscribers, held, .. } = &mut *ch;
        let mut delivered = 0;
        for (socket_id, sub) in subscribers.iter() {
            if except == Some(&**socket_id) {
                continue;
            }
            if sub.seen == PENDING {
                held.push((socket_id.clone(), seq, frame.clone()));
            } else if sub.seen < seq && sub.outbox.deliver(frame) == Delivery::Queued {
                delivered += 1;
            }
        }
        delivered
    }

    /// The member list given to a socket added as [`PENDING`] was read at `seen`: the member
    /// events held for it that the list does not show are queued, in the order they came.
    pub fn members_seen(&self, app_id: &str, channel: &str, socket_id: &str, seen: MemberSeq) {
        let Some(app) = self.existing(app_id) else { return };
        let Some(mut ch) = app.channels.get_mut(channel) else { return };
        let Channel { subscribers, held, .. } = &mut *ch;
        let Some(sub) = subscribers.get_mut(socket_id) else { return };
        sub.seen = seen;
        held.retain(|(id, seq, frame)| {
            if &**id != socket_id {
                return true;
            }
            if *seq > seen {
                sub.outbox.deliver(frame);
            }
            false
        });
    }

    /// Local counts of a channel.
    pub fn stats(&self, app_id: &str, channel: &str) -> LocalStats {
        self.existing(app_id)
            .and_then(|app| {
                app.channels
                    .get(channel)
                    .map(|ch| LocalStats { subscriptions: ch.subscribers.len(), users: ch.members.len() })
            })
            .unwrap_or_default()
    }

    /// Every channel of an app with at least one local subscriber, optionally by prefix.
    pub fn channels(&self, app_id: &str, prefix: Option<&str>) -> Vec<(String, LocalStats)> {
        let Some(app) = self.existing(app_id) else {
            return Vec::new();
        };
        app.channels
            .iter()
            .filter(|e| prefix.is_none_or(|p| e.key().starts_with(p)))
            .map(|e| {
                let stats = LocalStats { subscriptions: e.subscribers.len(), users: e.members.len() };
                (e.key().clone(), stats)
            })
            .collect()
    }

    /// The presence members of a channel on this node.
    pub fn members(&self, app_id: &str, channel: &str) -> Vec<Member> {
        self.existing(app_id)
            .and_then(|app| {
                app.channels.get(channel).map(|ch| ch.members.values().map(|m| m.member.clone()).collect())
            })
            .unwrap_or_default()
    }

    /// Records a socket signed in as `user_id`; true when it is the user's first socket here.
    pub fn sign_in(&self, app_id: &str, user_id: &Arc<str>, outbox: Outbox) -> bool {
        let app = self.app(app_id);
        let mut sockets = app.users.entry(user_id.clone()).or_default();
        let first = sockets.is_empty();
        sockets.insert(outbox.socket_id().clone(), outbox);
        first
    }

    /// Forgets a signed-in socket; true when it was the user's last socket here.
    pub fn sign_out(&self, app_id: &str, user_id: &str, socket_id: &str) -> bool {
        let Some(app) = self.existing(app_id) else { return false };
        let removed = app.users.get_mut(user_id).is_some_and(|mut s| s.remove(socket_id).is_some());
        removed && app.users.remove_if(user_id, |_, s| s.is_empty()).is_some()
    }

    /// Whether the user has a signed-in socket here.
    pub fn is_signed_in(&self, app_id: &str, user_id: &str) -> bool {
        self.existing(app_id).is_some_and(|app| app.users.get(user_id).is_some_and(|s| !s.is_empty()))
    }

    /// Closes every socket signed in as the user; returns how many.
    pub fn close_user(&self, app_id: &str, user_id: &str, reason: crate::protocol::CloseReason) -> usize {
        let Some(app) = self.existing(app_id) else { return 0 };
        let Some(sockets) = app.users.get(user_id) else { return 0 };
        sockets.values().for_each(|o| o.close(reason));
        sockets.len()
    }

    /// Registers a socket as watching `user_ids`.
    pub fn watch(&self, app_id: &str, user_ids: &[Arc<str>], outbox: &Outbox) {
        let app = self.app(app_id);
        for id in user_ids {
            app.watchers.entry(id.clone()).or_default().insert(outbox.socket_id().clone(), outbox.clone());
        }
    }

    /// Removes a socket from the watchers of `user_ids`.
    pub fn unwatch(&self, app_id: &str, user_ids: &[Arc<str>], socket_id: &str) {
        let Some(app) = self.existing(app_id) else { return };
        for id in user_ids {
            if let Some(mut w) = app.watchers.get_mut(id) {
                w.remove(socket_id);
            }
            app.watchers.remove_if(id, |_, w| w.is_empty());
        }
    }

    /// Queues a frame for every local socket watching `user_id`.
    pub fn notify_watchers(&self, app_id: &str, user_id: &str, frame: &Utf8Bytes) {
        let Some(app) = self.existing(app_id) else { return };
        if let Some(w) = app.watchers.get(user_id) {
            for outbox in w.values() {
                outbox.deliver(frame);
            }
        };
    }

    /// Everything this node holds, for republishing it to a cluster backend.
    pub fn snapshot(&self) -> Vec<AppSnapshot> {
        self.apps
            .iter()
            .map(|app| AppSnapshot {
                app_id: app.key().clone(),
                connections: app.connections.get().max(0) as u64,
                channels: app
                    .channels
                    .iter()
                    .map(|ch| ChannelSnapshot {
                        channel: ch.key().clone(),
                        subscriptions: ch.subscribers.len() as u64,
                        members: ch
                            .members
                            .values()
                            .map(|m| (m.member.clone(), u64::from(m.sockets)))
                            .collect(),
                    })
                    .collect(),
                users: app.users.iter().map(|u| (u.key().clone(), u.len() as u64)).collect(),
            })
            .collect()
    }

    /// Closes every local socket of an app (app disabled or deleted, server shutdown).
    pub fn close_all(&self, app_id: &str, reason: crate::protocol::CloseReason) {
        if let Some(app) = self.existing(app_id) {
            close_subscribers(&app, reason);
        }
    }

    /// Closes every local socket subscribed to a channel, in every app (this node missed
    /// messages it cannot make up for).
    pub fn close_every_subscriber(&self, reason: crate::protocol::CloseReason) {
        for app in self.apps.iter() {
            close_subscribers(app.value(), reason);
        }
    }
}

fn close_subscribers(app: &AppChannels, reason: crate::protocol::CloseReason) {
    for ch in app.channels.iter() {
        for sub in ch.subscribers.values() {
            sub.outbox.close(reason);
        }
    }
}

#[cfg(test)]
mod tests;
