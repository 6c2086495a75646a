//! Where the Redis connections come from: one URL (plain or TLS, with a private CA and client
//! certificates), the primary that Sentinel names — asked again after every Redis failure, so
//! a failover is followed — or a Redis Cluster found from its seed nodes. Each gives the same pair
//! of connections ([`Conn`]): one for commands and scripts, one for pub/sub (RESP3 push messages
//! to the bus task).

use std::time::Duration;

use redis::aio::ConnectionManagerConfig;
use redis::cluster::ClusterClientBuilder;
use redis::sentinel::{
    SentinelClient, SentinelClientBuilder, SentinelNodeConnectionInfo, SentinelServerType,
};
use redis::{IntoConnectionInfo, PushInfo};
use tokio::sync::mpsc::UnboundedSender;

use super::conn::Conn;
use crate::config::{RedisMode, RedisSettings};

/// The longest a Redis call may take before the node treats Redis as unavailable.
pub(super) const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// How a node reaches its Redis.
pub(super) enum Source {
    /// One address.
    Direct(redis::Client),
    /// The primary of a master name, as the sentinels say.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    /// A Redis Cluster: its seed nodes, and the TLS files' certificates.
    Cluster { seeds: Vec<String>, certs: Option<redis::TlsCertificates> },
}

/// The two connections of a node.
#[derive(Clone)]
pub(super) struct Connections {
    /// Commands and scripts.
    pub(super) conn: Conn,
    /// Pub/sub; messages go to the bus task.
    pub(super) subscriber: Conn,
}

impl Source {
    pub(super) fn new(settings: &RedisSettings) -> redis::RedisResult<Source> {
        match &settings.mode {
            RedisMode::Standalone => Ok(Source::Direct(client(settings)?)),
            RedisMode::Sentinel { master } => {
                let sentinels: Vec<String> = settings.url.split(',').map(|u| resp3(u.trim())).collect();
                if let Some(certs) = certificates(settings)? {
                    return Ok(Source::Sentinel(tokio::sync::Mutex::new(sentinel_with_certs(
                        &sentinels, master, certs,
                    )?)));
                }
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
            RedisMode::Cluster => {
                let seeds: Vec<String> = settings.url.split(',').map(|u| resp3(u.trim())).collect();
                let certs = certificates(settings)?;
                // Fails early on seeds that disagree (passwords, TLS, protocol).
                cluster_builder(&seeds, &certs).build()?;
                Ok(Source::Cluster { seeds, certs })
            }
        }
    }

    /// Whether keys and pub/sub are laid out for a Redis Cluster (see [`super::keys::Keys`]).
    pub(super) fn sharded(&self) -> bool {
        matches!(self, Source::Cluster { .. })
    }
}

/// A Sentinel client for `rediss://` sentinels with a private CA or a client certificate: the
/// same certificates, credentials and database for the sentinels and the data nodes.
fn sentinel_with_certs(
    sentinels: &[String],
    master: &str,
    certs: redis::TlsCertificates,
) -> redis::RedisResult<SentinelClient> {
    let infos: Vec<redis::ConnectionInfo> =
        sentinels.iter().map(|u| u.as_str().into_connection_info()).collect::<Result<_, _>>()?;
    let Some(first) = infos.first().map(|i| i.redis_settings().clone()) else {
        return Err((redis::ErrorKind::InvalidClientConfig, "no sentinel URL").into());
    };
    let addrs = infos.iter().map(|i| i.addr().clone());
    let mut builder = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?
        .set_client_to_redis_protocol(redis::ProtocolVersion::RESP3)
        .set_client_to_redis_db(first.db())
        .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
        .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure)
        .set_client_to_redis_certificates(certs.clone())
        .set_client_to_sentinel_certificates(certs);
    if let Some(user) = first.username() {
        builder = builder.set_client_to_redis_username(user).set_client_to_sentinel_username(user);
    }
    if let Some(password) = first.password() {
        builder = builder.set_client_to_redis_password(password).set_client_to_sentinel_password(password);
    }
    builder.build()
}

/// A Redis Cluster client's settings: RESP3 (pushes), bounded waits, the TLS files.
fn cluster_builder(seeds: &[String], certs: &Option<redis::TlsCertificates>) -> ClusterClientBuilder {
    let builder = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
        .use_protocol(redis::ProtocolVersion::RESP3)
        .connection_timeout(REDIS_TIMEOUT)
        .response_timeout(REDIS_TIMEOUT)
        .retries(2);
    match certs {
        Some(certs) => builder.certs(certs.clone()),
        None => builder,
    }
}

impl Source {
    /// Whether connections are opened anew after a failure rather than left to reconnect: with
    /// Sentinel the primary's address can change; a Redis Cluster client whose every node went
    /// away (a whole cluster restarted) may keep a stale view of the slots, so a fresh one asks
    /// the seeds again.
    pub(super) fn follows_failover(&self) -> bool {
        matches!(self, Source::Sentinel(_) | Source::Cluster { .. })
    }

    /// Opens both connections to the current primary.
    pub(super) async fn open(&self, push: UnboundedSender<PushInfo>) -> redis::RedisResult<Connections> {
        let client = match self {
            Source::Cluster { seeds, certs } => {
                let conn = cluster_builder(seeds, certs).build()?.get_async_connection().await?;
                let subscriber =
                    cluster_builder(seeds, certs).push_sender(push).build()?.get_async_connection().await?;
                return Ok(Connections { conn: Conn::Cluster(conn), subscriber: Conn::Cluster(subscriber) });
            }
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
        Ok(Connections { conn: Conn::Single(conn), subscriber: Conn::Single(subscriber) })
    }
}

/// The Redis client of `settings`: plain, or TLS (`rediss://`) with the system's roots or the
/// given CA, and a client certificate for mutual TLS.
fn client(settings: &RedisSettings) -> redis::RedisResult<redis::Client> {
    let url = resp3(&settings.url);
    match certificates(settings)? {
        None => redis::Client::open(url),
        Some(certs) => redis::Client::build_with_tls(url.as_str(), certs),
    }
}

/// The private CA and client certificate of `settings`, if any. A file that cannot be read is
/// an error that names it.
fn certificates(settings: &RedisSettings) -> redis::RedisResult<Option<redis::TlsCertificates>> {
    let tls = &settings.tls;
    if tls.ca_file.is_none() && tls.client.is_none() {
        return Ok(None);
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
    Ok(Some(redis::TlsCertificates { client_tls, root_cert }))
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
