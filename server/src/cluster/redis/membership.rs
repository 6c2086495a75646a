//! The Redis side of joining and leaving a channel: the presence and channel scripts, whose
//! results are the cluster-wide transitions.

use super::keys::Entry;
use super::RedisCluster;
use crate::channels::{AddError, Member};

impl RedisCluster {
    pub(super) async fn try_join(
        &self,
        app_id: &str,
        channel: &str,
        member: Option<&Member>,
        max_members: usize,
    ) -> redis::RedisResult<Result<(bool, bool, u64), AddError>> {
        let k = &self.inner.keys;
        let me = self.member();
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
        Ok(Ok((before == 0, member_added, after)))
    }

    pub(super) async fn try_leave(
        &self,
        app_id: &str,
        channel: &str,
        user_id: Option<&str>,
    ) -> redis::RedisResult<(bool, bool, u64)> {
        let k = &self.inner.keys;
        let me = self.member();
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
        Ok((total == 0, member_removed, total.max(0) as u64))
    }
}
