//! The bus log: what closes the gap a broken pub/sub connection leaves. Every message a node
//! publishes (channel frames and control messages) is appended to a Redis stream by the same
//! script that publishes it, and the published message starts with its stream id. Redis runs
//! scripts one at a time, so ids rise in the order subscribers receive messages. One Redis has
//! one log; a Redis Cluster one per bucket of an app's channels and one for the control channel,
//! each in the slot of the channels it logs ([`super::logs`] keeps a position in each).
//!
//! A node keeps a *checkpoint*: a log id up to which it has received every message meant for
//! it (the id of the last message it received, or the log's last id read on the pub/sub
//! connection itself, whose reply comes after every message Redis pushed before it). When the
//! connection breaks (or a resync subscribes anew), the node reads the log after the checkpoint
//! and delivers what it missed, then drops pushes it has already delivered from the log: every
//! message published while the node was cut off arrives once. The log keeps [`WINDOW`]; a gap
//! longer than that is reported and the node's sockets are asked to reconnect, so no loss is
//! silent. See `docs/cluster.md`.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Script, Value};

/// How long the log keeps a message: the longest pub/sub gap a node can make up for.
pub const WINDOW: Duration = Duration::from_secs(30);

/// Entries read per `XRANGE` while catching up.
const PAGE: usize = 1000;

/// A stream id, `ms-seq`; ordered as Redis orders them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogId(u64, u64);

impl LogId {
    pub fn parse(s: &str) -> Option<LogId> {
        let (ms, seq) = s.split_once('-')?;
        Some(LogId(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// KEYS log; ARGV pub/sub channel, message, window ms, publish command (`PUBLISH`, or
/// `SPUBLISH` for a shard channel in the log's slot) → the message's log id. The message is
/// published as `id \n message`; the log keeps `window` ms (trimmed approximately, so a little
/// more).
pub const PUBLISH: &str = "local id = redis.call('XADD', KEYS[1], '*', 'c', ARGV[1], 'm', ARGV[2])
         local ms = tonumber(string.match(id, '^(%d+)'))
         redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%d', ms - tonumber(ARGV[3])))
         redis.call(ARGV[4], ARGV[1], id .. '\\n' .. ARGV[2])
         return id";

pub fn publish_script() -> Script {
    Script::new(PUBLISH)
}

/// Splits a received message into its log id and the message published.
pub fn split(payload: &str) -> Option<(LogId, &str)> {
    let (id, rest) = payload.split_once('\n')?;
    Some((LogId::parse(id)?, rest))
}

/// What the log says about itself.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tail {
    /// The id of the last message ever added (`0-0` for no log).
    pub last: LogId,
    /// The highest id trimmed away: messages up to it can no longer be read.
    pub trimmed: LogId,
}

/// Reads the log's tail on `conn`. A log that does not exist (nothing published since Redis
/// started empty) is an empty tail.
pub async fn tail(conn: &mut impl ConnectionLike, log: &str) -> redis::RedisResult<Tail> {
    let reply: redis::RedisResult<Value> = redis::cmd("XINFO").arg("STREAM").arg(log).query_async(conn).await;
    let info = match reply {
        Ok(info) => info,
        Err(e) if e.code() == Some("ERR") && e.to_string().contains("no such key") => {
            return Ok(Tail::default())
        }
        Err(e) => return Err(e),
    };
    let field = |name: &str| -> Option<LogId> {
        let text = |v: &Value| match v {
            Value::BulkString(b) => std::str::from_utf8(b).ok().map(str::to_owned),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        };
        let pairs: Vec<(&Value, &Value)> = match &info {
            Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
            Value::Array(a) => a.chunks(2).filter_map(|c| Some((c.first()?, c.get(1)?))).collect(),
            _ => Vec::new(),
        };
        pairs
            .into_iter()
            .find(|(k, _)| text(k).as_deref() == Some(name))
            .and_then(|(_, v)| LogId::parse(&text(v)?))
    };
    let last = field("last-generated-id").unwrap_or_default();
    // Redis 7 reports what it trimmed; an older one only where the log now starts, so a log
    // that starts after the checkpoint counts as trimmed.
    let trimmed = match field("max-deleted-entry-id") {
        Some(trimmed) => trimmed,
        None => first_entry(&info).map(|first| LogId(first.0, first.1.saturating_sub(1))).unwrap_or_default(),
    };
    Ok(Tail { last, trimmed })
}

fn first_entry(info: &Value) -> Option<LogId> {
    let entry = match info {
        Value::Map(m) => {
            m.iter().find(|(k, _)| matches!(k, Value::BulkString(b) if b == b"first-entry"))?.1.clone()
        }
        _ => return None,
    };
    match entry {
        Value::Array(parts) => match parts.first()? {
            Value::BulkString(b) => LogId::parse(std::str::from_utf8(b).ok()?),
            _ => None,
        },
        _ => None,
    }
}

/// One logged message: its id, pub/sub channel and message.
pub type Logged = (LogId, String, String);

/// Reads the messages after `after` up to `upto`, in order.
pub async fn read(
    conn: &mut impl ConnectionLike,
    log: &str,
    after: LogId,
    upto: LogId,
) -> redis::RedisResult<Vec<Logged>> {
    let mut out = Vec::new();
    let mut from = after;
    loop {
        let page: Value = redis::cmd("XRANGE")
            .arg(log)
            .arg(format!("({from}"))
            .arg(upto.to_string())
            .arg("COUNT")
            .arg(PAGE)
            .query_async(conn)
            .await?;
        let Value::Array(entries) = page else { return Ok(out) };
        let count = entries.len();
        for entry in entries {
            if let Some(logged) = parse_entry(entry) {
                from = logged.0;
                out.push(logged);
            }
        }
        if count < PAGE {
            return Ok(out);
        }
    }
}

fn parse_entry(entry: Value) -> Option<Logged> {
    let Value::Array(mut parts) = entry else { return None };
    let fields = parts.pop()?;
    let id = match parts.pop()? {
        Value::BulkString(b) => LogId::parse(std::str::from_utf8(&b).ok()?)?,
        _ => return None,
    };
    let flat: Vec<Value> = match fields {
        Value::Array(a) => a,
        Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return None,
    };
    let (mut channel, mut message) = (None, None);
    for pair in flat.chunks(2) {
        if let [Value::BulkString(k), Value::BulkString(v)] = pair {
            let v = String::from_utf8(v.clone()).ok()?;
            match k.as_slice() {
                b"c" => channel = Some(v),
                b"m" => message = Some(v),
                _ => {}
            }
        }
    }
    Some((id, channel?, message?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_as_redis_orders_them() {
        let a = LogId::parse("1700000000000-9").unwrap();
        let b = LogId::parse("1700000000000-10").unwrap();
        let c = LogId::parse("1700000000001-0").unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "1700000000000-10");
        assert_eq!(LogId::parse("nope"), None);
        assert_eq!(LogId::parse("1-x"), None);
    }

    #[test]
    fn a_received_message_splits_into_id_and_message() {
        let (id, rest) = split("5-1\npod:1\n\n{\"a\":\n1}").unwrap();
        assert_eq!((id, rest), (LogId(5, 1), "pod:1\n\n{\"a\":\n1}"));
        assert_eq!(split("no id here"), None);
    }
}
