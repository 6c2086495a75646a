//! What crosses nodes, behind small traits chosen at start-up, one per concern:
//! [`FanOut`] (frames to a channel's subscribers everywhere), [`ChannelState`] (connections,
//! subscriptions and presence members, with the transitions they cause), [`Users`] (signed-in
//! users, watchlists, terminate) and [`Cache`] (cache channels), plus [`Health`].
//!
//! Every call that changes shared state returns what changed as [`Transition`] values, decided
//! once cluster-wide; the caller hands them to the announcer (`crate::announce`), the one place
//! that turns a transition into its frame, webhook and subscription count. A backend's own
//! clean-ups (a dead node's lease, a resync) report theirs through an [`AnnounceSender`].
//!
//! [`LocalCluster`] is the embedded default: one process, where this node's [`Registry`] is the
//! whole truth; [`RedisCluster`] shares state between any number of nodes through Redis, with
//! leases so a dead node's state is cleaned up.

mod local;
pub mod redis;

pub use local::LocalCluster;
pub use redis::RedisCluster;

pub use crate::config::RedisSettings;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, oneshot};

pub use crate::channels::MemberSeq;
use crate::channels::{AddError, LocalStats, Member, Registry};
use crate::outbox::Outbox;

/// One change of shared state, decided once cluster-wide. The announcer turns each into its
/// effects; nothing else emits the frames or webhooks these stand for.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The channel had no subscriber anywhere and now has one.
    Occupied {
        /// The channel.
        channel: String,
        /// Whether `channel_occupied` is a webhook: not when the channel came back within the
        /// window of its vacate (decided cluster-wide; neither webhook goes out), nor when a
        /// degraded node decided it from its local view alone.
        webhook: bool,
    },
    /// The channel's last subscriber anywhere left.
    Vacated {
        /// The channel.
        channel: String,
        /// How its `channel_vacated` webhook waits out the window.
        window: Window,
    },
    /// A user's first socket anywhere joined a presence channel.
    MemberAdded {
        /// The channel.
        channel: String,
        /// The user and the `user_info` it signed.
        member: Member,
        /// Whether `member_added` is a webhook (see [`Transition::Occupied`]); the frame goes to
        /// the channel either way.
        webhook: bool,
        /// The change's number in the app's member sequence ([`MemberSeq`]).
        seq: MemberSeq,
    },
    /// A user's last socket anywhere left a presence channel.
    MemberRemoved {
        /// The channel.
        channel: String,
        /// The user.
        user_id: Arc<str>,
        /// How its `member_removed` webhook waits out the window.
        window: Window,
        /// The change's number in the app's member sequence ([`MemberSeq`]).
        seq: MemberSeq,
    },
    /// A departure — `channel_vacated` without a user, `member_removed` with one — whose window
    /// had ended with its webhook unsent (its holder stalled or died) when the channel or
    /// member came back: the webhook goes out now, before the return's. Its frame went out when
    /// it happened.
    Overdue {
        /// The channel.
        channel: String,
        /// The member who had left, for a `member_removed`.
        user_id: Option<Arc<str>>,
    },
    /// A socket subscribed to or unsubscribed from a channel: its cluster-wide count now.
    SubscriptionCount {
        /// The channel.
        channel: String,
        /// Subscribers anywhere.
        count: u64,
    },
    /// A user's first socket anywhere signed in.
    UserOnline {
        /// The user.
        user_id: Arc<str>,
    },
    /// A user's last signed-in socket anywhere went away.
    UserOffline {
        /// The user.
        user_id: Arc<str>,
    },
}

/// How a `channel_vacated` or `member_removed` webhook waits out its 3 s window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// In this node's webhook queue (one node: this node sees every return).
    Local,
    /// In the shared state, cluster-wide (see [`Hold`]).
    Cluster(Hold),
    /// No webhook: a degraded node's local view is not news for the cluster.
    Skip,
}

/// A `channel_vacated` or `member_removed` webhook held in the shared state for the window. A
/// return anywhere deletes it; [`ChannelState::release`] after the window says whether it is
/// still to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Where the hold is kept.
    pub(crate) key: String,
    /// Which hold it is (a newer one may have replaced it).
    pub(crate) token: String,
    /// Where the hold is listed for a takeover if its holder dies (the holder's `nodekeys` and
    /// the entry), to unlist it on release.
    pub(crate) listed: Option<(String, String)>,
}

