//! Everything that crosses nodes, behind the [`Cluster`] trait: joining and leaving channels
//! (with the occupied / vacated and member added / removed transitions), publishing, and the
//! counts the HTTP API reports. [`LocalCluster`] is the embedded default: one process, where
//! this node's [`Registry`] is the whole truth.

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;

use crate::channels::{AddError, LocalStats, Member, Registry};
use crate::outbox::Outbox;

/// Failure of the cluster backend. The embedded backend cannot fail; networked backends add
/// their variants here.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {}

/// Why a join was refused.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The presence channel is at its member limit.
    #[error(transparent)]
    Refused(#[from] AddError),
    /// The backend failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// The transitions a join caused, decided once cluster-wide.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The channel had no subscriber anywhere before.
    pub occupied: bool,
    /// The user had no socket in this presence channel anywhere before.
    pub member_added: bool,
    /// Cluster-wide subscriber count after the join.
    pub subscription_count: u64,
}

/// The transitions a leave caused, decided once cluster-wide.
#[derive(Debug, Clone, Default)]
pub struct Left {
    /// The socket was subscribed.
    pub was_subscribed: bool,
    /// The channel has no subscriber anywhere now.
    pub vacated: bool,
    /// The user whose last socket in the presence channel left.
    pub member_removed: Option<std::sync::Arc<str>>,
    /// Cluster-wide subscriber count after the leave.
    pub subscription_count: u64,
}

/// Cluster-wide counts of one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Sockets subscribed.
    pub subscription_count: u64,
    /// Distinct presence users.
    pub user_count: u64,
}

impl From<LocalStats> for ChannelStats {
    fn from(s: LocalStats) -> Self {
        ChannelStats {
            subscription_count: s.subscriptions as u64,
            user_count: s.users as u64,
        }
    }
}

/// What crosses nodes.
#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// Admits a new connection of an app unless the app is at `limit` connections.
    async fn connect(&self, app_id: &str, limit: Option<u64>) -> Result<bool, ClusterError>;
    /// Forgets a connection admitted by [`Cluster::connect`].
    async fn disconnect(&self, app_id: &str) -> Result<(), ClusterError>;
    /// Subscribes a socket (and presence member) to a channel.
    async fn join(
        &self,
        app_id: &str,
        channel: &str,
        outbox: Outbox,
        member: Option<Member>,
        max_members: usize,
    ) -> Result<Joined, JoinError>;
    /// Unsubscribes a socket from a channel.
    async fn leave(
        &self,
        app_id: &str,
        channel: &str,
        socket_id: &str,
    ) -> Result<Left, ClusterError>;
    /// Delivers a serialized frame to every subscriber of the channel on every node, except the
    /// socket `except`.
    async fn publish(
        &self,
        app_id: &str,
        channel: &str,
        frame: Utf8Bytes,
        except: Option<&str>,
    ) -> Result<(), ClusterError>;
    /// Counts of one channel.
    async fn channel_stats(
        &self,
        app_id: &str,
        channel: &str,
    ) -> Result<ChannelStats, ClusterError>;
    /// Every occupied channel of an app, optionally filtered by prefix.
    async fn channels(
        &self,
        app_id: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<(String, ChannelStats)>, ClusterError>;
    /// The members of a presence channel.
    async fn members(&self, app_id: &str, channel: &str) -> Result<Vec<Member>, ClusterError>;
}

/// One process, no network: the registry is the cluster.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    registry: Registry,
}

impl LocalCluster {
    /// A cluster of this node alone.
    pub fn new(registry: Registry) -> Self {
        LocalCluster { registry }
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
        let added = self
            .registry
            .add(app_id, channel, outbox, member, max_members)?;
        Ok(Joined {
            occupied: added.subscriptions == 1,
            member_added: added.member_added,
            subscription_count: added.subscriptions as u64,
        })
    }

    async fn leave(
        &self,
        app_id: &str,
        channel: &str,
        socket_id: &str,
    ) -> Result<Left, ClusterError> {
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

    async fn channel_stats(
        &self,
        app_id: &str,
        channel: &str,
    ) -> Result<ChannelStats, ClusterError> {
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
}
