//! `pusher:subscribe`: name rules, authorization, presence membership, and the answer in the
//! configured error dialect.

use axum::extract::ws::WebSocket;

use super::{Connection, Gone};
use crate::channels::{AddError, ChannelDataError, Member};
use crate::cluster::Transition;
use crate::console_log::LogEntry;
use crate::protocol::frames;
use crate::protocol::{parse_channel, server_to_user_id, ChannelKind, ChannelName, Subscribe};
use crate::signing;
use crate::webhooks::WebhookEvent;

/// A refused subscription: the error `type` and `status` of the soketi dialect, and a message.
struct Refusal {
    kind: &'static str,
    status: u16,
    message: String,
    /// The per-app limit that refused it, for `herald_limited_total`.
    limit: Option<&'static str>,
}

impl Refusal {
    fn new(kind: &'static str, status: u16, message: impl Into<String>) -> Self {
        Refusal { kind, status, message: message.into(), limit: None }
    }

    /// A refusal by the limit `limit` (error type `LimitReached`).
    fn limit(limit: &'static str, status: u16, message: impl Into<String>) -> Self {
        Refusal { kind: "LimitReached", status, message: message.into(), limit: Some(limit) }
    }
}

/// A successful subscription: the answer to send, and what the join changed.
struct Subscribed {
    frame: String,
    name: ChannelName,
    /// The presence user the socket joined as (`None` when it was already subscribed).
    member: Option<Member>,
    /// Empty when the socket was already subscribed.
    transitions: Vec<Transition>,
}

impl Connection {
    pub(super) async fn subscribe(&mut self, socket: &mut WebSocket, sub: Subscribe) -> Result<(), Gone> {
        let subscribed = match self.try_subscribe(&sub).await {
            Ok(s) => s,
            Err(r) => {
                if let Some(limit) = r.limit {
                    self.state.metrics.limit_hit(&self.app.id, limit);
                }
                let dialect = self.state.settings.error_dialect;
                self.state.console.emit(|| {
                    LogEntry::new(&self.app.id, "subscription_error")
                        .channel(&sub.channel)
                        .socket(&self.socket_id)
                        .detail(&r.message)
                });
                let frame = frames::subscription_error(dialect, &sub.channel, r.kind, &r.message, r.status);
                return self.send(socket, frame).await;
            }
        };
        // The join is done whatever happens to this write: if the client is gone, its join is
        // still announced, so the leave that follows is not news of something never told.
        let sent = self.send(socket, subscribed.frame).await;
        let channel = sub.channel.as_str();
        self.state.console.emit(|| {
            let entry = LogEntry::new(&self.app.id, "subscribed").channel(channel).socket(&self.socket_id);
            match subscribed.member.as_ref() {
                Some(member) => entry.detail(format!("as user {}", member.user_id)),
                None => entry,
            }
        });
        if subscribed.name.needs_auth() {
            self.auth_deadline = None;
        }
        self.announce(subscribed.transitions).await;
        sent?;
        if subscribed.name.cache {
            self.replay_cache(socket, channel).await?;
        }
        Ok(())
    }

    /// Cache channels: the last event right after the success, or `pusher:cache_miss`.
    async fn replay_cache(&self, socket: &mut WebSocket, channel: &str) -> Result<(), Gone> {
        match self.state.cluster.cache.cache_get(&self.app.id, channel).await {
            Some(frame) => {
                self.counters.messages_sent.inc();
                socket.send(axum::extract::ws::Message::Text(frame)).await.map_err(|_| Gone)
            }
            None => {
                self.state.webhooks.emit(&self.app, WebhookEvent::CacheMiss { channel: channel.to_owned() });
                self.send(socket, frames::cache_miss(channel)).await
            }
        }
    }