impl Hold {
    /// What is left of its window: a hold taken over from a dead node keeps the window it began
    /// with (its token ends with `@{unix ms}` of the change), so a return after the window is
    /// news, however many nodes held it. A token without a time waits the whole window.
    pub fn remaining(&self, window: std::time::Duration) -> std::time::Duration {
        let Some(since) = self.token.rsplit_once('@').and_then(|(_, ms)| ms.parse::<u64>().ok()) else {
            return window;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        window.saturating_sub(std::time::Duration::from_millis(now.saturating_sub(since)))
    }
}

/// Who caused a batch of transitions, which decides who hears their frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A socket's own action: every subscriber hears the frames except that socket.
    Socket(Arc<str>),
    /// A clean-up of a node that is gone: every subscriber on every node hears them.
    Cleanup,
    /// The clean-up of a dead incarnation (held as `@incarnation`): everyone hears the frames
    /// except that incarnation's own sockets, should it be alive after all (cut off from Redis,
    /// it rejoins and republishes; its sockets never saw these changes).
    Reaped(Arc<str>),
    /// This node rejoining after an outage: only the other nodes hear the frames (this node's
    /// sockets never saw the change undone).
    Rejoin,
    /// Webhooks a dead node held, taken over by the node that cleaned up after it: their frames
    /// went out when the change happened, so only the webhooks remain.
    Takeover,
}

impl Origin {
    /// The clean-up of `incarnation`.
    pub fn reaped(incarnation: &str) -> Origin {
        Origin::Reaped(format!("@{incarnation}").into())
    }

    /// Who to leave out of a frame's audience: a socket id, or `@incarnation` for the sockets
    /// of a node incarnation (see [`Origin::Reaped`]).
    pub fn except(&self) -> Option<&str> {
        match self {
            Origin::Socket(id) | Origin::Reaped(id) => Some(id),
            Origin::Cleanup | Origin::Rejoin | Origin::Takeover => None,
        }
    }
}

/// Transitions a backend decided on its own (lease clean-up, resync), for the announcer.
#[derive(Debug)]
pub enum Announcement {
    /// Announce these transitions of an app.
    Transitions {
        /// The app.
        app_id: String,
        /// Who caused them.
        origin: Origin,
        /// What changed, in order.
        transitions: Vec<Transition>,
    },
    /// Webhook requests a dead node was delivering, to finish.
    Resume(Vec<crate::webhooks::StoredRequest>),
    /// Answered once everything sent before it has been announced (graceful shutdown).
    Flush(oneshot::Sender<()>),
}

/// Where a backend sends the transitions it decided on its own.
pub type AnnounceSender = mpsc::UnboundedSender<Announcement>;

/// A join refused: the presence channel is at its member limit.
pub type PresenceFull = AddError;

/// What a join did: its transitions, and on a presence channel the member list to give the
/// joining socket, read in the same step as the join — so that list and the member events the
/// socket hears after it tell of each member once.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    /// What changed, in announcement order.
    pub transitions: Vec<Transition>,
    /// The members, on a presence channel.
    pub members: Option<Vec<Member>>,
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

/// Why a frame may not have reached the other nodes.
#[derive(Debug, thiserror::Error)]
pub enum FanOutError {
    /// Redis refused or dropped the publish (or this node is cut off from it): the other nodes'
    /// subscribers did not get the frame. This node's own subscribers did.
    #[error("the other nodes could not be reached through Redis: {0}")]
    Unreachable(String),
}

/// Frames to a channel's subscribers on every node.
#[async_trait]
pub trait FanOut: Send + Sync + 'static {
    /// Delivers a serialized frame to every subscriber of the channel on every node, except the
    /// socket `except`. This node's subscribers always get it; an error says the others may not.
    async fn publish(
        &self,
        app_id: &str,
        channel: &str,
        frame: Utf8Bytes,
        except: Option<&str>,
    ) -> Result<(), FanOutError>;
    /// [`FanOut::publish`] for a presence member event numbered `seq` in the app's member
    /// sequence: a subscriber whose member list already showed the change does not get it.
    async fn publish_member(
        &self,
        app_id: &str,
        channel: &str,
        frame: Utf8Bytes,
        except: Option<&str>,
        _seq: MemberSeq,
    ) -> Result<(), FanOutError> {
        self.publish(app_id, channel, frame, except).await
    }
    /// Delivers a frame to the channel's subscribers on the other nodes only.
    async fn publish_elsewhere(&self, _app_id: &str, _channel: &str, _frame: Utf8Bytes) {}
    /// [`FanOut::publish`] for several frames, in order (a trigger to many channels, a batch):
    /// one round trip to the other nodes where the backend can.
    async fn publish_all(&self, app_id: &str, frames: Vec<Outgoing>) -> Result<(), FanOutError> {
        for out in frames {
            self.publish(app_id, &out.channel, out.frame, out.except.as_deref()).await?;
        }
        Ok(())
    }
}

/// One frame for [`FanOut::publish_all`].
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub channel: String,
    pub frame: Utf8Bytes,
    /// The socket that must not get it (the event's `socket_id`).
    pub except: Option<String>,
}

