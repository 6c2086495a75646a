//! Wire types of Pusher protocol 7: client frames parsed into [`ClientMessage`], server frames
//! built by the functions of [`frames`], close codes ([`CloseReason`]) and channel names
//! ([`ChannelName`]).

pub mod frames;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Why the server closes a socket. Each variant maps to exactly one Pusher close code, and the
/// code range tells pusher-js what to do: 4000–4099 do not reconnect, 4100–4199 reconnect with
/// backoff, 4200–4299 reconnect at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// 4001: no app has this key.
    AppNotFound,
    /// 4003: the app exists but is disabled.
    AppDisabled,
    /// 4004: the app is over its connection quota (the default quota code).
    OverConnectionQuota,
    /// 4007: the client asked for a protocol version this server does not speak.
    UnsupportedProtocol,
    /// 4008: the client did not say which protocol version it speaks.
    NoProtocolVersion,
    /// 4009: the connection is not authorized (failed sign-in, terminated user).
    Unauthorized,
    /// 4100: over capacity: the app's quota when configured so, or a client that could not keep
    /// up with its outbound queue. pusher-js reconnects with backoff.
    OverCapacity,
    /// 4200: the server is shutting down; reconnect (to another node) at once.
    Reconnect,
    /// 4201: the client did not answer the server's ping in time.
    PongNotReceived,
}

impl CloseReason {
    /// The WebSocket close code sent for this reason.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::AppNotFound => 4001,
            CloseReason::AppDisabled => 4003,
            CloseReason::OverConnectionQuota => 4004,
            CloseReason::UnsupportedProtocol => 4007,
            CloseReason::NoProtocolVersion => 4008,
            CloseReason::Unauthorized => 4009,
            CloseReason::OverCapacity => 4100,
            CloseReason::Reconnect => 4200,
            CloseReason::PongNotReceived => 4201,
        }
    }

    /// The human-readable close reason (also sent as a `pusher:error` before closing).
    pub fn message(self) -> &'static str {
        match self {
            CloseReason::AppNotFound => "Application does not exist",
            CloseReason::AppDisabled => "Application disabled",
            CloseReason::OverConnectionQuota => "Application is over connection quota",
            CloseReason::UnsupportedProtocol => "Unsupported protocol version",
            CloseReason::NoProtocolVersion => "No protocol version supplied",
            CloseReason::Unauthorized => "Connection is unauthorized",
            CloseReason::OverCapacity => "Over capacity",
            CloseReason::Reconnect => "Server is shutting down, reconnect",
            CloseReason::PongNotReceived => "Pong reply not received",
        }
    }

    /// A short static label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::AppNotFound => "app_not_found",
            CloseReason::AppDisabled => "app_disabled",
            CloseReason::OverConnectionQuota => "over_quota",
            CloseReason::UnsupportedProtocol => "unsupported_protocol",
            CloseReason::NoProtocolVersion => "no_protocol",
            CloseReason::Unauthorized => "unauthorized",
            CloseReason::OverCapacity => "over_capacity",
            CloseReason::Reconnect => "reconnect",
            CloseReason::PongNotReceived => "pong_timeout",
        }
    }
}

/// The `pusher:error` code for a client event refused by the per-connection rate limit.
pub const CLIENT_EVENT_RATE_LIMITED: u16 = 4301;

/// The `pusher:error` code for a watchlist longer than the app allows (the first ids are kept).
pub const WATCHLIST_LIMIT_EXCEEDED: u16 = 4302;

/// The protocol versions a client may ask for; pusher-js sends 7.
pub const SUPPORTED_PROTOCOLS: std::ops::RangeInclusive<u32> = 5..=7;