    /// Checks and joins the channel.
    async fn try_subscribe(&mut self, sub: &Subscribe) -> Result<Subscribed, Refusal> {
        let limits = &self.app.limits;
        let channel = sub.channel.as_str();
        let name = parse_channel(channel, limits.max_channel_name_length).map_err(|e| {
            Refusal::new("InvalidChannel", 400, format!("Invalid channel name {channel:?}: {e}"))
        })?;
        let already = self.subscriptions.contains_key(channel);
        if !already && self.subscriptions.len() >= limits.max_subscriptions_per_connection {
            let msg = format!(
                "This connection is subscribed to {} channels, the most allowed",
                limits.max_subscriptions_per_connection
            );
            return Err(Refusal::limit("max_subscriptions_per_connection", 429, msg));
        }
        if !already
            && !self
                .subscription_changes
                .take(limits.subscription_changes_per_second, limits.max_subscriptions_per_connection)
        {
            let msg = format!(
                "Too many subscription changes on this connection: at most {} per second",
                limits.subscription_changes_per_second
            );
            return Err(Refusal::limit("subscription_changes_per_second", 429, msg));
        }
        if name.kind == ChannelKind::ServerToUser {
            let signed_in_as = self.user.as_ref().map(|u| &*u.id);
            if signed_in_as.is_none() || signed_in_as != server_to_user_id(channel) {
                let msg =
                    "Only a connection signed in as this user may subscribe to its #server-to-user channel";
                return Err(Refusal::new("AuthError", 403, msg));
            }
        }
        if name.needs_auth() {
            let auth = sub.auth.as_deref().unwrap_or_default();
            let data =
                (name.kind == ChannelKind::Presence).then(|| sub.channel_data.as_deref().unwrap_or_default());
            let signed = signing::channel_string(&self.socket_id, channel, data);
            signing::verify_token(&self.app.key, &self.app.secret, &signed, auth)
                .map_err(|e| Refusal::new("AuthError", 401, e.to_string()))?;
        }
        let member = match name.kind {
            ChannelKind::Presence => Some(self.presence_member(sub.channel_data.as_deref())?),
            _ => None,
        };
        if already {
            // Subscribing twice changes nothing; the client gets the current state again.
            let frame = self.succeeded(channel, member.is_some()).await;
            return Ok(Subscribed { frame, name, member: None, transitions: Vec::new() });
        }
        let user_id = member.as_ref().map(|m| m.user_id.clone());
        let joined = self
            .state
            .cluster
            .channels
            .join(&self.app.id, channel, self.outbox.clone(), member.clone(), limits.max_presence_members)
            .await
            .map_err(|AddError::PresenceFull { max }| {
                Refusal::limit(
                    "max_presence_members",
                    429,
                    format!("Presence channel {channel} is full ({max} members)"),
                )
            })?;
        self.subscriptions.insert(channel.to_owned(), user_id);
        // A presence socket gets the members read with its join: the member events it hears
        // from then on are the changes that list does not show.
        let frame = match &joined.members {
            Some(members) => {
                frames::presence_subscription_succeeded(channel, members.iter().map(Member::as_ref))
            }
            None => self.succeeded(channel, member.is_some()).await,
        };
        Ok(Subscribed { frame, name, member, transitions: joined.transitions })
    }

    async fn succeeded(&self, channel: &str, presence: bool) -> String {
        if !presence {
            return frames::subscription_succeeded(channel);
        }
        let members = self.state.cluster.channels.members(&self.app.id, channel).await;
        frames::presence_subscription_succeeded(channel, members.iter().map(Member::as_ref))
    }

    /// Reads the presence member from `channel_data`, within the app's limits.
    fn presence_member(&self, channel_data: Option<&str>) -> Result<Member, Refusal> {
        let raw = channel_data
            .ok_or_else(|| Refusal::new("InvalidChannelData", 400, "Presence channels need channel_data"))?;
        Member::from_channel_data(raw, &self.app.limits).map_err(|e| match e {
            ChannelDataError::Invalid(_) => Refusal::new("InvalidChannelData", 400, e.to_string()),
            ChannelDataError::UserIdTooLong { .. } => {
                Refusal::limit("max_user_id_length", 413, e.to_string())
            }
            ChannelDataError::InfoTooLarge { .. } => {
                Refusal::limit("max_presence_member_size", 413, e.to_string())
            }
        })
    }
}
