//! The link to Redis: one state ([`LinkState`]: up, rejoining, down) that decides readiness and
//! whether socket operations try Redis at all, and the connection those operations use ([`Live`]),
//! which fails at once while the link is down, so no socket ever waits on an unreachable Redis.

use std::sync::atomic::{AtomicU8, Ordering};

use super::conn::Conn;

/// Where this node stands with Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum LinkState {
    /// Redis answers: the node speaks for the whole cluster and is ready.
    Up = 0,
    /// A resync is republishing this node's state: its own writes go through, but the node is
    /// not ready yet.
    Rejoining = 1,
    /// Redis failed or declared this node dead: socket operations use this node alone, the
    /// node is not ready, and the lease task resyncs when Redis answers.
    Down = 2,
}

/// The link state, shared by every task of the backend.
#[derive(Debug, Default)]
pub(super) struct Link(AtomicU8);

impl Link {
    pub(super) fn get(&self) -> LinkState {
        match self.0.load(Ordering::Acquire) {
            0 => LinkState::Up,
            1 => LinkState::Rejoining,
            _ => LinkState::Down,
        }
    }

    /// Sets `to` only if the state is still `from`; whether it did.
    pub(super) fn replace(&self, from: LinkState, to: LinkState) -> bool {
        self.0.compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Sets the state; returns the one before.
    pub(super) fn set(&self, state: LinkState) -> LinkState {
        match self.0.swap(state as u8, Ordering::AcqRel) {
            0 => LinkState::Up,
            1 => LinkState::Rejoining,
            _ => LinkState::Down,
        }
    }
}

/// A connection that refuses at once while the link is down.
#[derive(Clone)]
pub(super) struct Live {
    pub(super) conn: Conn,
    pub(super) offline: bool,
}

fn offline_error() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "Redis skipped until this node resyncs"))
}

impl redis::aio::ConnectionLike for Live {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        if self.offline {
            return Box::pin(async { Err(offline_error()) });
        }
        self.conn.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        if self.offline {
            return Box::pin(async { Err(offline_error()) });
        }
        self.conn.req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}
