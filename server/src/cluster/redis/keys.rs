//! Redis key names and the Lua scripts that decide every cluster-wide transition atomically.
//!
//! An *incarnation* is one run of a node: `{node_id}:{random}`. Per-app keys carry the app id
//! in a hash tag (`{app}`); counts are kept per incarnation so a dead incarnation's share can be
//! taken away exactly. See `docs/cluster.md` for the schema and the lease protocol.

use redis::Script;

/// Builds key and pub/sub channel names under a prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys { prefix: prefix.to_owned() }
    }
    /// HASH incarnation → subscriber count of one channel.
    pub fn chan(&self, app: &str, ch: &str) -> String {
        format!("{}:{{{app}}}:chan:{ch}", self.prefix)
    }
    /// SET of an app's occupied channels.
    pub fn channels(&self, app: &str) -> String {
        format!("{}:{{{app}}}:channels", self.prefix)
    }
    /// HASH user → socket count of a presence channel.
    pub fn pres(&self, app: &str, ch: &str) -> String {
        format!("{}:{{{app}}}:pres:{ch}", self.prefix)
    }
    /// HASH user → user_info JSON of a presence channel.
    pub fn pinfo(&self, app: &str, ch: &str) -> String {
        format!("{}:{{{app}}}:pinfo:{ch}", self.prefix)
    }
    /// HASH user → socket count of one incarnation in a presence channel.
    pub fn pmem(&self, app: &str, ch: &str, incarnation: &str) -> String {
        format!("{}:{{{app}}}:pmem:{ch}:{incarnation}", self.prefix)
    }
    /// HASH user → signed-in socket count.
    pub fn users(&self, app: &str) -> String {
        format!("{}:{{{app}}}:users", self.prefix)
    }
    /// HASH user → signed-in socket count of one incarnation.
    pub fn umem(&self, app: &str, incarnation: &str) -> String {
        format!("{}:{{{app}}}:umem:{incarnation}", self.prefix)
    }
    /// HASH incarnation → connection count of an app.
    pub fn conns(&self, app: &str) -> String {
        format!("{}:{{{app}}}:conns", self.prefix)
    }
    /// STRING: the cached frame of a cache channel.
    pub fn cache(&self, app: &str, ch: &str) -> String {
        format!("{}:{{{app}}}:cache:{ch}", self.prefix)
    }
    /// SET of what an incarnation holds (entries from [`Entry`]), walked by its cleanup.
    pub fn nodekeys(&self, incarnation: &str) -> String {
        format!("{}:nodekeys:{incarnation}", self.prefix)
    }
    /// STRING with a TTL: the incarnation's lease.
    pub fn lease(&self, incarnation: &str) -> String {
        format!("{}:lease:{incarnation}", self.prefix)
    }
    /// STRING with a TTL: a `channel_vacated` webhook held for the window, cluster-wide. A join
    /// anywhere deletes it (the channel came back: no webhook either way); the node that held
    /// it sends the webhook after the window only if it is still there with its token.
    pub fn held_vacate(&self, app: &str, ch: &str) -> String {
        format!("{}:{{{app}}}:held:v:{ch}", self.prefix)
    }
    /// Prefix of the held `member_removed` keys of a presence channel (`…:{user}`).
    pub fn held_removes(&self, app: &str, ch: &str) -> String {
        format!("{}:{{{app}}}:held:r:{ch}:", self.prefix)
    }
    /// STRING with a TTL: a `member_removed` webhook held for the window (see `held_vacate`).
    pub fn held_remove(&self, app: &str, ch: &str, user: &str) -> String {
        format!("{}{user}", self.held_removes(app, ch))
    }
    /// HASH request id → JSON request: the webhook requests an incarnation is delivering, taken
    /// over by whoever cleans up after it.
    pub fn hooks(&self, incarnation: &str) -> String {
        format!("{}:hooks:{incarnation}", self.prefix)
    }
    /// STRING with a TTL: who is cleaning up after a dead incarnation. While it lives no other
    /// node claims that incarnation; if the claimer dies, it expires and another node finishes.
    pub fn claim(&self, incarnation: &str) -> String {
        format!("{}:claim:{incarnation}", self.prefix)
    }
    /// ZSET incarnation → lease expiry (ms): how live nodes find stale ones without scanning keys.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    /// STRING: a random value set once per Redis dataset; a different one means Redis lost
    /// its data (restarted empty) rather than this node being declared dead.
    pub fn epoch(&self) -> String {
        format!("{}:epoch", self.prefix)
    }
    /// Pub/sub channel of one Pusher channel.
    pub fn bus(&self, app: &str, ch: &str) -> String {
        format!("{}:bus:{app}:{ch}", self.prefix)
    }
    /// The prefix of every bus channel, for parsing.
    pub fn bus_prefix(&self) -> String {
        format!("{}:bus:", self.prefix)
    }
    /// STREAM of every message published on the bus, kept for [`super::buslog::WINDOW`].
    pub fn bus_log(&self) -> String {
        format!("{}:buslog", self.prefix)
    }
    /// Pub/sub channel every node listens to (terminate, watchlist changes).
    pub fn control(&self) -> String {
        format!("{}:control", self.prefix)
    }
}

