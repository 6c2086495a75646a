//! Errors of the HTTP API, each with its status and a message that says what was wrong.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::cluster::ClusterError;
use crate::protocol::ChannelNameError;

/// Why an API request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No app has this id.
    #[error("Unknown app id {0:?}")]
    UnknownApp(String),
    /// The app is disabled.
    #[error("App is disabled")]
    AppDisabled,
    /// A signing parameter is missing.
    #[error("Missing query parameter {0}")]
    MissingParameter(&'static str),
    /// `auth_key` is not the app's key.
    #[error("Invalid auth_key")]
    WrongKey,
    /// Only auth_version 1.0 exists.
    #[error("Unsupported auth_version {0:?}; expected 1.0")]
    AuthVersion(String),
    /// `auth_timestamp` is not within 600 s of the server clock.
    #[error("Timestamp expired: auth_timestamp {given} differs from server time {now} by more than {window} seconds")]
    TimestampExpired {
        /// What the client sent.
        given: String,
        /// Server time.
        now: u64,
        /// Allowed skew.
        window: u64,
    },
    /// `body_md5` does not match the body received.
    #[error("body_md5 does not match the request body (expected {expected})")]
    BodyMd5Mismatch {
        /// MD5 of the body the server received.
        expected: String,
    },
    /// The signature is wrong.
    #[error("Invalid signature: you should have sent HmacSHA256Hex({signed:?}, your_secret)")]
    BadSignature {
        /// The string the server signed.
        signed: String,
    },
    /// The body is not the JSON the endpoint takes.
    #[error("Invalid JSON body: {0}")]
    InvalidJson(#[from] serde_json::Error),
    /// A required body member is missing.
    #[error("Missing {0} in the request body")]
    Missing(&'static str),
    /// Neither `channels` nor `channel`, or an empty list.
    #[error("An event needs 1 to {max} channels, got {given}")]
    ChannelCount {
        /// Channels named.
        given: usize,
        /// The app's limit.
        max: usize,
    },
    /// A channel name breaks the rules.
    #[error("Invalid channel {channel:?}: {source}")]
    InvalidChannel {
        /// The channel.
        channel: String,
        /// What is wrong with it.
        source: ChannelNameError,
    },
    /// Event name too long or empty.
    #[error("Event name must be 1 to {max} characters, got {len}")]
    EventName {
        /// Its length.
        len: usize,
        /// The app's limit.
        max: usize,
    },
    /// Event data over the app's limit.
    #[error("Event data is {size} bytes; the limit is {max} bytes")]
    PayloadTooLarge {
        /// Bytes of `data`.
        size: usize,
        /// The app's limit.
        max: usize,
    },
    /// The request body is over the server's limit.
    #[error("Request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// `socket_id` is not `\d+.\d+`.
    #[error("Invalid socket_id {0:?}")]
    InvalidSocketId(String),
    /// Too many events in a batch.
    #[error("A batch may hold 1 to {max} events, got {given}")]
    BatchSize {
        /// Events given.
        given: usize,
        /// The app's limit.
        max: usize,
    },
    /// `info=user_count` asked of channels that are not presence channels.
    #[error("user_count is only available for presence channels")]
    UserCountNeedsPresence,
    /// `/users` asked of a channel that is not a presence channel.
    #[error("Channel {0} is not a presence channel")]
    NotPresence(String),
    /// Unknown `info` attribute.
    #[error("Unknown info attribute {0:?}; expected user_count or subscription_count")]
    UnknownInfo(String),
    /// A per-app rate limit refused the request.
    #[error("Rate limit exceeded: {limit} is {per_second}")]
    RateLimited {
        /// Which limit.
        limit: &'static str,
        /// Its value.
        per_second: u32,
    },
    /// A user id outside the allowed characters.
    #[error("Invalid user id {0:?}")]
    InvalidUserId(String),
    /// The cluster backend failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The cluster backend cannot answer for the whole cluster right now.
    #[error("Cluster state is unavailable (Redis unreachable); retry shortly")]
    Unavailable,
    /// No such route.
    #[error("Not found")]
    NotFound,
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownApp(_) | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::AppDisabled => StatusCode::FORBIDDEN,
            ApiError::MissingParameter(_)
            | ApiError::WrongKey
            | ApiError::AuthVersion(_)
            | ApiError::TimestampExpired { .. }
            | ApiError::BodyMd5Mismatch { .. }
            | ApiError::BadSignature { .. } => StatusCode::UNAUTHORIZED,
            ApiError::PayloadTooLarge { .. } | ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidJson(_)
            | ApiError::Missing(_)
            | ApiError::ChannelCount { .. }
            | ApiError::InvalidChannel { .. }
            | ApiError::EventName { .. }
            | ApiError::InvalidSocketId(_)
            | ApiError::BatchSize { .. }
            | ApiError::UserCountNeedsPresence
            | ApiError::NotPresence(_)
            | ApiError::UnknownInfo(_)
            | ApiError::InvalidUserId(_) => StatusCode::BAD_REQUEST,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Cluster(_) | ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}
