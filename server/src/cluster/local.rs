//! The embedded backend: one process, no network.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;

use super::{ChannelStats, Cluster, ClusterError, JoinError, Joined, Left};
use crate::channels::{Member, Registry};
use crate::outbox::Outbox;
use crate::protocol::CloseReason;

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
}

#[async_trait]
impl Cluster for LocalCluster {
    async fn connect(&self, app_id: &str, limit: Option<u64>) -> Result<bool, ClusterError> {
        Ok(self.registry.connection_opened(app_id, limit))
    }

    async fn disconnect(&self, app_id: &str) -> Result<(), ClusterError> {
        self.registry.connection_closed(app_id);
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
        let added = self.registry.add(app_id, channel, outbox, member, max_members)?;
        Ok(Joined {
            occupied: added.subscriptions == 1,
            member_added: added.member_added,
            subscription_count: added.subscriptions as u64,
        })
    }

    async fn leave(&self, app_id: &str, channel: &str, socket_id: &str) -> Result<Left, ClusterError> {
        let removed = self.registry.remove(app_id, channel, socket_id);
        Ok(Left {
            was_subscribed: removed.was_subscribed,
            vacated: removed.was_subscribed && removed.subscriptions == 0,
            member_removed: removed.member_removed,
            subscription_count: removed.subscriptions as u64,
        })
    }

    async fn publish(
        &self,
        app_id: &str,
        channel: &str,
        frame: Utf8Bytes,
        except: Option<&str>,
    ) -> Result<(), ClusterError> {
        self.registry.broadcast(app_id, channel, &frame, except);
        Ok(())
    }

    async fn channel_stats(&self, app_id: &str, channel: &str) -> Result<ChannelStats, ClusterError> {
        Ok(self.registry.stats(app_id, channel).into())
    }

    async fn channels(
        &self,
        app_id: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<(String, ChannelStats)>, ClusterError> {
        Ok(self
            .registry
            .channels(app_id, prefix)
            .into_iter()
            .map(|(name, stats)| (name, stats.into()))
            .collect())
    }

    async fn members(&self, app_id: &str, channel: &str) -> Result<Vec<Member>, ClusterError> {
        Ok(self.registry.members(app_id, channel))
    }

    async fn sign_in(&self, app_id: &str, user_id: &Arc<str>, outbox: Outbox) -> Result<bool, ClusterError> {
        Ok(self.registry.sign_in(app_id, user_id, outbox))
    }

    async fn sign_out(&self, app_id: &str, user_id: &str, socket_id: &str) -> Result<bool, ClusterError> {
        Ok(self.registry.sign_out(app_id, user_id, socket_id))
    }

    async fn online(&self, app_id: &str, user_ids: &[Arc<str>]) -> Result<Vec<bool>, ClusterError> {
        Ok(user_ids.iter().map(|u| self.registry.is_signed_in(app_id, u)).collect())
    }

    async fn terminate_user(&self, app_id: &str, user_id: &str) -> Result<(), ClusterError> {
        self.registry.close_user(app_id, user_id, CloseReason::Unauthorized);
        Ok(())
    }

    async fn watch(&self, app_id: &str, user_ids: &[Arc<str>], outbox: &Outbox) -> Result<(), ClusterError> {
        self.registry.watch(app_id, user_ids, outbox);
        Ok(())
    }

    async fn unwatch(
        &self,
        app_id: &str,
        user_ids: &[Arc<str>],
        socket_id: &str,
    ) -> Result<(), ClusterError> {
        self.registry.unwatch(app_id, user_ids, socket_id);
        Ok(())
    }

    async fn notify_watchers(
        &self,
        app_id: &str,
        user_id: &str,
        frame: Utf8Bytes,
    ) -> Result<(), ClusterError> {
        self.registry.notify_watchers(app_id, user_id, &frame);
        Ok(())
    }

    async fn cache_set(
        &self,
        app_id: &str,
        channel: &str,
        frame: Utf8Bytes,
        ttl: Duration,
    ) -> Result<(), ClusterError> {
        let key = (app_id.to_owned(), channel.to_owned());
        self.cache.insert(key, (frame, Instant::now() + ttl));
        Ok(())
    }

    async fn cache_get(&self, app_id: &str, channel: &str) -> Result<Option<Utf8Bytes>, ClusterError> {
        let key = (app_id.to_owned(), channel.to_owned());
        let now = Instant::now();
        let hit = self.cache.get(&key).and_then(|e| (e.1 > now).then(|| e.0.clone()));
        if hit.is_none() {
            // Expired entries go when they are next asked for; no sweeper task needed.
            self.cache.remove_if(&key, |_, e| e.1 <= now);
        }
        Ok(hit)
    }
}
