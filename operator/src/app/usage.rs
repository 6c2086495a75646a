//! Live usage of an app (open connections, occupied channels), read from the cluster's Redis
//! where the server pods keep it, for `status.connections` / `status.channels`.

use std::time::Duration;

use herald_crds::cluster::RedisMode;
use herald_crds::PusherCluster;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use redis::AsyncCommands;

use herald_crds::contract::keys;

use crate::names::{self, REDIS_URL_KEY};

/// Every Redis call gets this long.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The Redis URL of a cluster, from its managed Secret or the user's.
async fn redis_url(client: &Client, cluster: &PusherCluster, namespace: &str) -> Option<String> {
    let (secret, key) = match cluster.spec.redis.mode {
        RedisMode::Managed => (names::redis(&cluster.name_any()), REDIS_URL_KEY.to_owned()),
        RedisMode::External => {
            let r = &cluster.spec.redis.external.as_ref()?.url_secret_ref;
            (r.name.clone(), r.key.clone().unwrap_or_else(|| REDIS_URL_KEY.into()))
        }
    };
    let secret = Api::<Secret>::namespaced(client.clone(), namespace).get_opt(&secret).await.ok()??;
    let raw = secret.data?.remove(&key)?;
    String::from_utf8(raw.0).ok()
}

/// `(connections, channels)` of `app_id`, or `None` when Redis cannot be reached (the operator
/// may run outside the cluster network): the status then keeps its last values.
pub async fn read(
    client: &Client,
    cluster: &PusherCluster,
    namespace: &str,
    app_id: &str,
) -> Option<(i64, i64)> {
    let url = redis_url(client, cluster, namespace).await?;
    let prefix = keys::prefix(namespace, &cluster.name_any());
    let work = async {
        let redis = redis::Client::open(url.as_str()).ok()?;
        let mut conn = redis.get_multiplexed_async_connection().await.ok()?;
        let counts: Vec<i64> = conn.hvals(keys::conns(&prefix, app_id)).await.ok()?;
        let channels: i64 = conn.scard(keys::channels(&prefix, app_id)).await.ok()?;
        Some((counts.iter().sum(), channels))
    };
    match tokio::time::timeout(TIMEOUT, work).await {
        Ok(usage) => usage,
        Err(_) => {
            tracing::debug!(app_id, "Redis did not answer in time: usage not refreshed");
            None
        }
    }
}
