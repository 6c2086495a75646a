//! Messages between nodes over Redis pub/sub: channel frames (one bus channel per Pusher channel,
//! [`super::keys::Keys::bus`], subscribed only while a local socket is in the channel; sharded
//! pub/sub on a Redis Cluster) and control messages every node hears (`…:control`: terminate a
//! user, a watched user's change). Every message starts with the sender's incarnation id; a node
//! ignores its own.

use axum::extract::ws::Utf8Bytes;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::buslog::{self, LogId};
use super::conn::Conn;
use super::{FanOutError, RedisCluster};
use crate::cluster::{MemberSeq, Outgoing};
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

/// A channel frame: `sender \n except \n frame`; a member event's except line ends with
/// `~seq`, its number in the app's member sequence (a socket id has no `~`; a node that does not
/// know the suffix excludes no socket of its own, as none is the sender's).
pub fn encode(incarnation: &str, except: Option<&str>, seq: MemberSeq, frame: &str) -> String {
    let except = except.unwrap_or_default();
    match seq {
        0 => format!("{incarnation}\n{except}\n{frame}"),
        seq => format!("{incarnation}\n{except}~{seq}\n{frame}"),
    }
}

/// The except line of a channel frame: the socket left out, and the member sequence number.
fn except_line(line: &str) -> (Option<&str>, MemberSeq) {
    let (except, seq) = match line.split_once('~') {
        Some((except, seq)) => (except, seq.parse().unwrap_or(0)),
        None => (line, 0),
    };
    ((!except.is_empty()).then_some(except), seq)
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

impl RedisCluster {
    pub(super) async fn subscribe_bus(&self, app_id: &str, channel: &str) {
        let log = self.inner.keys.bus_log(app_id, channel);
        let first = self.inner.logs.listen(&log);
        if self.offline() {
            return; // the resync subscribes to every local channel
        }
        let name = self.inner.keys.bus(app_id, channel);
        // A pub/sub connection that just dropped reconnects by itself (and the bus log makes up
        // for what it missed): try again on the new one before degrading the whole node.
        for attempt in 0..3 {
            let mut subscriber = self.subscriber();
            match subscriber.listen(&name).await {
                Ok(()) if first => {
                    // The log's tail read after subscribing: where this node starts in it.
                    match buslog::tail(&mut subscriber, &log).await {
                        Ok(tail) => self.inner.logs.start(&log, tail.last),
                        Err(e) => self.degrade("read the bus log", &e),
                    }
                    return;
                }
                Ok(()) => return,
                Err(e) if attempt < 2 && (e.is_connection_dropped() || e.is_io_error()) => {
                    tracing::debug!(error = %e, "subscribing again on a new pub/sub connection");
                }
                Err(e) => {
                    self.degrade("subscribe", &e);
                    return;
                }
            }
        }
    }

    pub(super) async fn unsubscribe_bus(&self, app_id: &str, channel: &str) {
        self.inner.logs.unlisten(&self.inner.keys.bus_log(app_id, channel));
        if self.offline() {
            return;
        }
        let name = self.inner.keys.bus(app_id, channel);
        if let Err(e) = self.subscriber().unlisten(&name).await {
            self.degrade("unsubscribe", &e);
        }
    }

    /// Sends a frame to the other nodes' subscribers of a channel. A publish that timed out is
    /// not counted as sent: Redis may deliver it when it answers again (a stall), but a primary
    /// killed meanwhile loses it, so the caller hears of a failure and may retry (at least once).
    pub(super) async fn broadcast_remote(
        &self,
        app_id: &str,
        channel: &str,
        frame: &str,
        except: Option<&str>,
        seq: MemberSeq,
    ) -> Result<(), FanOutError> {
        let sender = sender(&self.incarnation(), except);
        let except = except.filter(|e| !e.starts_with('@'));
        let payload = encode(&sender, except, seq, frame);
        let (bus, log) = (self.inner.keys.bus(app_id, channel), self.inner.keys.bus_log(app_id, channel));
        match self.publish(&bus, &log, &payload).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.degrade("publish", &e);
                Err(FanOutError::Unreachable(e.to_string()))
            }
        }
    }

    /// [`RedisCluster::broadcast_remote`] for several frames, in order: one pipeline per bus log
    /// (one on one Redis; on a Redis Cluster one per slot, since a pipeline may not cross
    /// slots), the pipelines sent at once — one round trip. Each script goes whole with `EVAL`:
    /// a pipeline cannot load a script a new primary lacks and retry only what failed.
    pub(super) async fn broadcast_remote_all(
        &self,
        app_id: &str,
        frames: &[Outgoing],
    ) -> Result<(), FanOutError> {
        let me = self.incarnation();
        let live = self.live();
        let command = live.conn.publish_command();
        let keys = &self.inner.keys;
        let mut pipes: Vec<(String, redis::Pipeline)> = Vec::new();
        for out in frames {
            let log = keys.bus_log(app_id, &out.channel);
            let except = out.except.as_deref();
            let sender = sender(&me, except);
            let payload = encode(&sender, except.filter(|e| !e.starts_with('@')), 0, out.frame.as_str());
            let at = match pipes.iter().position(|(l, _)| *l == log) {
                Some(at) => at,
                None => {
                    pipes.push((log.clone(), redis::pipe()));
                    pipes.len() - 1
                }
            };
            pipes[at]
                .1
                .cmd("EVAL")
                .arg(buslog::PUBLISH)
                .arg(1)
                .arg(&log)
                .arg(keys.bus(app_id, &out.channel))
                .arg(payload)
                .arg(buslog::WINDOW.as_millis() as u64)
                .arg(command)
                .ignore();
        }
        let sent = futures_util::future::try_join_all(pipes.iter().map(|(_, pipe)| {
            let mut live = live.clone();
            async move { pipe.query_async::<()>(&mut live).await }
        }))
        .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) => {
                self.degrade("publish", &e);
                Err(FanOutError::Unreachable(e.to_string()))
            }
        }
    }

    pub(super) async fn control(&self, message: String) {
        let k = &self.inner.keys;
        if let Err(e) = self.publish(&k.control(), &k.control_log(), &message).await {
            self.degrade("publish control", &e);
        }
    }

    /// Publishes a message on a bus channel and appends it to the channel's log, in one script:
    /// a node whose pub/sub connection broke meanwhile finds it in the log.
    async fn publish(&self, channel: &str, log: &str, message: &str) -> redis::RedisResult<()> {
        let mut live = self.live();
        let command = live.conn.publish_command();
        let _id: String = self
            .inner
            .publish
            .key(log)
            .arg(channel)
            .arg(message)
            .arg(buslog::WINDOW.as_millis() as u64)
            .arg(command)
            .invoke_async(&mut live)
            .await?;
        Ok(())
    }
}

