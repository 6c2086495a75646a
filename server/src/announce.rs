//! The one place a [`Transition`] becomes its effects: the Pusher frame to the channel's
//! subscribers (or the user's watchers), the webhook, and the throttled subscription count.
//! Every path that changes shared state goes through [`Announcer::announce`]: the socket paths
//! (subscribe, unsubscribe, close, sign-in) and the cluster backend's own clean-ups and resyncs
//! ([`Announcer::run_backend`]). Nothing else emits these frames or webhooks.
//!
//! Who hears a frame follows the transition's [`Origin`]: a socket's own action reaches every
//! subscriber but that socket; a dead node's clean-up reaches everyone; a rejoining node's
//! republish reaches the other nodes only (its own sockets never saw the change undone).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apps::{App, AppStore};
use crate::cluster::{
    Announcement, ChannelState, Cluster, FanOut, MemberSeq, Origin, Transition, Users, Window,
};
use crate::protocol::frames;
use crate::subscription_count::{Decision, SubscriptionCounts};
use crate::webhooks::{WebhookEvent, Webhooks};

/// Turns transitions into frames, webhooks and subscription counts. Cheap to clone.
#[derive(Clone)]
pub struct Announcer {
    fanout: Arc<dyn FanOut>,
    users: Arc<dyn Users>,
    /// Read when a throttled subscription count is finally sent.
    channels: Arc<dyn ChannelState>,
    webhooks: Webhooks,
    counts: SubscriptionCounts,
    /// Looked up for transitions a backend decided on its own.
    apps: Arc<dyn AppStore>,
    /// Webhooks held cluster-wide, waiting for their window to end.
    holds: TaskTracker,
    /// Cancelled at shutdown: held webhooks end their window at once.
    release_now: CancellationToken,
}

impl Announcer {
    /// An announcer publishing through `cluster` and emitting through `webhooks`.
    pub fn new(cluster: &Cluster, webhooks: Webhooks, apps: Arc<dyn AppStore>) -> Self {
        Announcer {
            fanout: cluster.fanout.clone(),
            users: cluster.users.clone(),
            channels: cluster.channels.clone(),
            webhooks,
            counts: SubscriptionCounts::default(),
            apps,
            holds: TaskTracker::new(),
            release_now: CancellationToken::new(),
        }
    }

    /// Shutdown: ends the window of every webhook held cluster-wide now (what nothing came
    /// back for is sent, as a node's own held webhooks are), waiting at most `grace`.
    pub async fn release_holds(&self, grace: Duration) {
        self.release_now.cancel();
        self.holds.close();
        if tokio::time::timeout(grace, self.holds.wait()).await.is_err() {
            tracing::warn!("held webhooks still waiting at shutdown were abandoned");
        }
    }

    /// Announces what a change of `app`'s state caused, in order.
    pub async fn announce(&self, app: &Arc<App>, origin: &Origin, transitions: Vec<Transition>) {
        self.effects(&app.id, Some(app), origin, transitions).await;
    }

