//! The webhook journal in Redis: each request being delivered is kept in its incarnation's
//! `hooks` hash (a node-level key) from before its first attempt until it is delivered
//! or given up, so that the node cleaning up after a dead incarnation finishes its requests —
//! with the same ids, so receivers can drop a repeat.

use async_trait::async_trait;

use super::RedisCluster;
use crate::webhooks::{Journal, StoredRequest};

#[async_trait]
impl Journal for RedisCluster {
    async fn record(&self, request: &StoredRequest) -> Option<String> {
        let json = serde_json::to_string(request).ok()?;
        let me = self.incarnation();
        let place = self.inner.keys.hooks(&me);
        let result: redis::RedisResult<()> =
            redis::cmd("HSET").arg(&place).arg(&request.id).arg(json).query_async(&mut self.live()).await;
        match result {
            Ok(()) => Some(place),
            Err(e) => {
                // Sent all the same; only a takeover is lost if this node dies meanwhile.
                self.degrade("record a webhook", &e);
                None
            }
        }
    }

    async fn done(&self, place: &str, id: &str) {
        let result: redis::RedisResult<i64> =
            redis::cmd("HDEL").arg(place).arg(id).query_async(&mut self.live()).await;
        if let Err(e) = result {
            self.degrade("forget a webhook", &e);
        }
    }
}