/// How long after the last confirmation of a resubscription the logs are read again.
const RESUBSCRIBE_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// How long after a connection broke the logs are read again even if no resubscription was
/// confirmed.
const RESUBSCRIBE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// How often each node reads the tails of its bus logs on its pub/sub connection: its
/// checkpoints advance even when no message is meant for it.
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Delivers what other nodes publish, until the cluster stops; makes up for what a broken
/// pub/sub connection missed from the bus logs ([`buslog`]).
pub async fn run(cluster: RedisCluster, mut rx: UnboundedReceiver<PushInfo>) {
    let stopped = cluster.inner.stopped.clone();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // After a connection broke, the client subscribes again by itself (on a Redis Cluster, on
    // whichever primary owns each channel's slot by then). Until Redis confirms, a message can
    // still be missed: checkpoints stay put, and once the confirmations settle the logs are
    // read again.
    let mut settle: Option<tokio::time::Instant> = None;
    loop {
        let push = tokio::select! {
            _ = stopped.cancelled() => return,
            _ = cluster.inner.resubscribed.notified() => {
                catch_up(&cluster).await;
                continue;
            }
            _ = tokio::time::sleep_until(settle.unwrap_or_else(tokio::time::Instant::now)), if settle.is_some() => {
                settle = None;
                if cluster.inner.source.sharded() {
                    subscribe_again(&cluster).await;
                }
                catch_up(&cluster).await;
                continue;
            }
            _ = tick.tick() => {
                if settle.is_none() {
                    advance(&cluster).await;
                }
                continue;
            }
            push = rx.recv() => match push {
                Some(p) => p,
                None => return,
            },
        };
        match push.kind {
            PushKind::Message | PushKind::SMessage => {}
            // What was published in between is in the logs. Redis may also have restarted
            // empty: the lease task looks now, not at its next renewal.
            PushKind::Disconnection => {
                cluster.inner.check_lease.notify_one();
                settle = Some(tokio::time::Instant::now() + RESUBSCRIBE_PATIENCE);
                catch_up(&cluster).await;
                continue;
            }
            PushKind::Subscribe | PushKind::SSubscribe if settle.is_some() => {
                settle = Some(tokio::time::Instant::now() + RESUBSCRIBE_SETTLE);
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
                if cluster.inner.logs.received(&log_of(&cluster, &channel), id) {
                    handle(&cluster, &channel, message);
                }
            }
            // A node of an earlier version publishes without the log.
            None => handle(&cluster, &channel, &payload),
        }
    }
}