    /// Announces transitions the cluster backend decided on its own (a dead node's clean-up, a
    /// resync), until the backend drops its sender. An app that no longer exists gets its
    /// frames but no webhooks.
    pub async fn run_backend(self, mut rx: UnboundedReceiver<Announcement>) {
        while let Some(announcement) = rx.recv().await {
            match announcement {
                Announcement::Transitions { app_id, origin, transitions } => {
                    let app = self.apps.by_id(&app_id);
                    self.effects(&app_id, app.as_ref(), &origin, transitions).await;
                }
                Announcement::Resume(requests) => self.webhooks.resume(requests),
                Announcement::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    async fn effects(
        &self,
        app_id: &str,
        app: Option<&Arc<App>>,
        origin: &Origin,
        transitions: Vec<Transition>,
    ) {
        // Departures whose window ended unsent, each to go out with the return that found it.
        let mut overdue: Vec<(String, Option<Arc<str>>)> = Vec::new();
        for transition in transitions {
            match transition {
                Transition::Occupied { channel, webhook } => {
                    if webhook {
                        let back = WebhookEvent::ChannelOccupied { channel: channel.clone() };
                        self.arrival_webhook(app, &mut overdue, (channel, None), back);
                    }
                }
                Transition::Vacated { channel, window } => {
                    self.held_webhook(app, window, WebhookEvent::ChannelVacated { channel });
                }
                Transition::MemberAdded { channel, member, webhook, seq } => {
                    let frame = frames::member_added(&channel, member.as_ref());
                    self.member_event(app_id, &channel, frame, origin, seq).await;
                    if webhook {
                        let back = WebhookEvent::MemberAdded {
                            channel: channel.clone(),
                            user_id: member.user_id.to_string(),
                        };
                        self.arrival_webhook(app, &mut overdue, (channel, Some(member.user_id)), back);
                    }
                }
                Transition::MemberRemoved { channel, user_id, window, seq } => {
                    // Webhook first, then the frame: the order the socket path always had.
                    let event = WebhookEvent::MemberRemoved {
                        channel: channel.clone(),
                        user_id: user_id.to_string(),
                    };
                    self.held_webhook(app, window, event);
                    let frame = frames::member_removed(&channel, &user_id);
                    // The leaving socket is gone already: everyone else hears it.
                    let origin = match origin {
                        Origin::Socket(_) => &Origin::Cleanup,
                        other => other,
                    };
                    self.member_event(app_id, &channel, frame, origin, seq).await;
                }
                Transition::Overdue { channel, user_id } => overdue.push((channel, user_id)),
                Transition::SubscriptionCount { channel, count } => {
                    if let Some(app) =
                        app.filter(|a| a.subscription_count && !channel.starts_with("presence-"))
                    {
                        self.subscription_count(app, channel, count).await;
                    }
                }
                Transition::UserOnline { user_id } => {
                    self.to_watchers(app_id, &user_id, frames::watchlist_events(&[&user_id], &[]), origin)
                        .await;
                }
                Transition::UserOffline { user_id } => {
                    self.to_watchers(app_id, &user_id, frames::watchlist_events(&[], &[&user_id]), origin)
                        .await;
                }
            }
        }
        // Not followed by their return (not expected): sent alone.
        for (channel, user_id) in overdue {
            if let Some(app) = app {
                self.webhooks.emit_settled(app, departure(channel, user_id));
            }
        }
    }

    /// A `channel_occupied` / `member_added` webhook, after the overdue departure it follows
    /// (`who`: the channel, and the member for a member event) in the same request, if any.
    fn arrival_webhook(
        &self,
        app: Option<&Arc<App>>,
        overdue: &mut Vec<(String, Option<Arc<str>>)>,
        who: (String, Option<Arc<str>>),
        back: WebhookEvent,
    ) {
        let (Some(app), Some(i)) = (app, overdue.iter().position(|o| *o == who)) else {
            return self.webhook(app, back);
        };
        let (channel, user_id) = overdue.swap_remove(i);
        self.webhooks.emit_in_order(app, vec![departure(channel, user_id), back]);
    }

    fn webhook(&self, app: Option<&Arc<App>>, event: WebhookEvent) {
        if let Some(app) = app {
            self.webhooks.emit(app, event);
        }
    }

    /// A `channel_vacated` / `member_removed` webhook: held by the webhook queue (one node), or
    /// held cluster-wide, in which case it is sent after the window only if the backend says
    /// nothing came back meanwhile.
    fn held_webhook(&self, app: Option<&Arc<App>>, window: Window, event: WebhookEvent) {
        let Some(app) = app else { return };
        let hold = match window {
            Window::Local => return self.webhooks.emit(app, event),
            Window::Skip => return,
            Window::Cluster(hold) => hold,
        };
        let (channels, webhooks, app) = (self.channels.clone(), self.webhooks.clone(), app.clone());
        let release_now = self.release_now.clone();
        let window = hold.remaining(self.webhooks.window());
        self.holds.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(window) => {}
                _ = release_now.cancelled() => {}
            }
            if channels.release(&hold).await {
                webhooks.emit_settled(&app, event);
            }
        });
    }

    /// A `member_added` / `member_removed` frame to the channel, numbered `seq` in the app's
    /// member sequence (subscribers whose member list showed the change skip it).
    async fn member_event(
        &self,
        app_id: &str,
        channel: &str,
        frame: String,
        origin: &Origin,
        seq: MemberSeq,
    ) {
        let frame = Utf8Bytes::from(frame);
        match origin {
            // The frames went out when the change happened; only the webhooks were left.
            Origin::Takeover => {}
            Origin::Rejoin => self.fanout.publish_elsewhere(app_id, channel, frame).await,
            _ => {
                if let Err(e) = self.fanout.publish_member(app_id, channel, frame, origin.except(), seq).await
                {
                    // The node degrades; its resync republishes the state this frame told of.
                    tracing::debug!(app_id, channel, error = %e, "transition frame not sent to every node");
                }
            }
        }
    }

    async fn to_watchers(&self, app_id: &str, user_id: &str, frame: String, origin: &Origin) {
        let frame = Utf8Bytes::from(frame);
        match origin {
            Origin::Takeover => {}
            Origin::Rejoin => self.users.notify_watchers_elsewhere(app_id, user_id, frame).await,
            _ => self.users.notify_watchers(app_id, user_id, frame, origin.except()).await,
        }
    }

    /// `pusher_internal:subscription_count` and its webhook, throttled for large channels with
    /// a trailing update so the last count is never lost.
    async fn subscription_count(&self, app: &Arc<App>, channel: String, count: u64) {
        match self.counts.decide(&app.id, &channel, count, Instant::now()) {
            Decision::Now => self.send_count(app, &channel, count).await,
            Decision::AlreadyScheduled => {}
            Decision::Later(at) => {
                let (announcer, app) = (self.clone(), app.clone());
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    announcer.counts.trailing_sent(&app.id, &channel);
                    let stats = announcer.channels.channel_stats(&app.id, &channel).await;
                    announcer.send_count(&app, &channel, stats.subscription_count).await;
                });
            }
        }
    }

    async fn send_count(&self, app: &Arc<App>, channel: &str, count: u64) {
        if count > 0 {
            let frame = frames::subscription_count(channel, count);
            if let Err(e) = self.fanout.publish(&app.id, channel, frame.into(), None).await {
                tracing::debug!(app_id = %app.id, channel, error = %e, "subscription count not sent to every node");
            }
        }
        let event =
            WebhookEvent::SubscriptionCount { channel: channel.to_owned(), subscription_count: count };
        self.webhooks.emit(app, event);
    }
}

/// The webhook of a departure: `channel_vacated`, or `member_removed` for a member.
fn departure(channel: String, user_id: Option<Arc<str>>) -> WebhookEvent {
    match user_id {
        None => WebhookEvent::ChannelVacated { channel },
        Some(user_id) => WebhookEvent::MemberRemoved { channel, user_id: user_id.to_string() },
    }
}

#[cfg(test)]
mod tests;
