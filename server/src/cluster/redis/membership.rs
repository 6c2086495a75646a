//! The Redis side of joining and leaving a channel: the presence and channel scripts, whose
//! results are the cluster-wide transitions.

use std::sync::Arc;

use super::keys::Entry;
use super::RedisCluster;
use crate::channels::{AddError, Member};
use crate::cluster::Transition;

/// What the scripts decided for a join.
pub(super) struct RemoteJoin {
    occupied: bool,
    member_added: bool,
    count: u64,
}

impl RemoteJoin {
    /// Occupied, member added, subscription count: the order the announcer wants.
    pub(super) fn transitions(self, channel: &str, member: Option<Member>) -> Vec<Transition> {
        let mut out = Vec::with_capacity(3);
        if self.occupied {
            out.push(Transition::Occupied { channel: channel.to_owned() });
        }
        if let (true, Some(member)) = (self.member_added, member) {
            out.push(Transition::MemberAdded { channel: channel.to_owned(), member });
        }
        out.push(Transition::SubscriptionCount { channel: channel.to_owned(), count: self.count });
        out
    }
}

/// What the scripts decided for a leave.
pub(super) struct RemoteLeave {
    vacated: bool,
    member_removed: bool,
    count: u64,
}

impl RemoteLeave {
    /// Vacated, subscription count, member removed: the order the announcer wants.
    pub(super) fn transitions(self, channel: &str, user_id: Option<Arc<str>>) -> Vec<Transition> {
        let mut out = Vec::with_capacity(3);
        if self.vacated {
            out.push(Transition::Vacated { channel: channel.to_owned() });
        }
        out.push(Transition::SubscriptionCount { channel: channel.to_owned(), count: self.count });
        if let (true, Some(user_id)) = (self.member_removed, user_id) {
            out.push(Transition::MemberRemoved { channel: channel.to_owned(), user_id });
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
        let mut member_added = false;
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
            member_added = added == 1;
        }
        let (before, after): (u64, u64) = self
            .inner
            .scripts
            .join_channel
            .key(k.chan(app_id, channel))
            .key(k.channels(app_id))
            .key(k.nodekeys(&me))
            .key(k.lease(&me))
            .arg(&*me)
            .arg(channel)
            .arg(Entry::Channel(app_id, channel).encode())
            .arg(1)
            .invoke_async(&mut conn)
            .await?;
        Ok(Ok(RemoteJoin { occupied: before == 0, member_added, count: after }))
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
        let mut member_removed = false;
        if let Some(user) = user_id {
            let gone: i64 = self
                .inner
                .scripts
                .presence_leave
                .key(k.pres(app_id, channel))
                .key(k.pinfo(app_id, channel))
                .key(k.pmem(app_id, channel, &me))
                .key(k.nodekeys(&me))
                .arg(user)
                .arg(Entry::Presence(app_id, channel).encode())
                .invoke_async(&mut conn)
                .await?;
            member_removed = gone == 1;
        }
        let total: i64 = self
            .inner
            .scripts
            .leave_channel
            .key(k.chan(app_id, channel))
            .key(k.channels(app_id))
            .key(k.nodekeys(&me))
            .arg(&*me)
            .arg(channel)
            .arg(Entry::Channel(app_id, channel).encode())
            .invoke_async(&mut conn)
            .await?;
        Ok(RemoteLeave { vacated: total == 0, member_removed, count: total.max(0) as u64 })
    }
}