/// Subscribes every local channel again on a Redis Cluster, whose client resubscribes a
/// reconnected primary by itself but drops the answer: a subscription that met a primary still
/// loading its data, or a cluster not yet whole, would be lost for good. Retries until Redis
/// answers or the cluster stops.
async fn subscribe_again(cluster: &RedisCluster) {
    let mut backoff = std::time::Duration::from_millis(50);
    loop {
        if cluster.offline() {
            return; // the resync subscribes to every local channel
        }
        let snapshot = cluster.inner.registry.snapshot();
        match cluster.listen_all(&snapshot).await {
            Ok(()) => return,
            Err(e) => tracing::debug!(error = %e, "bus channels not subscribed again yet"),
        }
        tokio::select! {
            _ = cluster.inner.stopped.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
    }
}

/// The bus log a pub/sub channel's messages are in.
fn log_of(cluster: &RedisCluster, channel: &str) -> String {
    let keys = &cluster.inner.keys;
    keys.parse_bus(channel).map_or_else(|| keys.control_log(), |(_, _, log)| log)
}

/// Moves each checkpoint to its log's tail, read on the pub/sub connection: that reply comes
/// after every message Redis pushed before it. A log behind its checkpoint was lost with
/// Redis's data: caught up instead.
async fn advance(cluster: &RedisCluster) {
    if cluster.offline() {
        return;
    }
    let mut conn = cluster.subscriber();
    for log in cluster.inner.logs.names() {
        match buslog::tail(&mut conn, &log).await {
            Ok(tail) if cluster.inner.logs.position(&log).is_none() => {
                cluster.inner.logs.start(&log, tail.last)
            }
            Ok(tail) => {
                if !cluster.inner.logs.advance(&log, tail.last) {
                    catch_up(cluster).await;
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "bus log tail not read");
                return;
            }
        }
    }
}

/// Delivers the logged messages after each checkpoint, read on the pub/sub connection once it
/// answers again (it subscribed anew before that). Retries until Redis answers or the cluster
/// stops.
async fn catch_up(cluster: &RedisCluster) {
    let mut backoff = std::time::Duration::from_millis(50);
    let mut pending = cluster.inner.logs.names();
    while !pending.is_empty() {
        let mut conn = cluster.subscriber();
        while let Some(log) = pending.last() {
            match catch_up_log(cluster, &mut conn, log).await {
                Ok(()) => {
                    pending.pop();
                }
                Err(e) => {
                    tracing::debug!(error = %e, "bus log not readable yet");
                    break;
                }
            }
        }
        if pending.is_empty() {
            return;
        }
        tokio::select! {
            _ = cluster.inner.stopped.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
    }
}

async fn catch_up_log(cluster: &RedisCluster, conn: &mut Conn, log: &str) -> redis::RedisResult<()> {
    let tail = buslog::tail(conn, log).await?;
    let Some(at) = cluster.inner.logs.position(log) else {
        // Subscribed, but never saw the log: what was published before is not for this node.
        cluster.inner.logs.start(log, tail.last);
        return Ok(());
    };
    // A log older than the checkpoint is a new one: Redis lost its data; everything in it was
    // published since.
    let from = if tail.last < at.checkpoint { LogId::default() } else { at.checkpoint };
    let missed = buslog::read(conn, log, from, tail.last).await?;
    let lost = tail.trimmed > from;
    if lost {
        cluster.inner.metrics.bus_gaps.inc();
        tracing::warn!(
            log,
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
        tracing::info!(log, count, from = %from, upto = %tail.last, "delivered messages missed on pub/sub from the bus log");
    }
    cluster.inner.logs.caught_up(log, tail.last);
    Ok(())
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
    if let Some((app_id, pusher_channel, _)) = cluster.inner.keys.parse_bus(channel) {
        let Some((except, frame)) = rest.split_once('\n') else { return };
        let frame = Utf8Bytes::from(frame.to_owned());
        match except_line(except) {
            (except, 0) => registry.broadcast(app_id, pusher_channel, &frame, except),
            (except, seq) => registry.broadcast_member(app_id, pusher_channel, &frame, except, seq),
        };
        return;
    }
    let mut parts = rest.splitn(4, '\n');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        // A tick of an earlier version.
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
        let encoded = encode("pod-1:ab", Some("1.2"), 0, "{\"data\":\n1}");
        let (origin, rest) = encoded.split_once('\n').unwrap();
        let (except, frame) = rest.split_once('\n').unwrap();
        assert_eq!((origin, except, frame), ("pod-1:ab", "1.2", "{\"data\":\n1}"));
        assert_eq!(except_line(except), (Some("1.2"), 0));
        let w = watchers("m", "1", "u", "{\n}");
        let (_, rest) = w.split_once('\n').unwrap();
        assert_eq!(rest.splitn(4, '\n').collect::<Vec<_>>(), ["w", "1", "u", "{\n}"]);
    }

    #[test]
    fn a_member_event_carries_its_sequence_number_after_the_except() {
        let encoded = encode("pod-1:ab", Some("1.2"), 1_764_000_000_000_001, "{}");
        let except = encoded.split('\n').nth(1).unwrap();
        assert_eq!(except_line(except), (Some("1.2"), 1_764_000_000_000_001));
        let cleanup = encode("pod-1:ab", None, 7, "{}");
        assert_eq!(except_line(cleanup.split('\n').nth(1).unwrap()), (None, 7));
        assert_eq!(except_line(""), (None, 0));
    }
}
