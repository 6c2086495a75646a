//! The connection socket and API operations use: it fails at once while the node is degraded,
//! so no socket ever waits on an unreachable Redis.

use redis::aio::ConnectionManager;

/// A connection that refuses at once while the node is degraded.
pub(super) struct Live {
    pub(super) conn: ConnectionManager,
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
