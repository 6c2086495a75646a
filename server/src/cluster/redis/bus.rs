//! Messages between nodes over Redis pub/sub: channel frames (`{prefix}:bus:{app}:{channel}`,
//! subscribed only while a local socket is in the channel) and control messages every node
//! hears (`{prefix}:control`: terminate a user, a watched user's change). Every message starts
//! with the sender's incarnation id; a node ignores its own.

use axum::extract::ws::Utf8Bytes;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::buslog::{self, LogId};
use super::RedisCluster;
use crate::protocol::CloseReason;

/// The first line of a message: the sending incarnation, then `@incarnation` when the message
/// is not for that incarnation's sockets (a clean-up's news about them, see
/// [`crate::cluster::Origin::Reaped`]).
pub fn sender(incarnation: &str, except: Option<&str>) -> String {
    match except.filter(|e| e.starts_with('@')) {
        Some(node) => format!("{incarnation} {node}"),
        None => incarnation.to_owned(),
    }
}

/// A channel frame: `sender \n except \n frame`.
pub fn encode(incarnation: &str, except: Option<&str>, frame: &str) -> String {
    format!("{incarnation}\n{}\n{frame}", except.unwrap_or_default())
}

/// Close every socket of a user: `incarnation \n t \n app \n user`.
pub fn terminate(incarnation: &str, app_id: &str, user_id: &str) -> String {
    format!("{incarnation}\nt\n{app_id}\n{user_id}")
}

/// Deliver to a user's watchers: `incarnation \n w \n app \n user \n frame`.
pub fn watchers(incarnation: &str, app_id: &str, user_id: &str, frame: &str) -> String {
    format!("{incarnation}\nw\n{app_id}\n{user_id}\n{frame}")
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// How often each node publishes a tick through the bus log: every node's checkpoint advances
/// with it even when no message is meant for it.
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// A tick: `incarnation \n k`. Every node hears it; it carries nothing but its log id.
pub fn tick(incarnation: &str) -> String {
    format!("{incarnation}\nk")
}

/// Where a node stands in the bus log.
#[derive(Debug, Default)]
struct Position {
    /// Every message meant for this node with an id up to it was received (or made up for).
    checkpoint: LogId,
    /// Messages up to it were delivered from the log: the same ones arriving by pub/sub after a
    /// reconnect are repeats.
    replayed: LogId,
}

/// Delivers what other nodes publish, until the cluster stops; makes up for what a broken
/// pub/sub connection missed from the bus log ([`buslog`]).
pub async fn run(cluster: RedisCluster, mut rx: UnboundedReceiver<PushInfo>, checkpoint: LogId) {
    let stopped = cluster.inner.stopped.clone();
    let mut at = Position { checkpoint, replayed: checkpoint };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let push = tokio::select! {
            _ = stopped.cancelled() => return,
            _ = cluster.inner.resubscribed.notified() => {
                catch_up(&cluster, &mut at).await;
                continue;
            }
            _ = tick.tick() => {
                cluster.tick().await;
                continue;
            }
            push = rx.recv() => match push {
                Some(p) => p,
                None => return,
            },
        };
        match push.kind {
            PushKind::Message => {}
            // The connection broke: it reconnects and subscribes again by itself; what was
            // published in between is in the log.
            PushKind::Disconnection => {
                catch_up(&cluster, &mut at).await;
                continue;
            }
            _ => continue,
        }
        let (Some(channel), Some(payload)) =
            (push.data.first().and_then(text), push.data.get(1).and_then(text))
        else {
            continue;
        };
        match buslog::split(&payload) {
            Some((id, message)) => {
                if id <= at.replayed {
                    continue;
                }
                at.checkpoint = at.checkpoint.max(id);
                handle(&cluster, &channel, message);
            }
            // A node of an earlier version publishes without the log.
            None => handle(&cluster, &channel, &payload),
        }
    }
}

