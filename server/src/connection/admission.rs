//! Who may open a socket: the browser origin check before the upgrade, the protocol version and
//! app checks after it, and the socket id a socket gets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::apps::App;
use crate::protocol::{CloseReason, SUPPORTED_PROTOCOLS};
use crate::state::ServerState;

/// Whether a browser `Origin` may connect: any when the list is empty; otherwise an exact
/// entry, `*`, or a `scheme://*.domain` wildcard. A request without `Origin` (not a browser)
/// is refused when a list is set.
pub(super) fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(origin) = origin else { return false };
    allowed.iter().any(|a| {
        a == "*"
            || a.eq_ignore_ascii_case(origin)
            || a.split_once("*.").is_some_and(|(scheme, domain)| {
                origin.len() > scheme.len() + domain.len()
                    && origin[..scheme.len()].eq_ignore_ascii_case(scheme)
                    && origin.to_ascii_lowercase().ends_with(&format!(".{}", domain.to_ascii_lowercase()))
            })
    })
}

static SOCKET_COUNTER: AtomicU64 = AtomicU64::new(1);

/// A socket id unique on this node; the random half keeps ids of different nodes apart.
pub(super) fn new_socket_id() -> Arc<str> {
    let node: u32 = rand::random::<u32>() % 1_000_000_000;
    format!("{node}.{}", SOCKET_COUNTER.fetch_add(1, Ordering::Relaxed)).into()
}

pub(super) fn admit(state: &ServerState, key: &str, protocol: Option<&str>) -> Result<Arc<App>, CloseReason> {
    let version = protocol.ok_or(CloseReason::NoProtocolVersion)?;
    match version.parse::<u32>() {
        Ok(v) if SUPPORTED_PROTOCOLS.contains(&v) => {}
        _ => return Err(CloseReason::UnsupportedProtocol),
    }
    let app = state.apps.by_key(key).ok_or(CloseReason::AppNotFound)?;
    if !app.enabled {
        return Err(CloseReason::AppDisabled);
    }
    Ok(app)
}
