//! Where the Redis connections come from: one URL (plain or TLS, with a private CA and client
//! certificates), or the primary that Sentinel names — asked again after every Redis failure, so
//! a failover is followed. Both give the same pair of connection managers: one for commands and
//! scripts, one for pub/sub (RESP3 push messages to the bus task).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{IntoConnectionInfo, PushInfo};
use tokio::sync::mpsc::UnboundedSender;

use crate::config::{RedisMode, RedisSettings};

/// The longest a Redis call may take before the node treats Redis as unavailable.
pub(super) const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// How a node reaches its Redis.
pub(super) enum Source {
    /// One address.
    Direct(redis::Client),
    /// The primary of a master name, as the sentinels say.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// The two connections of a node.
#[derive(Clone)]
pub(super) struct Connections {
    /// Commands and scripts.
    pub(super) conn: ConnectionManager,
    /// Pub/sub; messages go to the bus task.
    pub(super) subscriber: ConnectionManager,
}

impl Source {
    pub(super) fn new(settings: &RedisSettings) -> redis::RedisResult<Source> {
        match &settings.mode {
            RedisMode::Standalone => Ok(Source::Direct(client(settings)?)),
            RedisMode::Sentinel { master } => {
                let sentinels: Vec<String> = settings.url.split(',').map(|u| resp3(u.trim())).collect();
                // The data nodes take the sentinels' credentials, database and protocol.
                let first = sentinels[0].as_str().into_connection_info()?;
                let mut node = SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(first.redis_settings().clone());
                if sentinels[0].starts_with("rediss://") {
                    node = node.set_tls_mode(redis::TlsMode::Secure);
                }
                let client =
                    SentinelClient::build(sentinels, master.clone(), Some(node), SentinelServerType::Master)?;
                Ok(Source::Sentinel(tokio::sync::Mutex::new(client)))
            }
        }
    }

    /// Whether the address can change (a failover), so connections are opened anew after a
    /// failure rather than reconnected to the same address.
    pub(super) fn follows_failover(&self) -> bool {
        matches!(self, Source::Sentinel(_))
    }

    /// Opens both connections to the current primary.
    pub(super) async fn open(&self, push: UnboundedSender<PushInfo>) -> redis::RedisResult<Connections> {
        let client = match self {
            Source::Direct(client) => client.clone(),
            Source::Sentinel(sentinel) => {
                let mut sentinel = sentinel.lock().await;
                tokio::time::timeout(REDIS_TIMEOUT * 3, sentinel.async_get_client()).await.map_err(
                    |_| {
                        redis::RedisError::from((
                            redis::ErrorKind::Io,
                            "no sentinel named the primary in time",
                        ))
                    },
                )??
            }
        };
        // Bounded waits: a socket task must never hang on an unreachable Redis.
        let bounded = || {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(REDIS_TIMEOUT))
                .set_response_timeout(Some(REDIS_TIMEOUT))
                .set_number_of_retries(1)
                .set_max_delay(REDIS_TIMEOUT)
        };
        let conn = client.get_connection_manager_with_config(bounded()).await?;
        let config = bounded().set_push_sender(push).set_automatic_resubscription();
        let subscriber = client.get_connection_manager_with_config(config).await?;
        Ok(Connections { conn, subscriber })
    }
}

/// The Redis client of `settings`: plain, or TLS (`rediss://`) with the system's roots or the
/// given CA, and a client certificate for mutual TLS. A file that cannot be read is an error
/// that names it.
fn client(settings: &RedisSettings) -> redis::RedisResult<redis::Client> {
    let url = resp3(&settings.url);
    let tls = &settings.tls;
    if tls.ca_file.is_none() && tls.client.is_none() {
        return redis::Client::open(url);
    }
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "cannot read a TLS file",
                format!("{what} {}: {e}", path.display()),
            ))
        })
    };
    let root_cert = tls.ca_file.as_deref().map(|p| read(p, "--redis-ca-file")).transpose()?;
    let client_tls = match &tls.client {
        Some((cert, key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert, "--redis-cert-file")?,
            client_key: read(key, "--redis-key-file")?,
        }),
        None => None,
    };
    redis::Client::build_with_tls(url.as_str(), redis::TlsCertificates { client_tls, root_cert })
}

fn resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}
