//! Redis key names and the Lua scripts that decide every cluster-wide transition atomically.
//!
//! An *incarnation* is one run of a node: `{node_id}:{random}`. Per-app keys carry the app id
//! in a hash tag (`{app}`); counts are kept per incarnation so a dead incarnation's share can be
//! taken away exactly. See `docs/cluster.md` for the schema and the lease protocol.

use redis::Script;

/// Builds key and pub/sub channel names under a prefix.
///
/// On a Redis Cluster every key a script touches must hash to one slot: an app's keys carry
/// the app in a hash tag (`{app}`), what an incarnation holds is listed per app (`nodekeys`,
/// fenced by a per-app `alive` key), and the node-level keys (leases, the node set, the
/// epoch, webhook journals) share the tag `{@nodes}` (no app id has an `@`). Bus channels
/// spread an app's channels over [`BUS_BUCKETS`] slots, each with its own bus log, so one busy
/// app's traffic spreads over the shards. On one Redis the node-level keys, bus channels and
/// the single bus log keep their untagged names.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// Where node-level keys live: `{prefix}`, or `{prefix}:{@nodes}` on a Redis Cluster.
    node: String,
    /// Whether keys and channels are laid out for a Redis Cluster.
    sharded: bool,
}

/// Bus slots per app on a Redis Cluster.
pub const BUS_BUCKETS: u32 = 16;

/// A stable hash of a channel name (FNV-1a): every node puts a channel in the same bucket.
fn bucket(channel: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in channel.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % BUS_BUCKETS
}

impl Keys {
    pub fn new(prefix: &str, sharded: bool) -> Self {
        let node = if sharded { format!("{prefix}:{{@nodes}}") } else { prefix.to_owned() };
        Keys { prefix: prefix.to_owned(), node, sharded }
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
    /// STRING: the app's member sequence, the number of its latest presence change (`member_added` /
    /// `member_removed`), expiring a minute after it (see [`NEXT_SEQ`]).
    pub fn pseq(&self, app: &str) -> String {
        format!("{}:{{{app}}}:pseq", self.prefix)
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
    /// SET of what an incarnation holds in one app (entries from [`Entry`]), walked by its
    /// cleanup.
    pub fn nodekeys(&self, app: &str, incarnation: &str) -> String {
        format!("{}:{{{app}}}:nodekeys:{incarnation}", self.prefix)
    }
    /// STRING with a TTL no longer than the incarnation's lease: the fence of its scripts in one
    /// app. The node that cleans up after the incarnation deletes it first.
    pub fn alive(&self, app: &str, incarnation: &str) -> String {
        format!("{}:{{{app}}}:alive:{incarnation}", self.prefix)
    }
    /// SET of the apps an incarnation wrote to: where its cleanup looks.
    pub fn apps(&self, incarnation: &str) -> String {
        format!("{}:apps:{incarnation}", self.node)
    }
    /// STRING with a TTL: the incarnation's lease.
    pub fn lease(&self, incarnation: &str) -> String {
        format!("{}:lease:{incarnation}", self.node)
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
        format!("{}:hooks:{incarnation}", self.node)
    }
    /// STRING with a TTL: who is cleaning up after a dead incarnation. While it lives no other
    /// node claims that incarnation; if the claimer dies, it expires and another node finishes.
    pub fn claim(&self, incarnation: &str) -> String {
        format!("{}:claim:{incarnation}", self.node)
    }
    /// ZSET incarnation → lease expiry (ms): how live nodes find stale ones without scanning keys.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.node)
    }
    /// STRING: a random value set once per Redis dataset; a different one means Redis lost
    /// its data (restarted empty) rather than this node being declared dead.
    pub fn epoch(&self) -> String {
        format!("{}:epoch", self.node)
    }
    /// Pub/sub channel of one Pusher channel: `{prefix}:bus:{app}:{channel}`, or on a Redis
    /// Cluster `{prefix}:bus:{{app}#{bucket}}:{channel}` (a shard channel).
    pub fn bus(&self, app: &str, ch: &str) -> String {
        if self.sharded {
            format!("{}:bus:{{{app}#{}}}:{ch}", self.prefix, bucket(ch))
        } else {
            format!("{}:bus:{app}:{ch}", self.prefix)
        }
    }
    /// The app and Pusher channel of a bus channel, and the bus log its messages are in; `None`
    /// for another pub/sub channel (the control channel).
    pub fn parse_bus<'a>(&self, name: &'a str) -> Option<(&'a str, &'a str, String)> {
        let rest = name.strip_prefix(&self.prefix)?.strip_prefix(":bus:")?;
        if self.sharded {
            let (tag, channel) = rest.strip_prefix('{')?.split_once("}:")?;
            let (app, _) = tag.rsplit_once('#')?;
            Some((app, channel, format!("{}:{{{tag}}}:buslog", self.prefix)))
        } else {
            let (app, channel) = rest.split_once(':')?;
            Some((app, channel, self.control_log()))
        }
    }
    /// The bus log of a Pusher channel's messages (see [`super::buslog`]): the one log on one
    /// Redis; on a Redis Cluster one per bucket of an app, in the bucket's slot.
    pub fn bus_log(&self, app: &str, ch: &str) -> String {
        if self.sharded {
            format!("{}:{{{app}#{}}}:buslog", self.prefix, bucket(ch))
        } else {
            self.control_log()
        }
    }
    /// STREAM of the control channel's messages (and, on one Redis, of every bus message).
    pub fn control_log(&self) -> String {
        format!("{}:buslog", self.node)
    }
    /// Pub/sub channel every node listens to (terminate, watchlist changes).
    pub fn control(&self) -> String {
        format!("{}:control", self.node)
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
            _ => None,
        }
    }
}

