//! Errors of the HTTP API, each with its status and a message that says what was wrong.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::protocol::ChannelNameError;
use crate::publish::PublishError;

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
    /// A channel name breaks the rules.
    #[error("Invalid channel {channel:?}: {source}")]
    InvalidChannel {
        /// The channel.
        channel: String,
        /// What is wrong with it.
        source: ChannelNameError,
    },
    /// The request body did not arrive within the deadline.
    #[error("Request body not received within {0} s")]
    BodyTimeout(u64),
    /// The request body is over the server's limit.
    #[error("Request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// `info=user_count` asked of channels that are not presence channels.
    #[error("user_count is only available for presence channels")]
    UserCountNeedsPresence,
    /// `/users` asked of a channel that is not a presence channel.
    #[error("Channel {0} is not a presence channel")]
    NotPresence(String),
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
    /// An event was refused (validation, limits, rate limit).
    #[error(transparent)]
    Publish(#[from] PublishError),
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
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::InvalidChannel { .. }
            | ApiError::UserCountNeedsPresence
            | ApiError::NotPresence(_)
            | ApiError::InvalidUserId(_) => StatusCode::BAD_REQUEST,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Publish(e) => match e {
                PublishError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                PublishError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
                PublishError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                PublishError::InvalidJson(_)
                | PublishError::Missing(_)
                | PublishError::ChannelCount { .. }
                | PublishError::InvalidChannel { .. }
                | PublishError::EventName { .. }
                | PublishError::InvalidSocketId(_)
                | PublishError::BatchSize { .. }
                | PublishError::UnknownInfo(_) => StatusCode::BAD_REQUEST,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}
