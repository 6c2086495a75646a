//! Everything that crosses nodes, behind the [`Cluster`] trait: joining and leaving channels
//! (with the occupied / vacated and member added / removed transitions), publishing, and the
//! counts the HTTP API reports. [`LocalCluster`] is the embedded default: one process, where
//! this node's [`Registry`] is the whole truth; [`RedisCluster`] shares state between any
//! number of nodes through Redis, with leases so a dead node's state is cleaned up.

mod local;
pub mod redis;

pub use local::LocalCluster;
pub use redis::{RedisCluster, RedisSettings};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;

use crate::channels::{AddError, LocalStats, Member};
use crate::outbox::Outbox;

/// Failure of the cluster backend. No backend returns one today: the embedded backend cannot
/// fail, and the Redis backend degrades to this node alone instead (see [`Cluster::healthy`]).
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
        ChannelStats { subscription_count: s.subscriptions as u64, user_count: s.users as u64 }
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
    async fn leave(&self, app_id: &str, channel: &str, socket_id: &str) -> Result<Left, ClusterError>;
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
    async fn channel_stats(&self, app_id: &str, channel: &str) -> Result<ChannelStats, ClusterError>;
    /// Every occupied channel of an app, optionally filtered by prefix.
    async fn channels(
        &self,
        app_id: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<(String, ChannelStats)>, ClusterError>;
    /// The members of a presence channel.
    async fn members(&self, app_id: &str, channel: &str) -> Result<Vec<Member>, ClusterError>;
    /// Records a socket signed in as a user; true when the user just came online.
    async fn sign_in(&self, app_id: &str, user_id: &Arc<str>, outbox: Outbox) -> Result<bool, ClusterError>;
    /// Forgets a signed-in socket; true when the user just went offline.
    async fn sign_out(&self, app_id: &str, user_id: &str, socket_id: &str) -> Result<bool, ClusterError>;
    /// Which of `user_ids` are online (signed in on some socket).
    async fn online(&self, app_id: &str, user_ids: &[Arc<str>]) -> Result<Vec<bool>, ClusterError>;
    /// Closes every socket signed in as the user, on every node, with 4009.
    async fn terminate_user(&self, app_id: &str, user_id: &str) -> Result<(), ClusterError>;
    /// Registers a socket as watching `user_ids`.
    async fn watch(&self, app_id: &str, user_ids: &[Arc<str>], outbox: &Outbox) -> Result<(), ClusterError>;
    /// Removes a socket from the watchers of `user_ids`.
    async fn unwatch(&self, app_id: &str, user_ids: &[Arc<str>], socket_id: &str)
        -> Result<(), ClusterError>;
    /// Delivers a frame to every socket watching `user_id`, on every node.
    async fn notify_watchers(
        &self,
        app_id: &str,
        user_id: &str,
        frame: Utf8Bytes,
    ) -> Result<(), ClusterError>;
    /// Remembers the last event of a cache channel for `ttl`.
    async fn cache_set(
        &self,
        app_id: &str,
        channel: &str,
        frame: Utf8Bytes,
        ttl: Duration,
    ) -> Result<(), ClusterError>;
    /// The cached event of a cache channel, if any and not expired.
    async fn cache_get(&self, app_id: &str, channel: &str) -> Result<Option<Utf8Bytes>, ClusterError>;
    /// Whether the backend can answer for the whole cluster. While it cannot, socket
    /// operations fall back to this node alone, `/readyz` fails and the HTTP API answers 503.
    fn healthy(&self) -> bool {
        true
    }
    /// Graceful shutdown, after every socket left: release what this node holds at once.
    async fn shutdown(&self) {}
}
