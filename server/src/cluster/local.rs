//! The embedded backend: one process, no network. Its transitions are this node's registry's.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use tokio::time::Instant;

use super::{
    Cache, ChannelState, ChannelStats, FanOut, FanOutError, Health, Joined, PresenceFull, Transition, Users,
    Window,
};
use crate::channels::{Added, Member, Registry, Removed};
use crate::outbox::Outbox;
use crate::protocol::CloseReason;

/// How often expired cache entries are swept when nobody reads them.
const CACHE_SWEEP: Duration = Duration::from_secs(60);

/// One process, no network: the registry is the cluster.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    registry: Registry,
    /// Last event of each cache channel, keyed by (app id, channel), with its expiry.
    cache: Arc<DashMap<(String, String), (Utf8Bytes, Instant)>>,
}

impl LocalCluster {
    /// A cluster of this node alone.
    pub fn new(registry: Registry) -> Self {
        LocalCluster { registry, cache: Arc::default() }
    }

    /// Sweeps expired cache entries every minute, so a channel nobody reads again does not
    /// keep its last event in memory. Ends when the cluster is dropped.
    pub fn start_cache_sweeper(&self) {
        let weak = Arc::downgrade(&self.cache);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CACHE_SWEEP);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(cache) = weak.upgrade() else { return };
                let now = Instant::now();
                cache.retain(|_, e| e.1 > now);
            }
        });
    }
}

/// The transitions of a local join, in announcement order.
pub(super) fn joined(channel: &str, added: &Added, member: Option<Member>) -> Vec<Transition> {
    let mut out = Vec::with_capacity(3);
    if added.subscriptions == 1 {
        out.push(Transition::Occupied { channel: channel.to_owned(), webhook: true });
    }
    if let (true, Some(member)) = (added.member_added, member) {
        out.push(Transition::MemberAdded { channel: channel.to_owned(), member, webhook: true, seq: 0 });
    }
    out.push(Transition::SubscriptionCount {
        channel: channel.to_owned(),
        count: added.subscriptions as u64,
    });
    out
}