/// Connections, subscriptions and presence members: what is counted cluster-wide.
#[async_trait]
pub trait ChannelState: Send + Sync + 'static {
    /// Admits a new connection of an app unless the app is at `limit` connections.
    async fn connect(&self, app_id: &str, limit: Option<u64>) -> bool;
    /// Forgets a connection admitted by [`ChannelState::connect`].
    async fn disconnect(&self, app_id: &str);
    /// Subscribes a socket (and presence member) to a channel: occupied, member added and the
    /// subscription count, in that order, and the members it is to be given. Joining twice
    /// changes nothing.
    async fn join(
        &self,
        app_id: &str,
        channel: &str,
        outbox: Outbox,
        member: Option<Member>,
        max_members: usize,
    ) -> Result<Joined, PresenceFull>;
    /// Unsubscribes a socket from a channel: vacated, the subscription count and member removed,
    /// in that order; nothing when the socket was not subscribed.
    async fn leave(&self, app_id: &str, channel: &str, socket_id: &str) -> Vec<Transition>;
    /// Counts of one channel.
    async fn channel_stats(&self, app_id: &str, channel: &str) -> ChannelStats;
    /// Every occupied channel of an app, optionally filtered by prefix.
    async fn channels(&self, app_id: &str, prefix: Option<&str>) -> Vec<(String, ChannelStats)>;
    /// The members of a presence channel.
    async fn members(&self, app_id: &str, channel: &str) -> Vec<Member>;
    /// Ends a held webhook's window: true when nothing came back and the webhook is to be sent
    /// now (exactly one caller gets true for a hold).
    async fn release(&self, _hold: &Hold) -> bool {
        true
    }
}

/// Signed-in users, their watchers, and terminating them.
#[async_trait]
pub trait Users: Send + Sync + 'static {
    /// Records a socket signed in as a user: [`Transition::UserOnline`] when it is the user's
    /// first socket anywhere.
    async fn sign_in(&self, app_id: &str, user_id: &Arc<str>, outbox: Outbox) -> Option<Transition>;
    /// Forgets a signed-in socket: [`Transition::UserOffline`] when it was the user's last.
    async fn sign_out(&self, app_id: &str, user_id: &Arc<str>, socket_id: &str) -> Option<Transition>;
    /// Which of `user_ids` are online (signed in on some socket).
    async fn online(&self, app_id: &str, user_ids: &[Arc<str>]) -> Vec<bool>;
    /// Closes every socket signed in as the user, on every node, with 4009.
    async fn terminate_user(&self, app_id: &str, user_id: &str);
    /// Registers a socket as watching `user_ids`.
    async fn watch(&self, app_id: &str, user_ids: &[Arc<str>], outbox: &Outbox);
    /// Removes a socket from the watchers of `user_ids`.
    async fn unwatch(&self, app_id: &str, user_ids: &[Arc<str>], socket_id: &str);
    /// Delivers a frame to every socket watching `user_id`, on every node (but the sockets of
    /// the incarnation `except` names as `@incarnation`, see [`Origin::Reaped`]).
    async fn notify_watchers(&self, app_id: &str, user_id: &str, frame: Utf8Bytes, except: Option<&str>);
    /// Delivers a frame to the sockets watching `user_id` on the other nodes only.
    async fn notify_watchers_elsewhere(&self, _app_id: &str, _user_id: &str, _frame: Utf8Bytes) {}
}

/// The last event of cache channels.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// Remembers the last event of a cache channel for `ttl`.
    async fn cache_set(&self, app_id: &str, channel: &str, frame: Utf8Bytes, ttl: Duration);
    /// The cached event of a cache channel, if any and not expired.
    async fn cache_get(&self, app_id: &str, channel: &str) -> Option<Utf8Bytes>;
}

/// Whether the backend answers for the whole cluster, and its goodbye.
#[async_trait]
pub trait Health: Send + Sync + 'static {
    /// Whether the backend can answer for the whole cluster. While it cannot, socket
    /// operations fall back to this node alone, `/readyz` fails and the HTTP API answers 503.
    fn healthy(&self) -> bool {
        true
    }
    /// What `/readyz` answers: [`Health::healthy`], confirmed with the backend where that can
    /// have changed unnoticed (a Redis restarted empty between two lease renewals).
    async fn ready(&self) -> bool {
        self.healthy()
    }
    /// Graceful shutdown, after every socket left: release what this node holds at once.
    async fn shutdown(&self) {}
}

/// A backend with every concern, as the wiring picks it.
pub trait Backend: FanOut + ChannelState + Users + Cache + Health {}

impl<T: FanOut + ChannelState + Users + Cache + Health> Backend for T {}

/// The chosen backend, seen through each concern.
#[derive(Clone)]
pub struct Cluster {
    /// Frames to subscribers everywhere.
    pub fanout: Arc<dyn FanOut>,
    /// Connections, subscriptions, presence.
    pub channels: Arc<dyn ChannelState>,
    /// Signed-in users and watchers.
    pub users: Arc<dyn Users>,
    /// Cache channels.
    pub cache: Arc<dyn Cache>,
    /// Readiness and goodbye.
    pub health: Arc<dyn Health>,
}

impl Cluster {
    /// Every concern served by one backend.
    pub fn of<B: Backend>(backend: B) -> Cluster {
        let b = Arc::new(backend);
        Cluster { fanout: b.clone(), channels: b.clone(), users: b.clone(), cache: b.clone(), health: b }
    }

    /// The embedded backend over this node's registry.
    pub fn local(registry: Registry) -> Cluster {
        Cluster::of(LocalCluster::new(registry))
    }
}