/// What kind of channel a name denotes; the prefix decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// No prefix: anyone may subscribe.
    Public,
    /// `private-`: needs a signature over `socket_id:channel`.
    Private,
    /// `private-encrypted-`: private, payloads end-to-end encrypted; client events refused.
    PrivateEncrypted,
    /// `presence-`: needs a signature over `socket_id:channel:channel_data`; tracks members.
    Presence,
    /// `#server-to-user-{id}`: only a connection signed in as `{id}` may subscribe.
    ServerToUser,
}

/// A validated channel name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelName {
    /// The channel's kind.
    pub kind: ChannelKind,
    /// `cache-` variants keep the last server event for new subscribers.
    pub cache: bool,
}

impl ChannelName {
    /// Whether a subscription needs an `auth` signature.
    pub fn needs_auth(self) -> bool {
        matches!(self.kind, ChannelKind::Private | ChannelKind::PrivateEncrypted | ChannelKind::Presence)
    }

    /// Whether clients may send `client-` events on it.
    pub fn allows_client_events(self) -> bool {
        matches!(self.kind, ChannelKind::Private | ChannelKind::Presence)
    }
}

/// Why a channel name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelNameError {
    /// Empty name.
    #[error("channel name must not be empty")]
    Empty,
    /// Longer than the app's limit.
    #[error("channel name is {len} characters long; the limit is {max}")]
    TooLong {
        /// Length of the name.
        len: usize,
        /// The app's limit.
        max: usize,
    },
    /// A character outside `A-Z a-z 0-9 _ - = @ , . ;`.
    #[error("channel name contains {0:?}; allowed are A-Z a-z 0-9 _ - = @ , . ;")]
    InvalidCharacter(char),
    /// `#` is reserved for Pusher's own channels.
    #[error("channel names starting with '#' are reserved")]
    Reserved,
}

const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";
const CACHE_PREFIXES: [&str; 4] = ["cache-", "private-cache-", "private-encrypted-cache-", "presence-cache-"];

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '@' | ',' | '.' | ';')
}

/// Parses and validates a channel name against the charset and `max_len`.
pub fn parse_channel(name: &str, max_len: usize) -> Result<ChannelName, ChannelNameError> {
    if name.is_empty() {
        return Err(ChannelNameError::Empty);
    }
    if name.len() > max_len {
        return Err(ChannelNameError::TooLong { len: name.len(), max: max_len });
    }
    let (body, kind) = match name.strip_prefix(SERVER_TO_USER_PREFIX) {
        Some(user) if !user.is_empty() => (user, ChannelKind::ServerToUser),
        _ if name.starts_with('#') => return Err(ChannelNameError::Reserved),
        _ => (name, kind_of(name)),
    };
    if let Some(c) = body.chars().find(|c| !is_name_char(*c)) {
        return Err(ChannelNameError::InvalidCharacter(c));
    }
    let cache = kind != ChannelKind::ServerToUser && CACHE_PREFIXES.iter().any(|p| name.starts_with(p));
    Ok(ChannelName { kind, cache })
}

fn kind_of(name: &str) -> ChannelKind {
    if name.starts_with("private-encrypted-") {
        ChannelKind::PrivateEncrypted
    } else if name.starts_with("private-") {
        ChannelKind::Private
    } else if name.starts_with("presence-") {
        ChannelKind::Presence
    } else {
        ChannelKind::Public
    }
}

/// The user id of a `#server-to-user-{id}` channel.
pub fn server_to_user_id(channel: &str) -> Option<&str> {
    channel.strip_prefix(SERVER_TO_USER_PREFIX)
}

