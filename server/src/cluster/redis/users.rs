//! The Redis side of signed-in users (online / offline decided by the `user_in` / `user_out`
//! scripts), watchers and terminate (over the control channel), and cache channels.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use redis::AsyncCommands;

use super::keys::Entry;
use super::{bus, RedisCluster};
use crate::cluster::{Cache, Transition, Users};
use crate::outbox::Outbox;
use crate::protocol::CloseReason;

#[async_trait]
impl Users for RedisCluster {
    async fn sign_in(&self, app_id: &str, user_id: &Arc<str>, outbox: Outbox) -> Option<Transition> {
        let _gate = self.inner.gate.read().await;
        let local_first = self.inner.registry.sign_in(app_id, user_id, outbox);
        let k = &self.inner.keys;
        let me = self.incarnation();
        let mut live = self.live();
        let result: redis::RedisResult<i64> = match self.enter_app(&mut live, &me, app_id).await {
            Ok(()) => {
                self.inner
                    .scripts
                    .user_in
                    .key(k.users(app_id))
                    .key(k.umem(app_id, &me))
                    .key(k.nodekeys(app_id, &me))
                    .key(k.alive(app_id, &me))
                    .arg(&**user_id)
                    .arg(Entry::Users(app_id).encode())
                    .arg(1)
                    .invoke_async(&mut live)
                    .await
            }
            Err(e) => Err(e),
        };
        let first = match result {
            Ok(first) => first == 1,
            Err(e) => {
                self.degrade("sign in", &e);
                local_first
            }
        };
        first.then(|| Transition::UserOnline { user_id: user_id.clone() })
    }

    async fn sign_out(&self, app_id: &str, user_id: &Arc<str>, socket_id: &str) -> Option<Transition> {
        let _gate = self.inner.gate.read().await;
        let local_last = self.inner.registry.sign_out(app_id, user_id, socket_id);
        let k = &self.inner.keys;
        let result: redis::RedisResult<i64> = self
            .inner
            .scripts
            .user_out
            .key(k.users(app_id))
            .key(k.umem(app_id, &self.incarnation()))
            .arg(&**user_id)
            .invoke_async(&mut self.live())
            .await;
        let last = match result {
            Ok(last) => last == 1,
            Err(e) => {
                self.degrade("sign out", &e);
                local_last
            }
        };
        last.then(|| Transition::UserOffline { user_id: user_id.clone() })
    }

    async fn online(&self, app_id: &str, user_ids: &[Arc<str>]) -> Vec<bool> {
        let ids: Vec<&str> = user_ids.iter().map(|u| &**u).collect();
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.inner.keys.users(app_id)).arg(&ids);
        let result: redis::RedisResult<Vec<Option<i64>>> = cmd.query_async(&mut self.live()).await;
        match result {
            Ok(counts) => counts.into_iter().map(|c| c.unwrap_or(0) > 0).collect(),
            Err(e) => {
                self.degrade("online", &e);
                user_ids.iter().map(|u| self.inner.registry.is_signed_in(app_id, u)).collect()
            }
        }
    }

    async fn terminate_user(&self, app_id: &str, user_id: &str) {
        self.inner.registry.close_user(app_id, user_id, CloseReason::Unauthorized);
        self.control(bus::terminate(&self.incarnation(), app_id, user_id)).await;
    }

    async fn watch(&self, app_id: &str, user_ids: &[Arc<str>], outbox: &Outbox) {
        self.inner.registry.watch(app_id, user_ids, outbox);
    }

    async fn unwatch(&self, app_id: &str, user_ids: &[Arc<str>], socket_id: &str) {
        self.inner.registry.unwatch(app_id, user_ids, socket_id);
    }

    async fn notify_watchers(&self, app_id: &str, user_id: &str, frame: Utf8Bytes, except: Option<&str>) {
        self.inner.registry.notify_watchers(app_id, user_id, &frame);
        let sender = bus::sender(&self.incarnation(), except);
        self.control(bus::watchers(&sender, app_id, user_id, frame.as_str())).await;
    }

    async fn notify_watchers_elsewhere(&self, app_id: &str, user_id: &str, frame: Utf8Bytes) {
        self.control(bus::watchers(&self.incarnation(), app_id, user_id, frame.as_str())).await;
    }
}

#[async_trait]
impl Cache for RedisCluster {
    async fn cache_set(&self, app_id: &str, channel: &str, frame: Utf8Bytes, ttl: Duration) {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let result: redis::RedisResult<()> =
            self.live().pset_ex(self.inner.keys.cache(app_id, channel), frame.as_str(), ms).await;
        if let Err(e) = result {
            self.degrade("cache set", &e);
        }
    }

    async fn cache_get(&self, app_id: &str, channel: &str) -> Option<Utf8Bytes> {
        let result: redis::RedisResult<Option<String>> =
            self.live().get(self.inner.keys.cache(app_id, channel)).await;
        match result {
            Ok(hit) => hit.map(Utf8Bytes::from),
            Err(e) => {
                self.degrade("cache get", &e);
                None
            }
        }
    }
}
