//! The Redis side of joining and leaving a channel: the presence and channel scripts, whose
//! results are the cluster-wide transitions.

use std::sync::Arc;

use super::keys::Entry;
use super::{member_from, RedisCluster};
use crate::channels::{AddError, Member, MemberSeq, Removed};
use crate::cluster::{Hold, Transition, Window};

/// How long a held webhook's key lives in Redis: well past the 3 s window, so the node that
/// holds it always finds it when the window ends; if that node died, the key goes by itself.
pub(super) const HOLD_TTL_MS: u64 = 60_000;

/// A fresh hold token: tells this hold from a newer one on the same channel or member, and
/// says when its window began (see [`Hold::remaining`]).
pub(super) fn hold_token() -> String {
    format!("{:016x}@{}", rand::random::<u64>(), unix_ms())
}

/// For a return: a held departure whose window began before this (unix ms) has ended its window
/// unsent — its holder stalled or died — so the departure stands and the return is news.
pub(super) fn window_cutoff() -> u64 {
    unix_ms().saturating_sub(crate::webhooks::DEBOUNCE.as_millis() as u64)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// What the scripts decided for a join.
pub(super) struct RemoteJoin {
    occupied: bool,
    /// The channel came back within its vacate window.
    channel_returned: bool,
    /// The channel came back after its vacate's window ended unsent: that webhook is this
    /// join's to send.
    channel_overdue: bool,
    member_added: bool,
    /// The member came back within its removal window.
    member_returned: bool,
    /// The member came back after its removal's window ended unsent (see `channel_overdue`).
    member_overdue: bool,
    count: u64,
    /// The member sequence the members were read at: this member's addition, when it was added.
    pub(super) seq: MemberSeq,
    /// The members, on a presence channel, read in the same script as `seq`.
    pub(super) members: Option<Vec<Member>>,
}

impl RemoteJoin {
    /// Occupied, member added, subscription count: the order the announcer wants; each after
    /// the departure it follows, when that was overdue.
    pub(super) fn transitions(&self, channel: &str, member: Option<Member>) -> Vec<Transition> {
        let mut out = Vec::with_capacity(5);
        if self.occupied {
            if self.channel_overdue {
                out.push(Transition::Overdue { channel: channel.to_owned(), user_id: None });
            }
            out.push(Transition::Occupied { channel: channel.to_owned(), webhook: !self.channel_returned });
        }
        if let (true, Some(member)) = (self.member_added, member) {
            if self.member_overdue {
                let user_id = Some(member.user_id.clone());
                out.push(Transition::Overdue { channel: channel.to_owned(), user_id });
            }
            let (webhook, seq) = (!self.member_returned, self.seq);
            out.push(Transition::MemberAdded { channel: channel.to_owned(), member, webhook, seq });
        }
        out.push(Transition::SubscriptionCount { channel: channel.to_owned(), count: self.count });
        out
    }
}

/// What the scripts decided for a leave.
pub(super) struct RemoteLeave {
    /// The channel's vacate webhook, held.
    vacated: Option<Hold>,
    /// The member's removal webhook, held.
    member_removed: Option<Hold>,
    /// The removal's number in the member sequence.
    seq: MemberSeq,
    count: u64,
}

impl RemoteLeave {
    /// Vacated, subscription count, member removed: the order the announcer wants.
    pub(super) fn transitions(self, channel: &str, user_id: Option<Arc<str>>) -> Vec<Transition> {
        let mut out = Vec::with_capacity(3);
        if let Some(hold) = self.vacated {
            out.push(Transition::Vacated { channel: channel.to_owned(), window: Window::Cluster(hold) });
        }
        out.push(Transition::SubscriptionCount { channel: channel.to_owned(), count: self.count });
        if let (Some(hold), Some(user_id)) = (self.member_removed, user_id) {
            let (window, seq) = (Window::Cluster(hold), self.seq);
            out.push(Transition::MemberRemoved { channel: channel.to_owned(), user_id, window, seq });
        }
        out
    }
}

impl RedisCluster {
    /// The `join_channel` script for `subscriptions` more of incarnation `me`'s subscribers of a
    /// channel (a subscribe, or a node's channels written again after an outage), with the
    /// vacate window measured against `cutoff` ([`window_cutoff`]).
    pub(super) fn join_channel(
        &self,
        app_id: &str,
        channel: &str,
        me: &str,
        subscriptions: u64,
        cutoff: u64,
    ) -> redis::ScriptInvocation<'_> {
        let k = &self.inner.keys;
        let mut call = self.inner.scripts.join_channel.prepare_invoke();
        call.key(k.chan(app_id, channel))
            .key(k.channels(app_id))
            .key(k.nodekeys(app_id, me))
            .key(k.held_vacate(app_id, channel))
            .key(k.alive(app_id, me))
            .arg(me)
            .arg(channel)
            .arg(Entry::Channel(app_id, channel).encode())
            .arg(subscriptions)
            .arg(cutoff);
        call
    }

    /// Takes a socket out of this node's registry, and the node off the channel's bus when it
    /// was the last local subscriber.
    pub(super) async fn unregister(&self, app_id: &str, channel: &str, socket_id: &str) -> Removed {
        let removed = self.inner.registry.remove(app_id, channel, socket_id);
        if removed.was_subscribed && removed.subscriptions == 0 {
            self.unsubscribe_bus(app_id, channel).await;
        }
        removed
    }

    pub(super) async fn try_join(
        &self,
        app_id: &str,
        channel: &str,
        member: Option<&Member>,
        max_members: usize,
    ) -> redis::RedisResult<Result<RemoteJoin, AddError>> {
        let k = &self.inner.keys;
        let me = self.incarnation();
        let mut conn = self.live();
        self.enter_app(&mut conn, &me, app_id).await?;
        let (mut member_added, mut member_returned, mut member_overdue) = (false, false, false);
        let cutoff = window_cutoff();
        let (mut seq, mut members) = (0, None);
        let scripts = &self.inner.scripts;
        let (before, after, returned): (u64, u64, u64) = match member {
            // One script for the member and the subscription: one round trip.
            Some(m) => {
                let info = m.user_info.as_ref().map_or("", |i| i.get());
                type Answer = (i64, u64, u64, u64, MemberSeq, Vec<(String, String)>);
                let (added, before, after, returned, read_at, list): Answer = scripts
                    .presence_join_channel
                    .key(k.pres(app_id, channel))
                    .key(k.pinfo(app_id, channel))
                    .key(k.pmem(app_id, channel, &me))
                    .key(k.nodekeys(app_id, &me))
                    .key(k.held_remove(app_id, channel, &m.user_id))
                    .key(k.chan(app_id, channel))
                    .key(k.channels(app_id))
                    .key(k.held_vacate(app_id, channel))
                    .key(k.pseq(app_id))
                    .key(k.alive(app_id, &me))
                    .arg(&*m.user_id)
                    .arg(info)
                    .arg(max_members)
                    .arg(Entry::Presence(app_id, channel).encode())
                    .arg(1)
                    .arg(cutoff)
                    .arg(&*me)
                    .arg(channel)
                    .arg(Entry::Channel(app_id, channel).encode())
                    .invoke_async(&mut conn)
                    .await?;
                if added < 0 {
                    return Ok(Err(AddError::PresenceFull { max: max_members }));
                }
                member_added = added >= 1;
                member_returned = added == 2;
                member_overdue = added == 3;
                seq = read_at;
                members = Some(list.into_iter().map(|(id, info)| member_from(id, info)).collect());
                (before, after, returned)
            }
            None => self.join_channel(app_id, channel, &me, 1, cutoff).invoke_async(&mut conn).await?,
        };
        Ok(Ok(RemoteJoin {
            occupied: before == 0,
            channel_returned: returned == 1,
            channel_overdue: returned == 2,
            member_added,
            member_returned,
            member_overdue,
            count: after,
            seq,
            members,
        }))
    }

    pub(super) async fn try_leave(
        &self,
        app_id: &str,
        channel: &str,
        user_id: Option<&str>,
    ) -> redis::RedisResult<RemoteLeave> {
        let k = &self.inner.keys;
        let me = self.incarnation();
        let mut conn = self.live();
        let entry = Entry::HeldVacate(app_id, channel).encode();
        let vacate = Hold {
            key: k.held_vacate(app_id, channel),
            token: hold_token(),
            listed: Some((k.nodekeys(app_id, &me), entry.clone())),
        };
        let scripts = &self.inner.scripts;
        let (member_removed, total, seq) = match user_id {
            // One script for the member and the subscription: one round trip.
            Some(user) => {
                let member_entry = Entry::HeldRemove(app_id, channel, user).encode();
                let hold = Hold {
                    key: k.held_remove(app_id, channel, user),
                    token: hold_token(),
                    listed: Some((k.nodekeys(app_id, &me), member_entry.clone())),
                };
                let (gone, total, seq): (i64, i64, MemberSeq) = scripts
                    .presence_leave_channel
                    .key(k.pres(app_id, channel))
                    .key(k.pinfo(app_id, channel))
                    .key(k.pmem(app_id, channel, &me))
                    .key(k.nodekeys(app_id, &me))
                    .key(&hold.key)
                    .key(k.chan(app_id, channel))
                    .key(k.channels(app_id))
                    .key(&vacate.key)
                    .key(k.pseq(app_id))
                    .arg(user)
                    .arg(Entry::Presence(app_id, channel).encode())
                    .arg(&hold.token)
                    .arg(HOLD_TTL_MS)
                    .arg(&member_entry)
                    .arg(&*me)
                    .arg(channel)
                    .arg(Entry::Channel(app_id, channel).encode())
                    .arg(&vacate.token)
                    .arg(&entry)
                    .invoke_async(&mut conn)
                    .await?;
                ((gone == 1).then_some(hold), total, seq)
            }
            None => {
                let total: i64 = scripts
                    .leave_channel
                    .key(k.chan(app_id, channel))
                    .key(k.channels(app_id))
                    .key(k.nodekeys(app_id, &me))
                    .key(&vacate.key)
                    .arg(&*me)
                    .arg(channel)
                    .arg(Entry::Channel(app_id, channel).encode())
                    .arg(&vacate.token)
                    .arg(HOLD_TTL_MS)
                    .arg(&entry)
                    .invoke_async(&mut conn)
                    .await?;
                (None, total, 0)
            }
        };
        let hold = vacate;
        let (vacated, count) = ((total == 0).then_some(hold), total.max(0) as u64);
        Ok(RemoteLeave { vacated, member_removed, seq, count })
    }
}
