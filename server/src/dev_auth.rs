//! A development auth endpoint (`--dev-auth`), so a frontend can use private, presence and
//! encrypted channels and user sign-in before its backend exists: `POST /pusher/auth` and
//! `POST /pusher/user-auth` sign whatever pusher-js asks for, for the first app. Refused unless
//! the server runs the embedded default or is told it is not production; logs a loud warning.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::apps::App;
use crate::protocol::{is_socket_id, parse_channel, ChannelKind};
use crate::signing;
use crate::state::ServerState;

/// The encryption master key the dev endpoint derives `private-encrypted-` secrets from. A
/// backend that publishes to encrypted channels in development uses the same key (base64
/// `DEV_ENCRYPTION_MASTER_KEY_BASE64`).
pub const DEV_ENCRYPTION_MASTER_KEY: &[u8; 32] = b"herald-dev-encryption-master-key";

/// The per-channel key of an encrypted channel, as the server SDKs derive it:
/// base64(SHA-256(channel name ‖ master key)).
pub fn shared_secret(channel: &str, master_key: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(channel.as_bytes());
    h.update(master_key);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

static NEXT_USER: AtomicU64 = AtomicU64::new(1);

/// The dev auth routes.
pub fn router() -> Router<ServerState> {
    Router::new()
        .route("/pusher/auth", post(channel_auth).options(preflight))
        .route("/pusher/user-auth", post(user_auth).options(preflight))
}

/// Reads pusher-js's form body (or JSON) into key/value pairs.
fn params(headers: &HeaderMap, body: &[u8]) -> Vec<(String, String)> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        return v
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                    .collect()
            })
            .unwrap_or_default();
    }
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

fn get<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn cors(status: StatusCode, body: Value) -> Response {
    let headers = [
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, "content-type, authorization"),
    ];
    (status, headers, Json(body)).into_response()
}

async fn preflight() -> Response {
    cors(StatusCode::NO_CONTENT, Value::Null)
}

/// What both endpoints start with: the app they sign for, the request's params, and a valid
/// `socket_id`.
struct DevRequest {
    app: Arc<App>,
    params: Vec<(String, String)>,
    socket_id: String,
}

/// A refused request: status and message, turned into a CORS JSON response by [`refuse`].
type Refused = (StatusCode, &'static str);

fn refuse((status, error): Refused) -> Response {
    cors(status, json!({ "error": error }))
}

fn request(state: &ServerState, headers: &HeaderMap, body: &[u8]) -> Result<DevRequest, Refused> {
    let params = params(headers, body);
    let app = state.apps.all().into_iter().next().ok_or((StatusCode::NOT_FOUND, "no app"))?;
    let socket_id = get(&params, "socket_id")
        .filter(|s| is_socket_id(s))
        .map(str::to_owned)
        .ok_or((StatusCode::BAD_REQUEST, "a valid socket_id is required"))?;
    Ok(DevRequest { app, params, socket_id })
}

fn user_id(params: &[(String, String)]) -> String {
    get(params, "user_id")
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("dev-user-{}", NEXT_USER.fetch_add(1, Ordering::Relaxed)))
}

/// `POST /pusher/auth`: `socket_id`, `channel_name`, and for presence an optional `user_id` and
/// `user_info` (JSON).
async fn channel_auth(
    State(state): State<ServerState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let DevRequest { app, params: p, socket_id } = match request(&state, &headers, &body) {
        Ok(r) => r,
        Err(refused) => return refuse(refused),
    };
    let socket_id = socket_id.as_str();
    let Some(channel) = get(&p, "channel_name") else {
        return refuse((StatusCode::BAD_REQUEST, "channel_name is required"));
    };
    let kind = match parse_channel(channel, app.limits.max_channel_name_length) {
        Ok(name) => name.kind,
        Err(e) => return cors(StatusCode::BAD_REQUEST, json!({ "error": e.to_string() })),
    };
    match kind {
        ChannelKind::Presence => {
            let info: Value =
                get(&p, "user_info").and_then(|i| serde_json::from_str(i).ok()).unwrap_or(json!({}));
            let channel_data = json!({ "user_id": user_id(&p), "user_info": info }).to_string();
            let message = signing::channel_string(socket_id, channel, Some(&channel_data));
            let auth = signing::token(&app.key, &app.secret, &message);
            cors(StatusCode::OK, json!({ "auth": auth, "channel_data": channel_data }))
        }
        ChannelKind::Private | ChannelKind::PrivateEncrypted => {
            let auth =
                signing::token(&app.key, &app.secret, &signing::channel_string(socket_id, channel, None));
            if kind == ChannelKind::PrivateEncrypted {
                let secret = shared_secret(channel, DEV_ENCRYPTION_MASTER_KEY);
                return cors(StatusCode::OK, json!({ "auth": auth, "shared_secret": secret }));
            }
            cors(StatusCode::OK, json!({ "auth": auth }))
        }
        ChannelKind::Public | ChannelKind::ServerToUser => cors(
            StatusCode::BAD_REQUEST,
            json!({"error":"only private, presence and encrypted channels need auth"}),
        ),
    }
}

/// `POST /pusher/user-auth`: `socket_id`, optional `user_id`.
async fn user_auth(
    State(state): State<ServerState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let DevRequest { app, params: p, socket_id } = match request(&state, &headers, &body) {
        Ok(r) => r,
        Err(refused) => return refuse(refused),
    };
    let user_data = json!({ "id": user_id(&p) }).to_string();
    let auth = signing::token(&app.key, &app.secret, &signing::user_string(&socket_id, &user_data));
    cors(StatusCode::OK, json!({ "auth": auth, "user_data": user_data }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PUSHER.md §4.2 D5, derived with the official Node SDK: master key
    /// "This is a string that is 32 char", channel private-encrypted-bla.
    #[test]
    fn shared_secrets_are_derived_as_the_server_sdks_derive_them() {
        let secret = shared_secret("private-encrypted-bla", b"This is a string that is 32 char");
        assert_eq!(secret, "a0DpK+rFcIG022xpuiP0x8E24H4ybS8zCHP4PN1i3To=");
    }
}