/// An entry of an incarnation's `nodekeys` set: what to clean up when it dies.
pub enum Entry<'a> {
    Channel(&'a str, &'a str),
    Presence(&'a str, &'a str),
    Users(&'a str),
    Conns(&'a str),
    /// A `channel_vacated` webhook this incarnation holds (app, channel): taken over if it dies.
    HeldVacate(&'a str, &'a str),
    /// A `member_removed` webhook this incarnation holds (app, channel, user).
    HeldRemove(&'a str, &'a str, &'a str),
    /// Webhook requests this incarnation is delivering ([`Keys::hooks`]).
    Webhooks,
}

impl Entry<'_> {
    pub fn encode(&self) -> String {
        match self {
            Entry::Channel(app, ch) => format!("c\n{app}\n{ch}"),
            Entry::Presence(app, ch) => format!("p\n{app}\n{ch}"),
            Entry::Users(app) => format!("u\n{app}"),
            Entry::Conns(app) => format!("n\n{app}"),
            Entry::HeldVacate(app, ch) => format!("v\n{app}\n{ch}"),
            Entry::HeldRemove(app, ch, user) => format!("r\n{app}\n{ch}\n{user}"),
            Entry::Webhooks => "w\n-".to_owned(),
        }
    }

    pub fn decode(s: &str) -> Option<Entry<'_>> {
        // A user id, last, may hold anything, newlines too.
        let mut parts = s.splitn(4, '\n');
        let kind = parts.next()?;
        let app = parts.next()?;
        match (kind, parts.next(), parts.next()) {
            ("c", Some(ch), None) => Some(Entry::Channel(app, ch)),
            ("p", Some(ch), None) => Some(Entry::Presence(app, ch)),
            ("u", None, None) => Some(Entry::Users(app)),
            ("n", None, None) => Some(Entry::Conns(app)),
            ("v", Some(ch), None) => Some(Entry::HeldVacate(app, ch)),
            ("r", Some(ch), Some(user)) => Some(Entry::HeldRemove(app, ch, user)),
            ("w", None, None) => Some(Entry::Webhooks),
            _ => None,
        }
    }
}

const SUM: &str = "local function sum(k) local t = 0 for _, v in ipairs(redis.call('HVALS', k)) do t = t + tonumber(v) end return t end
local function taken(k) local h = redis.call('GET', k) if not h then return 0 end redis.call('DEL', k) if string.find(h, '#', 1, true) then return 0 end return 1 end\n";
const FENCE: &str =
    "if redis.call('EXISTS', KEYS[#KEYS]) == 0 then return redis.error_reply('FENCED lease lost') end\n";

/// The scripts, loaded once.
pub struct Scripts {
    pub join_channel: Script,
    pub leave_channel: Script,
    pub presence_join: Script,
    pub presence_leave: Script,
    pub user_in: Script,
    pub user_out: Script,
    pub connect: Script,
    pub disconnect: Script,
    pub clean_channel: Script,
    pub clean_hash: Script,
    pub release: Script,
    pub renew: Script,
    pub claim: Script,
}