/// Whether `s` is a socket id as the SDKs validate it: `^\d+\.\d+$`.
pub fn is_socket_id(s: &str) -> bool {
    match s.split_once('.') {
        Some((a, b)) => {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

/// A frame from a client, parsed into what it asks for.
#[derive(Debug)]
pub enum ClientMessage<'a> {
    /// `pusher:ping`.
    Ping,
    /// `pusher:pong` (the answer to our ping).
    Pong,
    /// `pusher:subscribe`.
    Subscribe(Subscribe),
    /// `pusher:signin`.
    Signin(Signin),
    /// `pusher:unsubscribe`.
    Unsubscribe {
        /// The channel to leave.
        channel: String,
    },
    /// A `client-` event to relay.
    ClientEvent {
        /// Event name, starting with `client-`.
        event: String,
        /// Target channel.
        channel: String,
        /// The payload exactly as the client sent it.
        data: &'a RawValue,
    },
    /// Any other event name.
    Unknown(String),
}

/// The data of a `pusher:subscribe`.
#[derive(Debug, Deserialize)]
pub struct Subscribe {
    /// Channel to join.
    pub channel: String,
    /// `key:signature` for private and presence channels.
    #[serde(default)]
    pub auth: Option<String>,
    /// The presence member JSON, exactly as the auth endpoint signed it.
    #[serde(default)]
    pub channel_data: Option<String>,
}

/// The data of a `pusher:signin`.
#[derive(Debug, Deserialize)]
pub struct Signin {
    /// `key:signature` over `socket_id::user::user_data`.
    pub auth: String,
    /// The user JSON exactly as the auth endpoint signed it.
    pub user_data: String,
}

/// Why a client frame could not be understood. The connection stays open.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Not JSON, or not an object with a string `event`.
    #[error("Invalid message: expected a JSON object with a string 'event' ({0})")]
    InvalidJson(serde_json::Error),
    /// A known event whose `data` has the wrong shape.
    #[error("Invalid data for {event}: {source}")]
    InvalidData {
        /// The event whose data was wrong.
        event: &'static str,
        /// What serde found.
        source: serde_json::Error,
    },
    /// A client event without a channel or data.
    #[error("Client event {0} needs a 'channel' and 'data'")]
    ClientEventIncomplete(String),
}

#[derive(Deserialize)]
struct RawFrame<'a> {
    event: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// Reads a `data` member that clients send either as an object or double-encoded as a string.
fn data_of<T: for<'de> Deserialize<'de>>(
    event: &'static str,
    data: Option<&RawValue>,
) -> Result<T, FrameError> {
    let raw = data.map(RawValue::get).unwrap_or("null");
    let parsed = match serde_json::from_str::<String>(raw) {
        Ok(inner) => serde_json::from_str(&inner),
        Err(_) => serde_json::from_str(raw),
    };
    parsed.map_err(|source| FrameError::InvalidData { event, source })
}

#[derive(Deserialize)]
struct ChannelOnly {
    channel: String,
}

impl<'a> ClientMessage<'a> {
    /// Parses one text frame.
    pub fn parse(text: &'a str) -> Result<Self, FrameError> {
        let frame: RawFrame<'a> = serde_json::from_str(text).map_err(FrameError::InvalidJson)?;
        Ok(match frame.event.as_str() {
            "pusher:ping" => ClientMessage::Ping,
            "pusher:pong" => ClientMessage::Pong,
            "pusher:subscribe" => ClientMessage::Subscribe(data_of("pusher:subscribe", frame.data)?),
            "pusher:signin" => ClientMessage::Signin(data_of("pusher:signin", frame.data)?),
            "pusher:unsubscribe" => {
                let ChannelOnly { channel } = data_of("pusher:unsubscribe", frame.data)?;
                ClientMessage::Unsubscribe { channel }
            }
            e if e.starts_with("client-") => match (frame.channel, frame.data) {
                (Some(channel), Some(data)) => {
                    ClientMessage::ClientEvent { event: frame.event, channel, data }
                }
                _ => return Err(FrameError::ClientEventIncomplete(frame.event)),
            },
            _ => ClientMessage::Unknown(frame.event),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_prefixes_are_recognised_in_the_right_order() {
        let k = |n: &str| parse_channel(n, 200).map(|c| (c.kind, c.cache));
        assert_eq!(k("chat"), Ok((ChannelKind::Public, false)));
        assert_eq!(k("private-chat"), Ok((ChannelKind::Private, false)));
        assert_eq!(k("private-encrypted-chat"), Ok((ChannelKind::PrivateEncrypted, false)));
        assert_eq!(k("presence-room"), Ok((ChannelKind::Presence, false)));
        assert_eq!(k("cache-x"), Ok((ChannelKind::Public, true)));
        assert_eq!(k("private-cache-x"), Ok((ChannelKind::Private, true)));
        assert_eq!(k("private-encrypted-cache-x"), Ok((ChannelKind::PrivateEncrypted, true)));
        assert_eq!(k("presence-cache-x"), Ok((ChannelKind::Presence, true)));
        assert_eq!(k("#server-to-user-42"), Ok((ChannelKind::ServerToUser, false)));
    }

    #[test]
    fn channel_names_outside_the_rules_are_refused() {
        assert_eq!(parse_channel("", 200), Err(ChannelNameError::Empty));
        assert_eq!(parse_channel("a b", 200), Err(ChannelNameError::InvalidCharacter(' ')));
        assert_eq!(parse_channel("#secret", 200), Err(ChannelNameError::Reserved));
        assert_eq!(parse_channel("#server-to-user-", 200), Err(ChannelNameError::Reserved));
        assert_eq!(parse_channel("private-é", 200), Err(ChannelNameError::InvalidCharacter('é')));
        let long = "a".repeat(201);
        assert_eq!(parse_channel(&long, 200), Err(ChannelNameError::TooLong { len: 201, max: 200 }));
        assert!(parse_channel(&"a".repeat(200), 200).is_ok());
        assert!(parse_channel("private-azAZ9_=@,.;", 200).is_ok());
    }

    #[test]
    fn socket_ids_follow_the_sdk_pattern() {
        assert!(is_socket_id("123.456"));
        assert!(!is_socket_id("123."));
        assert!(!is_socket_id(".4"));
        assert!(!is_socket_id("12a.4"));
        assert!(!is_socket_id("1234"));
        assert!(!is_socket_id("1.2.3"));
    }

    #[test]
    fn subscribe_data_is_read_as_object_or_double_encoded_string() {
        let m =
            ClientMessage::parse(r#"{"event":"pusher:subscribe","data":{"channel":"a","auth":""}}"#).unwrap();
        assert!(matches!(m, ClientMessage::Subscribe(Subscribe { ref channel, .. }) if channel == "a"));
        let m = ClientMessage::parse(r#"{"event":"pusher:subscribe","data":"{\"channel\":\"b\"}"}"#).unwrap();
        assert!(matches!(m, ClientMessage::Subscribe(Subscribe { ref channel, .. }) if channel == "b"));
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        assert!(matches!(ClientMessage::parse("not json"), Err(FrameError::InvalidJson(_))));
        assert!(matches!(ClientMessage::parse(r#"{"event":5}"#), Err(FrameError::InvalidJson(_))));
        assert!(matches!(ClientMessage::parse("[]"), Err(FrameError::InvalidJson(_))));
        assert!(matches!(
            ClientMessage::parse(r#"{"event":"pusher:subscribe","data":{"chan":1}}"#),
            Err(FrameError::InvalidData { .. })
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"event":"client-x","data":{}}"#),
            Err(FrameError::ClientEventIncomplete(_))
        ));
        assert!(matches!(ClientMessage::parse(r#"{"event":"pusher:what"}"#), Ok(ClientMessage::Unknown(_))));
    }

    #[test]
    fn client_event_data_is_kept_byte_for_byte() {
        let m = ClientMessage::parse(r#"{"event":"client-typing","channel":"private-a","data":{"b" : 1}}"#)
            .unwrap();
        match m {
            ClientMessage::ClientEvent { data, .. } => assert_eq!(data.get(), r#"{"b" : 1}"#),
            other => panic!("unexpected {other:?}"),
        }
    }
}