/// `sum(k)`: a hash's values added up. `taken(k, cutoff, me)`, for a return: what became of the
/// departure held at `k` — 0 none (or released already), 1 it was within its window (deleted: a
/// flap, neither webhook is sent), 2 its window began before `cutoff` and nobody has released it
/// yet (its holder stalled or died): the departure stands, and this return releases it (marked
/// `token#return@me`, which no releaser's own mark equals), so the returning node sends its
/// webhook before the return's.
const SUM: &str = "local function sum(k) local t = 0 for _, v in ipairs(redis.call('HVALS', k)) do t = t + tonumber(v) end return t end
local function taken(k, cutoff, me)
  local h = redis.call('GET', k)
  if not h or string.find(h, '#', 1, true) then return 0 end
  local since = tonumber(string.match(h, '@(%d+)$') or '')
  if since and since < tonumber(cutoff) then redis.call('SET', k, h .. '#return@' .. me, 'KEEPTTL') return 2 end
  redis.call('DEL', k)
  return 1
end
";
const FENCE: &str =
    "if redis.call('EXISTS', KEYS[#KEYS]) == 0 then return redis.error_reply('FENCED lease lost') end\n";

/// The four count-changing steps of a join and a leave, as Lua functions over their own `K`
/// (keys) and `A` (arguments), so one script can run two of them: a presence subscribe or
/// unsubscribe is then one round trip.
const JOIN_CHANNEL: &str = "local function join_channel(K, A)
                 local before = sum(K[1])
                 redis.call('HINCRBY', K[1], A[1], A[4])
                 redis.call('SADD', K[2], A[2])
                 redis.call('SADD', K[3], A[3])
                 local returned = 0
                 if before == 0 then returned = taken(K[4], A[5], A[1]) end
                 return {before, before + tonumber(A[4]), returned}
                 end
";
const LEAVE_CHANNEL: &str = "local function leave_channel(K, A)
                 local mine = tonumber(redis.call('HGET', K[1], A[1]) or '0')
                 if mine <= 0 then return -1 end
                 if mine == 1 then
                   redis.call('HDEL', K[1], A[1])
                   redis.call('SREM', K[3], A[3])
                 else
                   redis.call('HINCRBY', K[1], A[1], -1)
                 end
                 local total = sum(K[1])
                 if total == 0 then
                   redis.call('SREM', K[2], A[2])
                   redis.call('SET', K[4], A[4], 'PX', A[5])
                   redis.call('SADD', K[3], A[6])
                 end
                 return total
                 end