impl Scripts {
    pub fn new() -> Self {
        let fenced = |body: &str| Script::new(&format!("{SUM}{FENCE}{body}"));
        let plain = |body: &str| Script::new(&format!("{SUM}{body}"));
        Scripts {
            // KEYS chan, channels, nodekeys, held vacate, lease; ARGV incarnation, channel, entry,
            // delta → {before, after, 1 when the channel came back within its vacate window}
            join_channel: fenced(
                "local before = sum(KEYS[1])
                 redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[4])
                 redis.call('SADD', KEYS[2], ARGV[2])
                 redis.call('SADD', KEYS[3], ARGV[3])
                 local returned = 0
                 if before == 0 then returned = taken(KEYS[4]) end
                 return {before, before + tonumber(ARGV[4]), returned}",
            ),
            // KEYS chan, channels, nodekeys, held vacate; ARGV incarnation, channel, entry, hold
            // token, hold ms, hold entry → total after (0: vacated, its webhook held and listed in
            // nodekeys, so a node that cleans up after this one takes it over), -1 if not ours
            leave_channel: plain(
                "local mine = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
                 if mine <= 0 then return -1 end
                 if mine == 1 then
                   redis.call('HDEL', KEYS[1], ARGV[1])
                   redis.call('SREM', KEYS[3], ARGV[3])
                 else
                   redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
                 end
                 local total = sum(KEYS[1])
                 if total == 0 then
                   redis.call('SREM', KEYS[2], ARGV[2])
                   redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[5])
                   redis.call('SADD', KEYS[3], ARGV[6])
                 end
                 return total",
            ),
            // KEYS pres, pinfo, pmem, nodekeys, held remove, lease; ARGV user, info, max, entry,
            // delta → 1 member added, 2 added back within its removal window, 0 already a
            // member, -1 channel full
            presence_join: fenced(
                "local c = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
                 if c == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
                 redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[5])
                 redis.call('HINCRBY', KEYS[3], ARGV[1], ARGV[5])
                 if c == 0 then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
                 redis.call('SADD', KEYS[4], ARGV[4])
                 if c == 0 then
                   if taken(KEYS[5]) == 1 then return 2 end
                   return 1
                 end
                 return 0",
            ),
            // KEYS pres, pinfo, pmem, nodekeys, held remove; ARGV user, entry, hold token, hold ms,
            // hold entry → 1 when the member is gone (its webhook held and listed in nodekeys)
            presence_leave: plain(
                "local mine = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
                 if mine <= 0 then return 0 end
                 if mine == 1 then redis.call('HDEL', KEYS[3], ARGV[1]) else redis.call('HINCRBY', KEYS[3], ARGV[1], -1) end
                 if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('SREM', KEYS[4], ARGV[2]) end
                 local c = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
                 if c <= 0 then
                   redis.call('HDEL', KEYS[1], ARGV[1])
                   redis.call('HDEL', KEYS[2], ARGV[1])
                   redis.call('SET', KEYS[5], ARGV[3], 'PX', ARGV[4])
                   redis.call('SADD', KEYS[4], ARGV[5])
                   return 1
                 end
                 return 0",
            ),
            // KEYS held, nodekeys of its holder (may be a dummy); ARGV token, hold entry, hold ms,
            // releaser → 1 when the hold was still ours (send its webhook), 0 when the channel or
            // member came back, a newer hold replaced it, or another releaser (a takeover) had it.
            // A released hold stays as `token#releaser` for its TTL, so a release that timed out
            // after Redis ran it gets the same answer when its releaser asks again; `taken` and
            // takeovers do not count it as a hold.
            release: plain(
                "redis.call('SREM', KEYS[2], ARGV[2])
                 local v = redis.call('GET', KEYS[1])
                 local done = ARGV[1] .. '#' .. ARGV[4]
                 if v == ARGV[1] then redis.call('SET', KEYS[1], done, 'PX', ARGV[3]) return 1 end
                 if v == done then return 1 end
                 return 0",
            ),
            // KEYS users, umem, nodekeys, lease; ARGV user, entry, delta → 1 when the user came online
            user_in: fenced(
                "local c = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[3])
                 redis.call('HINCRBY', KEYS[2], ARGV[1], ARGV[3])
                 redis.call('SADD', KEYS[3], ARGV[2])
                 if c == tonumber(ARGV[3]) then return 1 end
                 return 0",
            ),
            // KEYS users, umem; ARGV user → 1 when the user went offline
            user_out: plain(
                "local mine = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
                 if mine <= 0 then return 0 end
                 if mine == 1 then redis.call('HDEL', KEYS[2], ARGV[1]) else redis.call('HINCRBY', KEYS[2], ARGV[1], -1) end
                 local c = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
                 if c <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) return 1 end
                 return 0",
            ),
            // KEYS conns, nodekeys, lease; ARGV incarnation, limit (-1 none), entry, delta → 1 admitted
            connect: fenced(
                "local limit = tonumber(ARGV[2])
                 if limit >= 0 and sum(KEYS[1]) + tonumber(ARGV[4]) > limit then return 0 end
                 redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[4])
                 redis.call('SADD', KEYS[2], ARGV[3])
                 return 1",
            ),
            // KEYS conns; ARGV incarnation
            disconnect: plain(
                "local c = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
                 if c <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
                 return c",
            ),
            // KEYS chan, channels, held vacate, the cleaner's nodekeys; ARGV incarnation, channel,
            // hold token, hold ms, hold entry → 1 when the channel is now vacated (its webhook
            // held, and listed with the cleaner so a node cleaning up after it takes it over)
            clean_channel: plain(
                "local mine = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
                 redis.call('HDEL', KEYS[1], ARGV[1])
                 if mine <= 0 then return 0 end
                 if sum(KEYS[1]) == 0 then
                   redis.call('SREM', KEYS[2], ARGV[2])
                   redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
                   redis.call('SADD', KEYS[4], ARGV[5])
                   return 1
                 end
                 return 0",
            ),
            // KEYS totals, info (may be a dummy), incarnation hash, the cleaner's nodekeys; ARGV
            // prefix of held keys ('' for none; they share the app's hash tag), hold token, hold
            // ms, prefix of the hold entries listed in the cleaner's nodekeys → ids whose total
            // fell to zero
            clean_hash: plain(
                "local gone = {}
                 local kv = redis.call('HGETALL', KEYS[3])
                 for i = 1, #kv, 2 do
                   local c = redis.call('HINCRBY', KEYS[1], kv[i], -tonumber(kv[i + 1]))
                   if c <= 0 then
                     redis.call('HDEL', KEYS[1], kv[i])
                     redis.call('HDEL', KEYS[2], kv[i])
                     if ARGV[1] ~= '' then
                       redis.call('SET', ARGV[1] .. kv[i], ARGV[2], 'PX', ARGV[3])
                       redis.call('SADD', KEYS[4], ARGV[4] .. kv[i])
                     end
                     table.insert(gone, kv[i])
                   end
                 end
                 redis.call('DEL', KEYS[3])
                 return gone",
            ),
            // KEYS lease, nodes; ARGV incarnation, ttl_ms, now_ms → 0 when the lease is gone (fenced)
            renew: plain(
                "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
                 redis.call('PEXPIRE', KEYS[1], ARGV[2])
                 redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[2]), ARGV[1])
                 return 1",
            ),
            // KEYS nodes, lease of the stale incarnation, its claim; ARGV incarnation, now_ms,
            // hold_ms, claimer → 1 for the one claimer. The incarnation stays in `nodes` (its
            // score moved past the claim's expiry) until its clean-up ends, so a claimer that
            // dies half-way leaves it for another node to find.
            claim: plain(
                "local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
                 if not s then return 0 end
                 if tonumber(s) > tonumber(ARGV[2]) then return 0 end
                 if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
                 if not redis.call('SET', KEYS[3], ARGV[4], 'NX', 'PX', ARGV[3]) then return 0 end
                 redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
                 return 1",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_keys_carry_the_app_hash_tag() {
        for e in [
            Entry::Channel("1", "presence-a"),
            Entry::Presence("1", "b"),
            Entry::Users("2"),
            Entry::Conns("3"),
            Entry::HeldVacate("1", "c"),
            Entry::HeldRemove("1", "presence-a", "u\nwith a newline"),
            Entry::Webhooks,
        ] {
            let encoded = e.encode();
            assert_eq!(Entry::decode(&encoded).map(|d| d.encode()), Some(encoded));
        }
        assert!(Entry::decode("x\n1").is_none());
        let k = Keys::new("herald");
        assert_eq!(k.chan("7", "news"), "herald:{7}:chan:news");
        assert_eq!(k.pmem("7", "presence-a", "pod-1:ab"), "herald:{7}:pmem:presence-a:pod-1:ab");
    }
}