/// The transitions of a local leave, in announcement order.
pub(super) fn left(channel: &str, removed: Removed) -> Vec<Transition> {
    if !removed.was_subscribed {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(3);
    if removed.subscriptions == 0 {
        out.push(Transition::Vacated { channel: channel.to_owned(), window: Window::Local });
    }
    out.push(Transition::SubscriptionCount {
        channel: channel.to_owned(),
        count: removed.subscriptions as u64,
    });
    if let Some(user_id) = removed.member_removed {
        let window = Window::Local;
        out.push(Transition::MemberRemoved { channel: channel.to_owned(), user_id, window, seq: 0 });
    }
    out
}

#[async_trait]
impl FanOut for LocalCluster {
    async fn publish(
        &self,
        app_id: &str,
        channel: &str,
        frame: Utf8Bytes,
        except: Option<&str>,
    ) -> Result<(), FanOutError> {
        self.registry.broadcast(app_id, channel, &frame, except);
        Ok(())
    }
}

#[async_trait]
impl ChannelState for LocalCluster {
    async fn connect(&self, app_id: &str, limit: Option<u64>) -> bool {
        self.registry.connection_opened(app_id, limit)
    }

    async fn disconnect(&self, app_id: &str) {
        self.registry.connection_closed(app_id);
    }

    async fn join(
        &self,
        app_id: &str,
        channel: &str,
        outbox: Outbox,
        member: Option<Member>,
        max_members: usize,
    ) -> Result<Joined, PresenceFull> {
        let presence = member.is_some();
        let added = self.registry.add(app_id, channel, outbox, member.clone(), max_members)?;
        let members = presence.then(|| self.registry.members(app_id, channel));
        Ok(Joined { transitions: joined(channel, &added, member), members })
    }

    async fn leave(&self, app_id: &str, channel: &str, socket_id: &str) -> Vec<Transition> {
        left(channel, self.registry.remove(app_id, channel, socket_id))
    }

    async fn channel_stats(&self, app_id: &str, channel: &str) -> ChannelStats {
        self.registry.stats(app_id, channel).into()
    }

    async fn channels(&self, app_id: &str, prefix: Option<&str>) -> Vec<(String, ChannelStats)> {
        self.registry.channels(app_id, prefix).into_iter().map(|(name, stats)| (name, stats.into())).collect()
    }

    async fn members(&self, app_id: &str, channel: &str) -> Vec<Member> {
        self.registry.members(app_id, channel)
    }
}

#[async_trait]
impl Users for LocalCluster {
    async fn sign_in(&self, app_id: &str, user_id: &Arc<str>, outbox: Outbox) -> Option<Transition> {
        self.registry
            .sign_in(app_id, user_id, outbox)
            .then(|| Transition::UserOnline { user_id: user_id.clone() })
    }

    async fn sign_out(&self, app_id: &str, user_id: &Arc<str>, socket_id: &str) -> Option<Transition> {
        self.registry
            .sign_out(app_id, user_id, socket_id)
            .then(|| Transition::UserOffline { user_id: user_id.clone() })
    }

    async fn online(&self, app_id: &str, user_ids: &[Arc<str>]) -> Vec<bool> {
        user_ids.iter().map(|u| self.registry.is_signed_in(app_id, u)).collect()
    }

    async fn terminate_user(&self, app_id: &str, user_id: &str) {
        self.registry.close_user(app_id, user_id, CloseReason::Unauthorized);
    }

    async fn watch(&self, app_id: &str, user_ids: &[Arc<str>], outbox: &Outbox) {
        self.registry.watch(app_id, user_ids, outbox);
    }

    async fn unwatch(&self, app_id: &str, user_ids: &[Arc<str>], socket_id: &str) {
        self.registry.unwatch(app_id, user_ids, socket_id);
    }

    async fn notify_watchers(&self, app_id: &str, user_id: &str, frame: Utf8Bytes, _except: Option<&str>) {
        self.registry.notify_watchers(app_id, user_id, &frame);
    }
}

#[async_trait]
impl Cache for LocalCluster {
    async fn cache_set(&self, app_id: &str, channel: &str, frame: Utf8Bytes, ttl: Duration) {
        let key = (app_id.to_owned(), channel.to_owned());
        self.cache.insert(key, (frame, Instant::now() + ttl));
    }

    async fn cache_get(&self, app_id: &str, channel: &str) -> Option<Utf8Bytes> {
        let key = (app_id.to_owned(), channel.to_owned());
        let now = Instant::now();
        let hit = self.cache.get(&key).and_then(|e| (e.1 > now).then(|| e.0.clone()));
        if hit.is_none() {
            self.cache.remove_if(&key, |_, e| e.1 <= now);
        }
        hit
    }
}

impl Health for LocalCluster {}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(id: &str) -> Outbox {
        Outbox::new(id.into(), 8).0
    }

    #[tokio::test]
    async fn a_join_and_a_leave_return_their_transitions_in_announcement_order() {
        let c = LocalCluster::new(Registry::default());
        let member = Member { user_id: "u".into(), user_info: None };
        let first = c.join("1", "presence-a", outbox("1.1"), Some(member.clone()), 10).await.unwrap();
        assert_eq!(first.members, Some(vec![member.clone()]));
        assert_eq!(
            first.transitions,
            vec![
                Transition::Occupied { channel: "presence-a".into(), webhook: true },
                Transition::MemberAdded {
                    channel: "presence-a".into(),
                    member: member.clone(),
                    webhook: true,
                    seq: 0
                },
                Transition::SubscriptionCount { channel: "presence-a".into(), count: 1 },
            ]
        );
        let second = c.join("1", "presence-a", outbox("1.2"), Some(member), 10).await.unwrap();
        assert_eq!(
            second.transitions,
            vec![Transition::SubscriptionCount { channel: "presence-a".into(), count: 2 }]
        );
        assert_eq!(
            c.leave("1", "presence-a", "1.1").await,
            vec![Transition::SubscriptionCount { channel: "presence-a".into(), count: 1 }]
        );
        assert_eq!(
            c.leave("1", "presence-a", "1.2").await,
            vec![
                Transition::Vacated { channel: "presence-a".into(), window: Window::Local },
                Transition::SubscriptionCount { channel: "presence-a".into(), count: 0 },
                Transition::MemberRemoved {
                    channel: "presence-a".into(),
                    user_id: "u".into(),
                    window: Window::Local,
                    seq: 0
                },
            ]
        );
        assert!(c.leave("1", "presence-a", "1.2").await.is_empty(), "leaving twice changes nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn expired_cache_entries_are_swept_without_a_read() {
        let c = LocalCluster::new(Registry::default());
        c.cache_set("1", "cache-a", Utf8Bytes::from_static("x"), Duration::from_secs(5)).await;
        c.cache_set("1", "cache-b", Utf8Bytes::from_static("y"), Duration::from_secs(600)).await;
        c.start_cache_sweeper();
        tokio::time::sleep(CACHE_SWEEP + Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
        assert_eq!(c.cache.len(), 1, "the expired entry went without anyone reading it");
        assert_eq!(c.cache_get("1", "cache-b").await.as_deref(), Some("y"));
    }
}