/// Delivers the logged messages after the checkpoint, read on the pub/sub connection once it
/// answers again (it subscribed anew before that). Retries until Redis answers or the cluster
/// stops.
async fn catch_up(cluster: &RedisCluster, at: &mut Position) {
    let log = cluster.inner.keys.bus_log();
    let mut backoff = std::time::Duration::from_millis(50);
    loop {
        let mut conn = cluster.subscriber();
        let attempt = async {
            let tail = buslog::tail(&mut conn, &log).await?;
            // A log older than the checkpoint is a new one: Redis lost its data; everything
            // in it was published since.
            let from = if tail.last < at.checkpoint { LogId::default() } else { at.checkpoint };
            let missed = buslog::read(&mut conn, &log, from, tail.last).await?;
            redis::RedisResult::Ok((tail, from, missed))
        };
        match attempt.await {
            Ok((tail, from, missed)) => {
                let lost = tail.trimmed > from;
                if lost {
                    cluster.inner.metrics.bus_gaps.inc();
                    tracing::warn!(
                        checkpoint = %from,
                        trimmed = %tail.trimmed,
                        "pub/sub was cut off longer than the bus log keeps messages: asking this node's sockets to reconnect"
                    );
                    cluster.inner.registry.close_every_subscriber(CloseReason::Reconnect);
                }
                let mut count = 0u64;
                for (id, channel, message) in missed {
                    if !lost && id > at.replayed.max(from) {
                        count += 1;
                        handle(cluster, &channel, &message);
                    }
                }
                if count > 0 {
                    cluster.inner.metrics.bus_replayed.inc_by(count);
                    tracing::info!(count, from = %from, upto = %tail.last, "delivered messages missed on pub/sub from the bus log");
                }
                at.checkpoint = tail.last;
                at.replayed = tail.last;
                return;
            }
            Err(e) => tracing::debug!(error = %e, "bus log not readable yet"),
        }
        tokio::select! {
            _ = cluster.inner.stopped.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
    }
}

fn handle(cluster: &RedisCluster, channel: &str, payload: &str) {
    let Some((sender, rest)) = payload.split_once('\n') else { return };
    let (origin, not_for) = match sender.split_once(" @") {
        Some((origin, node)) => (origin, Some(node)),
        None => (sender, None),
    };
    if cluster.is_own(origin) || not_for.is_some_and(|node| cluster.is_own(node)) {
        return;
    }
    let registry = &cluster.inner.registry;
    if let Some(target) = channel.strip_prefix(&cluster.inner.keys.bus_prefix()) {
        let Some((app_id, pusher_channel)) = target.split_once(':') else { return };
        let Some((except, frame)) = rest.split_once('\n') else { return };
        let except = (!except.is_empty()).then_some(except);
        registry.broadcast(app_id, pusher_channel, &Utf8Bytes::from(frame.to_owned()), except);
        return;
    }
    let mut parts = rest.splitn(4, '\n');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("k"), None, None, None) => {}
        (Some("t"), Some(app_id), Some(user_id), None) => {
            registry.close_user(app_id, user_id, CloseReason::Unauthorized);
        }
        (Some("w"), Some(app_id), Some(user_id), Some(frame)) => {
            registry.notify_watchers(app_id, user_id, &Utf8Bytes::from(frame.to_owned()));
        }
        _ => tracing::debug!(channel, "ignored a malformed cluster message"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_with_newlines_survive_the_encoding() {
        let encoded = encode("pod-1:ab", Some("1.2"), "{\"data\":\n1}");
        let (origin, rest) = encoded.split_once('\n').unwrap();
        let (except, frame) = rest.split_once('\n').unwrap();
        assert_eq!((origin, except, frame), ("pod-1:ab", "1.2", "{\"data\":\n1}"));
        let w = watchers("m", "1", "u", "{\n}");
        let (_, rest) = w.split_once('\n').unwrap();
        assert_eq!(rest.splitn(4, '\n').collect::<Vec<_>>(), ["w", "1", "u", "{\n}"]);
    }
}
