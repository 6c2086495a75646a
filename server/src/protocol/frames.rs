//! Server → client frames, serialized once into a `String` the caller shares between sockets.
//!
//! System events whose `data` Pusher documents as a JSON *string* (connection_established,
//! subscription_succeeded, member events, channel events) are double-encoded here.

use serde::Serialize;
use serde_json::value::RawValue;

#[derive(Serialize)]
struct Frame<'a, D: Serialize> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    data: D,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serializing plain structs of strings, numbers and `RawValue`s into a String cannot fail.
    serde_json::to_string(value).expect("frame serialization is infallible")
}

fn frame<D: Serialize>(event: &str, channel: Option<&str>, data: D) -> String {
    to_json(&Frame { event, channel, data, user_id: None })
}

/// `pusher:connection_established` with the socket id and activity timeout (seconds).
pub fn connection_established(socket_id: &str, activity_timeout: u64) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        socket_id: &'a str,
        activity_timeout: u64,
    }
    frame("pusher:connection_established", None, to_json(&Data { socket_id, activity_timeout }))
}

/// `pusher:error`; `code` is `null` for errors that leave the connection open.
pub fn error(message: &str, code: Option<u16>) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        code: Option<u16>,
        message: &'a str,
    }
    frame("pusher:error", None, Data { code, message })
}

/// `pusher:ping`, sent when the client has been silent for the activity timeout.
pub fn ping() -> String {
    frame("pusher:ping", None, serde_json::Map::new())
}

/// `pusher:pong`, the answer to a client's `pusher:ping`.
pub fn pong() -> String {
    frame("pusher:pong", None, serde_json::Map::new())
}

/// `pusher_internal:subscription_succeeded` for a channel without presence.
pub fn subscription_succeeded(channel: &str) -> String {
    frame("pusher_internal:subscription_succeeded", Some(channel), "{}")
}

/// One presence member: the id and the `user_info` JSON exactly as the client signed it.
#[derive(Debug, Clone)]
pub struct MemberRef<'a> {
    /// The member's user id (numbers are kept as their decimal string).
    pub user_id: &'a str,
    /// The raw `user_info` JSON, if the member has one.
    pub user_info: Option<&'a RawValue>,
}

/// `pusher_internal:subscription_succeeded` for a presence channel: ids, hash and count.
pub fn presence_subscription_succeeded<'a>(
    channel: &str,
    members: impl ExactSizeIterator<Item = MemberRef<'a>> + Clone,
) -> String {
    /// `{user_id: user_info, ...}` written straight from the members' raw JSON: a joiner's list
    /// is O(members), and re-parsing every `user_info` into a `Value` for it made a presence
    /// join storm cost more per `member_added` as the channel grew (perf, 5,000 members).
    struct Hash<I>(I);
    impl<'a, I: ExactSizeIterator<Item = MemberRef<'a>> + Clone> Serialize for Hash<I> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = s.serialize_map(Some(self.0.len()))?;
            for m in self.0.clone() {
                map.serialize_entry(m.user_id, &m.user_info)?;
            }
            map.end()
        }
    }
    #[derive(Serialize)]
    #[serde(bound(serialize = ""))]
    struct Presence<'a, I: ExactSizeIterator<Item = MemberRef<'a>> + Clone> {
        ids: Vec<&'a str>,
        hash: Hash<I>,
        count: usize,
    }
    #[derive(Serialize)]
    #[serde(bound(serialize = ""))]
    struct Data<'a, I: ExactSizeIterator<Item = MemberRef<'a>> + Clone> {
        presence: Presence<'a, I>,
    }
    let count = members.len();
    let ids = members.clone().map(|m| m.user_id).collect();
    let hash = Hash(members);
    frame(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        to_json(&Data { presence: Presence { ids, hash, count } }),
    )
}

/// `pusher_internal:member_added`.
pub fn member_added(channel: &str, member: MemberRef<'_>) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        user_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_info: Option<&'a RawValue>,
    }
    let data = to_json(&Data { user_id: member.user_id, user_info: member.user_info });
    frame("pusher_internal:member_added", Some(channel), data)
}

/// `pusher_internal:member_removed`.
pub fn member_removed(channel: &str, user_id: &str) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        user_id: &'a str,
    }
    frame("pusher_internal:member_removed", Some(channel), to_json(&Data { user_id }))
}

/// An event published through the HTTP API: `data` is the publisher's string, byte for byte.
pub fn channel_event(event: &str, channel: &str, data: &str) -> String {
    frame(event, Some(channel), data)
}

