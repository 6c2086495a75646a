//! The signature layer: resolves the app from the path, reads the body (bounded), and checks
//! `auth_key`, `auth_timestamp` (±600 s), `auth_version`, `body_md5` (recomputed from the raw
//! body) and `auth_signature` (constant-time). The handler gets the [`App`] as an extension.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::ApiError;
use crate::apps::App;
use crate::ratelimit::AppLimit;
use crate::signing;
use crate::state::ServerState;

/// How far `auth_timestamp` may be from the server clock, in seconds.
pub const TIMESTAMP_WINDOW: u64 = 600;

/// Query parameters, decoded, in the order given.
pub type Params = Vec<(String, String)>;

/// Parses a raw query string and checks its signature (exposed for fuzzing).
pub fn check_query(
    app: &App,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    now: u64,
) -> Result<(), ApiError> {
    let params: Params =
        serde_urlencoded::from_str(query).map_err(|_| ApiError::MissingParameter("auth_signature"))?;
    check(app, method, path, &params, body, now)
}

fn param<'a>(params: &'a Params, name: &'static str) -> Result<&'a str, ApiError> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).ok_or(ApiError::MissingParameter(name))
}

/// Checks the signing parameters of a request for `app` with body `body`.
pub fn check(
    app: &App,
    method: &str,
    path: &str,
    params: &Params,
    body: &[u8],
    now: u64,
) -> Result<(), ApiError> {
    if param(params, "auth_key")? != app.key {
        return Err(ApiError::WrongKey);
    }
    let given = param(params, "auth_timestamp")?;
    let in_window = given.parse::<u64>().is_ok_and(|ts| ts.abs_diff(now) <= TIMESTAMP_WINDOW);
    if !in_window {
        return Err(ApiError::TimestampExpired { given: given.to_owned(), now, window: TIMESTAMP_WINDOW });
    }
    let version = param(params, "auth_version")?;
    if version != "1.0" {
        return Err(ApiError::AuthVersion(version.to_owned()));
    }
    let signature = param(params, "auth_signature")?;
    let md5 = params.iter().find(|(k, _)| k == "body_md5").map(|(_, v)| v.as_str());
    if !body.is_empty() || md5.is_some() {
        let expected = signing::body_md5(body);
        if md5 != Some(expected.as_str()) {
            return Err(ApiError::BodyMd5Mismatch { expected });
        }
    }
    let signed = signing::api_string(method, path, params);
    signing::verify(&app.secret, signed.as_bytes(), signature).map_err(|_| ApiError::BadSignature { signed })
}

/// The app of a request whose path names none, by its `auth_key` (still signature-checked).
fn app_by_auth_key(state: &ServerState, query: &str) -> Result<Arc<App>, ApiError> {
    let params: Params = serde_urlencoded::from_str(query).unwrap_or_default();
    let key = param(&params, "auth_key")?;
    state.apps.by_key(key).ok_or(ApiError::WrongKey)
}

/// Middleware: verifies the request and hands the app to the handler.
pub async fn verify(
    State(state): State<ServerState>,
    Path(path): Path<HashMap<String, String>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let app: Arc<App> = match path.get("app_id") {
        Some(app_id) => state.apps.by_id(app_id).ok_or_else(|| ApiError::UnknownApp(app_id.clone()))?,
        None => app_by_auth_key(&state, req.uri().query().unwrap_or_default())?,
    };
    if !app.enabled {
        return Err(ApiError::AppDisabled);
    }
    if !state.cluster.health.healthy() {
        return Err(ApiError::Unavailable);
    }
    let (mut parts, body) = req.into_parts();
    let limit = state.settings.max_request_size;
    // A body trickled in (a slowloris past the head) gets the same deadline as a request head.
    let deadline = state.settings.handshake_timeout;
    let body = match tokio::time::timeout(deadline, to_bytes(body, limit)).await {
        Ok(read) => read.map_err(|_| ApiError::BodyTooLarge(limit))?,
        Err(_) => return Err(ApiError::BodyTimeout(deadline.as_secs())),
    };
    let params: Params = serde_urlencoded::from_str(parts.uri.query().unwrap_or_default())
        .map_err(|_| ApiError::MissingParameter("auth_signature"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    check(&app, parts.method.as_str(), parts.uri.path(), &params, &body, now).map_err(|e| {
        tracing::debug!(app_id = %app.id, error = %e, "API request refused");
        e
    })?;
    if parts.method == axum::http::Method::GET {
        if let Some(per_second) = app.limits.max_read_requests_per_second {
            super::check_rate(&state, &app, AppLimit::ReadRequests, per_second, 1)?;
        }
    }
    parts.extensions.insert(app);
    Ok(next.run(Request::from_parts(parts, Body::from(body))).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> App {
        App::new("3", "278d425bdf160c739803", "7ad3773142a6692b25b8")
    }

    fn params(ts: &str, md5: Option<&str>, sig: &str) -> Params {
        let mut p = vec![
            ("auth_key".to_owned(), "278d425bdf160c739803".to_owned()),
            ("auth_timestamp".to_owned(), ts.to_owned()),
            ("auth_version".to_owned(), "1.0".to_owned()),
        ];
        if let Some(m) = md5 {
            p.push(("body_md5".to_owned(), m.to_owned()));
        }
        p.push(("auth_signature".to_owned(), sig.to_owned()));
        p
    }

    const BODY: &str = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
    const SIG: &str = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";
    const MD5: &str = "ec365a775a4cd0599faeb73354201b6f";

    #[test]
    fn the_published_trigger_request_is_accepted_within_the_window() {
        let p = params("1353088179", Some(MD5), SIG);
        assert!(check(&app(), "POST", "/apps/3/events", &p, BODY.as_bytes(), 1353088179 + 599).is_ok());
    }

    #[test]
    fn replayed_timestamps_tampered_bodies_and_wrong_signatures_are_refused() {
        let p = params("1353088179", Some(MD5), SIG);
        let late = check(&app(), "POST", "/apps/3/events", &p, BODY.as_bytes(), 1353088179 + 601);
        assert!(matches!(late, Err(ApiError::TimestampExpired { .. })));
        let tampered = BODY.replace("data", "date");
        let r = check(&app(), "POST", "/apps/3/events", &p, tampered.as_bytes(), 1353088179);
        assert!(matches!(r, Err(ApiError::BodyMd5Mismatch { .. })));
        let other_path = check(&app(), "POST", "/apps/4/events", &p, BODY.as_bytes(), 1353088179);
        assert!(matches!(other_path, Err(ApiError::BadSignature { .. })));
        let no_md5 = params("1353088179", None, SIG);
        let r = check(&app(), "POST", "/apps/3/events", &no_md5, BODY.as_bytes(), 1353088179);
        assert!(matches!(r, Err(ApiError::BodyMd5Mismatch { .. })));
        let mut wrong_key = app();
        wrong_key.key = "other".into();
        let r = check(&wrong_key, "POST", "/apps/3/events", &p, BODY.as_bytes(), 1353088179);
        assert!(matches!(r, Err(ApiError::WrongKey)));
    }
}