";
const PRESENCE_JOIN: &str = "local function presence_join(K, A)
                 local c = tonumber(redis.call('HGET', K[1], A[1]) or '0')
                 if c == 0 and redis.call('HLEN', K[1]) >= tonumber(A[3]) then return -1 end
                 redis.call('HINCRBY', K[1], A[1], A[5])
                 redis.call('HINCRBY', K[3], A[1], A[5])
                 if c == 0 then redis.call('HSET', K[2], A[1], A[2]) end
                 redis.call('SADD', K[4], A[4])
                 if c == 0 then
                   local t = taken(K[5], A[6], A[7])
                   if t == 1 then return 2 end
                   if t == 2 then return 3 end
                   return 1
                 end
                 return 0
                 end
";
/// The number of an app's next presence change: above the last one, and at least the server's
/// clock in µs, so it keeps rising when the key has expired or Redis restarted empty (and after a
/// failover, whose new primary's clock is past the changes it lost). A member list read by the
/// same script as the sequence reflects exactly the changes numbered up to it.
const NEXT_SEQ: &str = "local function next_seq(k)
                 local t = redis.call('TIME')
                 local n = tonumber(t[1]) * 1000000 + tonumber(t[2])
                 local last = tonumber(redis.call('GET', k) or '0')
                 if n <= last then n = last + 1 end
                 redis.call('SET', k, string.format('%d', n), 'PX', 60000)
                 return n
                 end
";
/// `presence_leave`: K pres, pinfo, pmem, nodekeys, held remove; A user, entry, hold token, hold
/// ms, hold entry → 1 when the member is gone (its webhook held and listed in nodekeys).
const PRESENCE_LEAVE: &str = "local function presence_leave(K, A)
                 local mine = tonumber(redis.call('HGET', K[3], A[1]) or '0')
                 if mine <= 0 then return 0 end
                 if mine == 1 then redis.call('HDEL', K[3], A[1]) else redis.call('HINCRBY', K[3], A[1], -1) end
                 if redis.call('EXISTS', K[3]) == 0 then redis.call('SREM', K[4], A[2]) end
                 local c = redis.call('HINCRBY', K[1], A[1], -1)
                 if c <= 0 then
                   redis.call('HDEL', K[1], A[1])
                   redis.call('HDEL', K[2], A[1])
                   redis.call('SET', K[5], A[3], 'PX', A[4])
                   redis.call('SADD', K[4], A[5])
                   return 1
                 end
                 return 0
                 end
";

/// The scripts, loaded once.
pub struct Scripts {
    pub join_channel: Script,
    pub leave_channel: Script,
    pub presence_join: Script,
    pub presence_join_channel: Script,
    pub presence_leave_channel: Script,
    pub user_in: Script,
    pub user_out: Script,
    pub connect: Script,
    pub disconnect: Script,
    pub clean_channel: Script,
    pub clean_hash: Script,
    pub release: Script,
    pub renew: Script,
    pub claim: Script,
    pub touch_app: Script,
}

impl Scripts {
    /// Every script, for loading ahead of use.
    pub fn all(&self) -> [&Script; 15] {
        [
            &self.join_channel,
            &self.leave_channel,
            &self.presence_join,
            &self.presence_join_channel,
            &self.presence_leave_channel,
            &self.user_in,
            &self.user_out,
            &self.connect,
            &self.disconnect,
            &self.clean_channel,
            &self.clean_hash,
            &self.release,
            &self.renew,
            &self.claim,
            &self.touch_app,
        ]
    }