/// A relayed `client-` event: `data` as the sender wrote it, `user_id` on presence channels.
pub fn client_event(event: &str, channel: &str, data: &RawValue, user_id: Option<&str>) -> String {
    to_json(&Frame { event, channel: Some(channel), data, user_id })
}

/// `pusher:signin_success`, echoing the signed `user_data` string.
pub fn signin_success(user_data: &str) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        user_data: &'a str,
    }
    frame("pusher:signin_success", None, Data { user_data })
}

/// `pusher_internal:watchlist_events` with the users that came online and went offline.
pub fn watchlist_events(online: &[&str], offline: &[&str]) -> String {
    #[derive(Serialize)]
    struct Entry<'a> {
        name: &'static str,
        user_ids: &'a [&'a str],
    }
    #[derive(Serialize)]
    struct Data<'a> {
        events: Vec<Entry<'a>>,
    }
    let mut events = Vec::new();
    if !online.is_empty() {
        events.push(Entry { name: "online", user_ids: online });
    }
    if !offline.is_empty() {
        events.push(Entry { name: "offline", user_ids: offline });
    }
    frame("pusher_internal:watchlist_events", None, Data { events })
}

/// `pusher:cache_miss`: a cache channel had nothing to replay.
pub fn cache_miss(channel: &str) -> String {
    frame("pusher:cache_miss", Some(channel), "{}")
}

/// `pusher_internal:subscription_count`.
pub fn subscription_count(channel: &str, count: u64) -> String {
    #[derive(Serialize)]
    struct Data {
        subscription_count: u64,
    }
    frame("pusher_internal:subscription_count", Some(channel), to_json(&Data { subscription_count: count }))
}

/// Which way subscription failures are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorDialect {
    /// `pusher:subscription_error` on the channel with `{type, error, status}`, as soketi and
    /// sockudo send it and Laravel Echo's `.error()` callbacks expect.
    #[default]
    Echo,
    /// Hosted Pusher's form: `pusher:error` with `code: null` and the message.
    Pusher,
}

/// A failed subscription, in the chosen dialect.
pub fn subscription_error(
    dialect: ErrorDialect,
    channel: &str,
    kind: &str,
    message: &str,
    status: u16,
) -> String {
    match dialect {
        ErrorDialect::Echo => {
            #[derive(Serialize)]
            struct Data<'a> {
                #[serde(rename = "type")]
                kind: &'a str,
                error: &'a str,
                status: u16,
            }
            frame("pusher:subscription_error", Some(channel), Data { kind, error: message, status })
        }
        ErrorDialect::Pusher => error(message, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_established_data_is_a_json_string() {
        let f = connection_established("1.2", 120);
        assert_eq!(
            f,
            r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}"#
        );
    }

    #[test]
    fn presence_success_lists_ids_hash_and_count() {
        let info = RawValue::from_string(r#"{"name":"A"}"#.to_owned()).unwrap();
        let members =
            [MemberRef { user_id: "1", user_info: Some(&info) }, MemberRef { user_id: "2", user_info: None }];
        let f = presence_subscription_succeeded("presence-x", members.iter().cloned());
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        let data: serde_json::Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["presence"]["count"], 2);
        assert_eq!(data["presence"]["ids"], serde_json::json!(["1", "2"]));
        assert_eq!(data["presence"]["hash"]["1"]["name"], "A");
        assert!(data["presence"]["hash"]["2"].is_null());
    }

    #[test]
    fn subscription_errors_follow_the_dialect() {
        let echo = subscription_error(ErrorDialect::Echo, "private-a", "AuthError", "bad", 401);
        assert_eq!(
            echo,
            r#"{"event":"pusher:subscription_error","channel":"private-a","data":{"type":"AuthError","error":"bad","status":401}}"#
        );
        let hosted = subscription_error(ErrorDialect::Pusher, "private-a", "AuthError", "bad", 401);
        assert_eq!(hosted, r#"{"event":"pusher:error","data":{"code":null,"message":"bad"}}"#);
    }

    #[test]
    fn client_events_carry_user_id_only_when_given() {
        let data = RawValue::from_string(r#"{"t":1}"#.to_owned()).unwrap();
        assert_eq!(
            client_event("client-a", "presence-x", &data, Some("7")),
            r#"{"event":"client-a","channel":"presence-x","data":{"t":1},"user_id":"7"}"#
        );
        assert_eq!(
            client_event("client-a", "private-x", &data, None),
            r#"{"event":"client-a","channel":"private-x","data":{"t":1}}"#
        );
    }
}
