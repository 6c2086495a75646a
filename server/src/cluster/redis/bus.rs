//! Messages between nodes over Redis pub/sub: channel frames (`{prefix}:bus:{app}:{channel}`,
//! subscribed only while a local socket is in the channel) and control messages every node
//! hears (`{prefix}:control`: terminate a user, a watched user's change). Every message starts
//! with the sender's incarnation id; a node ignores its own.

use axum::extract::ws::Utf8Bytes;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::RedisCluster;
use crate::protocol::CloseReason;

/// A channel frame: `incarnation \n except \n frame`.
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

/// Delivers what other nodes publish, until the cluster stops.
pub async fn run(cluster: RedisCluster, mut rx: UnboundedReceiver<PushInfo>) {
    let stopped = cluster.inner.stopped.clone();
    loop {
        let push = tokio::select! {
            _ = stopped.cancelled() => return,
            push = rx.recv() => match push {
                Some(p) => p,
                None => return,
            },
        };
        if push.kind != PushKind::Message {
            continue;
        }
        if let (Some(channel), Some(payload)) =
            (push.data.first().and_then(text), push.data.get(1).and_then(text))
        {
            handle(&cluster, &channel, &payload);
        }
    }
}

fn handle(cluster: &RedisCluster, channel: &str, payload: &str) {
    let Some((origin, rest)) = payload.split_once('\n') else { return };
    if cluster.is_own(origin) {
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
