//! The Redis side of joining and leaving a channel: the presence and channel scripts, whose
//! results are the cluster-wide transitions.

use std::sync::Arc;

use super::keys::Entry;
use super::RedisCluster;
use crate::channels::{AddError, Member};
use crate::cluster::{Hold, Transition, Window};

/// How long a held webhook's key lives in Redis: well past the 3 s window, so the node that
/// holds it always finds it when the window ends; if that node died, the key goes by itself.
pub(super) const HOLD_TTL_MS: u64 = 60_000;

/// A fresh hold token: tells this hold from a newer one on the same channel or member, and
/// says when its window began (see [`Hold::remaining`]).
pub(super) fn hold_token() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("{:016x}@{since}", rand::random::<u64>())
}

/// What the scripts decided for a join.
pub(super) struct RemoteJoin {
    occupied: bool,
    /// The channel came back within its vacate window.
    channel_returned: bool,
    member_added: bool,
    /// The member came back within its removal window.
    member_returned: bool,
    count: u64,
}

impl RemoteJoin {
    /// Occupied, member added, subscription count: the order the announcer wants.
    pub(super) fn transitions(self, channel: &str, member: Option<Member>) -> Vec<Transition> {
        let mut out = Vec::with_capacity(3);
        if self.occupied {
            out.push(Transition::Occupied { channel: channel.to_owned(), webhook: !self.channel_returned });
        }
        if let (true, Some(member)) = (self.member_added, member) {
            let webhook = !self.member_returned;
            out.push(Transition::MemberAdded { channel: channel.to_owned(), member, webhook });
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
            let window = Window::Cluster(hold);
            out.push(Transition::MemberRemoved { channel: channel.to_owned(), user_id, window });
        }
        out
    }
}

impl RedisCluster {
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
        let (mut member_added, mut member_returned) = (false, false);
        if let Some(m) = member {
            let info = m.user_info.as_ref().map_or("", |i| i.get());
            let added: i64 = self
                .inner
                .scripts
                .presence_join
                .key(k.pres(app_id, channel))
                .key(k.pinfo(app_id, channel))
                .key(k.pmem(app_id, channel, &me))
                .key(k.nodekeys(&me))
                .key(k.held_remove(app_id, channel, &m.user_id))
                .key(k.lease(&me))
                .arg(&*m.user_id)
                .arg(info)
                .arg(max_members)
                .arg(Entry::Presence(app_id, channel).encode())
                .arg(1)
                .invoke_async(&mut conn)
                .await?;
            if added < 0 {
                return Ok(Err(AddError::PresenceFull { max: max_members }));
            }
            member_added = added >= 1;
            member_returned = added == 2;
        }
        let (before, after, returned): (u64, u64, u64) = self
            .inner
            .scripts
            .join_channel
            .key(k.chan(app_id, channel))
            .key(k.channels(app_id))
            .key(k.nodekeys(&me))
            .key(k.held_vacate(app_id, channel))
            .key(k.lease(&me))
            .arg(&*me)
            .arg(channel)
            .arg(Entry::Channel(app_id, channel).encode())
            .arg(1)
            .invoke_async(&mut conn)
            .await?;
        Ok(Ok(RemoteJoin {
            occupied: before == 0,
            channel_returned: returned == 1,
            member_added,
            member_returned,
            count: after,
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
        let mut member_removed = None;
        if let Some(user) = user_id {
            let entry = Entry::HeldRemove(app_id, channel, user).encode();
            let hold = Hold {
                key: k.held_remove(app_id, channel, user),
                token: hold_token(),
                listed: Some((k.nodekeys(&me), entry.clone())),
            };
            let gone: i64 = self
                .inner
                .scripts
                .presence_leave
                .key(k.pres(app_id, channel))
                .key(k.pinfo(app_id, channel))
                .key(k.pmem(app_id, channel, &me))
                .key(k.nodekeys(&me))
                .key(&hold.key)
                .arg(user)
                .arg(Entry::Presence(app_id, channel).encode())
                .arg(&hold.token)
                .arg(HOLD_TTL_MS)
                .arg(&entry)
                .invoke_async(&mut conn)
                .await?;
            member_removed = (gone == 1).then_some(hold);
        }
        let entry = Entry::HeldVacate(app_id, channel).encode();
        let hold = Hold {
            key: k.held_vacate(app_id, channel),
            token: hold_token(),
            listed: Some((k.nodekeys(&me), entry.clone())),
        };
        let total: i64 = self
            .inner
            .scripts
            .leave_channel
            .key(k.chan(app_id, channel))
            .key(k.channels(app_id))
            .key(k.nodekeys(&me))
            .key(&hold.key)
            .arg(&*me)
            .arg(channel)
            .arg(Entry::Channel(app_id, channel).encode())
            .arg(&hold.token)
            .arg(HOLD_TTL_MS)
            .arg(&entry)
            .invoke_async(&mut conn)
            .await?;
        Ok(RemoteLeave { vacated: (total == 0).then_some(hold), member_removed, count: total.max(0) as u64 })
    }
}
