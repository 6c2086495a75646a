//! `pusher:signin`: verifies the signature over `socket_id::user::user_data`, records the user
//! (for `#server-to-user-{id}`, terminate and watchlists), and sends the watchlist's current
//! online / offline state. A failed sign-in closes the socket with 4009.

use std::sync::Arc;

use axum::extract::ws::WebSocket;
use serde::Deserialize;
use serde_json::Value;

use super::{Connection, Ending, Gone};
use crate::protocol::frames;
use crate::protocol::{CloseReason, Signin, WATCHLIST_LIMIT_EXCEEDED};
use crate::signing;

/// The user a socket signed in as.
#[derive(Debug)]
pub(super) struct SignedIn {
    /// User id from `user_data.id`.
    pub id: Arc<str>,
    /// User ids this socket watches (apps with watchlist events).
    pub watchlist: Vec<Arc<str>>,
}

#[derive(Deserialize)]
struct UserData {
    id: Option<Value>,
    #[serde(default)]
    watchlist: Option<Vec<Value>>,
}

fn is_user_id(id: &str, max: usize) -> bool {
    !id.is_empty()
        && id.len() <= max
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '@' | ',' | '.' | ';'))
}

/// Reads a signed `user_data`: a JSON object with a string `id` (channel-name characters, at
/// most `max_id` long) and an optional `watchlist` (its string entries). The error says what
/// is wrong, for the `pusher:error` before the 4009 close.
pub fn parse_user_data(raw: &str, max_id: usize) -> Result<(Arc<str>, Vec<String>), String> {
    let data: UserData =
        serde_json::from_str(raw).map_err(|e| format!("user_data must be a JSON object: {e}"))?;
    let id: Arc<str> = match data.id {
        Some(Value::String(id)) if is_user_id(&id, max_id) => id.into(),
        _ => {
            return Err(format!(
                "user_data.id must be a string of 1 to {max_id} characters A-Z a-z 0-9 _ - = @ , . ;"
            ))
        }
    };
    let watchlist = data
        .watchlist
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| match v {
            Value::String(s) => Some(s),
            _ => None,
        })
        .collect();
    Ok((id, watchlist))
}

impl Connection {
    fn refuse_signin(&mut self, message: String) -> Result<(), Gone> {
        self.ending = Some(Ending::Refused(CloseReason::Unauthorized, message));
        Ok(())
    }

    pub(super) async fn signin(&mut self, socket: &mut WebSocket, signin: Signin) -> Result<(), Gone> {
        let signed = signing::user_string(&self.socket_id, &signin.user_data);
        if let Err(e) = signing::verify_token(&self.app.key, &self.app.secret, &signed, &signin.auth) {
            return self.refuse_signin(format!("Invalid pusher:signin: {e}"));
        }
        let (id, requested_watchlist) =
            match parse_user_data(&signin.user_data, self.app.limits.max_user_id_length) {
                Ok(parsed) => parsed,
                Err(message) => return self.refuse_signin(message),
            };
        if let Some(current) = &self.user {
            if current.id != id {
                let msg = format!("This connection is already signed in as {}", current.id);
                return self.refuse_signin(msg);
            }
            return self.send(socket, frames::signin_success(&signin.user_data)).await;
        }
        let limit = self.app.limits.max_watchlist_size;
        let mut watchlist: Vec<Arc<str>> = Vec::new();
        let mut truncated = false;
        if self.app.watchlist_events {
            for w in requested_watchlist {
                if watchlist.len() == limit {
                    truncated = true;
                    break;
                }
                watchlist.push(w.into());
            }
        }
        let users = &self.state.cluster.users;
        let came_online = users.sign_in(&self.app.id, &id, self.outbox.clone()).await;
        // Recorded at once: if the client goes away from here on, the socket's end signs it out
        // (and unwatches what it watches) instead of leaving an online user behind.
        self.user = Some(SignedIn { id: id.clone(), watchlist: Vec::new() });
        self.auth_deadline = None;
        let sent = self.send(socket, frames::signin_success(&signin.user_data)).await;
        self.announce(came_online.into_iter().collect()).await;
        sent?;
        if truncated {
            let msg = format!("Watchlist limit exceeded: only the first {limit} user ids are watched");
            self.state.metrics.limit_hit(&self.app.id, "max_watchlist_size");
            self.send_error(socket, &msg, Some(WATCHLIST_LIMIT_EXCEEDED)).await?;
        }
        if !watchlist.is_empty() {
            let users = &self.state.cluster.users;
            users.watch(&self.app.id, &watchlist, &self.outbox).await;
            if let Some(user) = self.user.as_mut() {
                user.watchlist = watchlist.clone();
            }
            let online = users.online(&self.app.id, &watchlist).await;
            let (on, off): (Vec<_>, Vec<_>) = watchlist.iter().zip(&online).partition(|(_, o)| **o);
            let on: Vec<&str> = on.into_iter().map(|(id, _)| &**id).collect();
            let off: Vec<&str> = off.into_iter().map(|(id, _)| &**id).collect();
            self.send(socket, frames::watchlist_events(&on, &off)).await?;
        }
        Ok(())
    }

    /// Forgets the sign-in when the socket ends, telling watchers when the user went offline.
    pub(super) async fn sign_out(&mut self) {
        let Some(user) = self.user.take() else { return };
        let users = &self.state.cluster.users;
        if !user.watchlist.is_empty() {
            users.unwatch(&self.app.id, &user.watchlist, &self.socket_id).await;
        }
        let went_offline = users.sign_out(&self.app.id, &user.id, &self.socket_id).await;
        self.announce(went_offline.into_iter().collect()).await;
    }
}