    pub fn new() -> Self {
        let fenced = |body: &str| Script::new(&format!("{SUM}{FENCE}{body}"));
        let plain = |body: &str| Script::new(&format!("{SUM}{body}"));
        Scripts {
            // KEYS chan, channels, nodekeys, held vacate, alive; ARGV incarnation, channel, entry,
            // delta, window cutoff (unix ms) → {before, after, 1 when the channel came back within
            // its vacate window, 2 when its vacate's window had ended unsent (send it now)}
            join_channel: fenced(&format!("{JOIN_CHANNEL}return join_channel(KEYS, ARGV)")),
            // KEYS chan, channels, nodekeys, held vacate; ARGV incarnation, channel, entry, hold
            // token, hold ms, hold entry → total after (0: vacated, its webhook held and listed in
            // nodekeys, so a node that cleans up after this one takes it over), -1 if not ours
            leave_channel: plain(&format!("{LEAVE_CHANNEL}return leave_channel(KEYS, ARGV)")),
            // KEYS pres, pinfo, pmem, nodekeys, held remove, alive; ARGV user, info, max, entry,
            // delta, window cutoff (unix ms), incarnation → 1 member added, 2 added back within
            // its removal window, 3 added after its removal's window ended unsent (send that
            // first), 0 already a member, -1 channel full
            presence_join: fenced(&format!("{PRESENCE_JOIN}return presence_join(KEYS, ARGV)")),
            // A presence subscribe: `presence_join`, then (unless the channel is full)
            // `join_channel`, then the member list as the joining socket is to see it. KEYS pres,
            // pinfo, pmem, nodekeys, held remove, chan, channels, held vacate, pseq, alive; ARGV
            // user, info, max, presence entry, delta, window cutoff, incarnation, channel,
            // channel entry →
            // {presence_join's answer, before, after, returned, the member sequence (this
            // member's when it was added), the members as user, info, user, info…}
            presence_join_channel: fenced(&format!(
                "{PRESENCE_JOIN}{JOIN_CHANNEL}{NEXT_SEQ}
                 local member = presence_join(KEYS, ARGV)
                 if member < 0 then return {{member, 0, 0, 0, 0, {{}}}} end
                 local c = join_channel({{KEYS[6], KEYS[7], KEYS[4], KEYS[8]}}, {{ARGV[7], ARGV[8], ARGV[9], ARGV[5], ARGV[6]}})
                 local seq
                 if member > 0 then seq = next_seq(KEYS[9]) else seq = tonumber(redis.call('GET', KEYS[9]) or '0') end
                 return {{member, c[1], c[2], c[3], seq, redis.call('HGETALL', KEYS[2])}}"
            )),
            // A presence unsubscribe: `presence_leave`, then `leave_channel`. KEYS pres, pinfo,
            // pmem, nodekeys, held remove, chan, channels, held vacate, pseq; ARGV user, presence
            // entry, member hold token, hold ms, member hold entry, incarnation, channel, channel
            // entry, vacate hold token, vacate hold entry → {presence_leave's answer,
            // leave_channel's, the removal's member sequence (0 when the member stays)}
            presence_leave_channel: plain(&format!(
                "{PRESENCE_LEAVE}{LEAVE_CHANNEL}{NEXT_SEQ}
                 local gone = presence_leave(KEYS, ARGV)
                 local total = leave_channel({{KEYS[6], KEYS[7], KEYS[4], KEYS[8]}}, {{ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[4], ARGV[10]}})
                 local seq = 0
                 if gone == 1 then seq = next_seq(KEYS[9]) end
                 return {{gone, total, seq}}"
            )),
            // KEYS held, nodekeys of its holder (may be a dummy); ARGV token, hold entry, hold ms,
            // releaser → 1 when the hold was still ours (send its webhook), 0 when the channel or
            // member came back, a newer hold replaced it, or another releaser (a takeover) had it.
            // A released hold stays as `token#releaser` for its TTL, so a release that timed out
            // after Redis ran it gets the same answer when its releaser asks again; `taken` and
            // takeovers do not count it as a hold. The holder's listing is one entry per channel
            // or member, so a newer hold (a flap, then a real departure on the same node) keeps
            // it: unlisting it with the older one lost the newer if the node then died. When the
            // newer hold is another node's, the entry left behind only makes a clean-up after
            // this node race that node to release it, and one release wins.
            release: plain(
                "local v = redis.call('GET', KEYS[1])
                 local done = ARGV[1] .. '#' .. ARGV[4]
                 if v and v ~= ARGV[1] and v ~= done and not string.find(v, '#', 1, true) then return 0 end
                 redis.call('SREM', KEYS[2], ARGV[2])
                 if v == ARGV[1] then redis.call('SET', KEYS[1], done, 'PX', ARGV[3]) return 1 end
                 if v == done then return 1 end
                 return 0",
            ),
            // KEYS users, umem, nodekeys, alive; ARGV user, entry, delta → 1 when the user came online
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
            // KEYS conns, nodekeys, alive; ARGV incarnation, limit (-1 none), entry, delta → 1 admitted
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
            // KEYS lease, apps; ARGV app → what is left of the lease (ms), after listing the app
            // with the incarnation; fenced when the lease is gone. The caller then sets the
            // app's `alive` key for no longer than that.
            touch_app: plain(
                "local left = redis.call('PTTL', KEYS[1])
                 if left <= 0 then return redis.error_reply('FENCED lease lost') end
                 redis.call('SADD', KEYS[2], ARGV[1])
                 return left",
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
        ] {
            let encoded = e.encode();
            assert_eq!(Entry::decode(&encoded).map(|d| d.encode()), Some(encoded));
        }
        assert!(Entry::decode("x\n1").is_none());
        let k = Keys::new("herald", false);
        assert_eq!(k.chan("7", "news"), "herald:{7}:chan:news");
        assert_eq!(k.pmem("7", "presence-a", "pod-1:ab"), "herald:{7}:pmem:presence-a:pod-1:ab");
        assert_eq!(k.nodekeys("7", "pod-1:ab"), "herald:{7}:nodekeys:pod-1:ab");
        assert_eq!(k.lease("pod-1:ab"), "herald:lease:pod-1:ab");
        assert_eq!(k.parse_bus(&k.bus("7", "a:b")), Some(("7", "a:b", "herald:buslog".to_owned())));
        assert_eq!(k.parse_bus(&k.control()), None);
    }

    /// The slot Redis Cluster puts a key in is decided by its first `{…}`: what one script
    /// touches must agree on it.
    fn tag(key: &str) -> &str {
        let open = key.find('{').expect("a hash tag");
        let close = key[open..].find('}').expect("a closed hash tag");
        &key[open + 1..open + close]
    }

    #[test]
    fn on_a_redis_cluster_each_script_touches_one_slot_and_an_apps_traffic_spreads() {
        let k = Keys::new("herald", true);
        let (app, me) = ("app-1", "pod-1:ab");
        for key in [
            k.chan(app, "c"),
            k.channels(app),
            k.pres(app, "presence-c"),
            k.pmem(app, "presence-c", me),
            k.nodekeys(app, me),
            k.alive(app, me),
            k.held_remove(app, "presence-c", "u"),
            k.conns(app),
            k.pseq(app),
            k.umem(app, me),
        ] {
            assert_eq!(tag(&key), app, "{key}");
        }
        for key in [k.lease(me), k.nodes(), k.claim(me), k.apps(me), k.epoch(), k.hooks(me), k.control()] {
            assert_eq!(tag(&key), "@nodes", "{key}");
        }
        assert_eq!(tag(&k.control_log()), tag(&k.control()));
        // A bus channel shares its log's slot (one script appends and publishes) ...
        let bus = k.bus(app, "private-x");
        let (parsed_app, parsed_channel, log) = k.parse_bus(&bus).unwrap();
        assert_eq!((parsed_app, parsed_channel), (app, "private-x"));
        assert_eq!(log, k.bus_log(app, "private-x"));
        assert_eq!(tag(&log), tag(&k.bus(app, "private-x")));
        // ... and an app's channels fall into many buckets.
        let buckets: std::collections::HashSet<String> =
            (0..200).map(|i| tag(&k.bus(app, &format!("ch-{i}"))).to_owned()).collect();
        assert_eq!(buckets.len(), BUS_BUCKETS as usize);
    }
}
