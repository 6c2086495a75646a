//! The Redis settings of `--cluster redis`: the URL (or the sentinels'), the node id, the lease,
//! the key prefix, TLS files and the topology, validated with every error reported; and the
//! one way a Redis URL is ever printed ([`redacted_url`]).

use std::path::PathBuf;
use std::time::Duration;

use herald_crds::contract::ServerFile;

use super::{check_timer, setting, Cli, ClusterMode};

/// How to reach Redis and who this node is (`--cluster redis`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port/db` (RESP3 is switched on by the backend).
    pub url: String,
    /// This node's name (the pod name in Kubernetes).
    pub node_id: String,
    /// How long a lease lives without renewal. 10 s: renewed every 3.3 s, so two missed
    /// renewals are survived, and a crashed node is cleaned up within about 15 s.
    pub lease_ttl: Duration,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// TLS material beyond the system's roots, for `rediss://` URLs.
    pub tls: RedisTls,
    /// One Redis, a primary found (and followed) through Sentinel, or a Redis Cluster.
    pub mode: RedisMode,
}

/// How Redis runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RedisMode {
    /// One Redis (or a primary behind a stable address): `url` is it.
    #[default]
    Standalone,
    /// `url` lists the sentinels (comma-separated); the primary of `master` is asked of them at
    /// start and again after every Redis failure, so a failover is followed.
    Sentinel {
        /// The master name the sentinels monitor.
        master: String,
    },
    /// A Redis Cluster: `url` lists seed nodes (comma-separated); the rest of the cluster, and
    /// which primary owns which slot, is learned from them and followed through resharding and
    /// failovers.
    Cluster,
}

/// TLS files for Redis: a private CA, and a client certificate for mutual TLS. Read (and
/// checked) when the node connects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// PEM CA certificate(s) that sign the server's certificate; none: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and its key.
    pub client: Option<(PathBuf, PathBuf)>,
}

fn default_node_id() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("node-{:08x}", rand::random::<u32>()))
}

/// A Redis URL fit to print: its password (and a user name's) replaced by `***`. Logs, errors
/// and the banner only ever show this form.
pub fn redacted_url(url: &str) -> String {
    if url.contains(',') {
        return url.split(',').map(|u| redacted_url(u.trim())).collect::<Vec<_>>().join(",");
    }
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        // Not a URL: show its scheme at most, never what might be a secret.
        Err(_) => match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://…"),
            None => "(not a URL)".to_owned(),
        },
    }
}

pub(super) fn cluster_mode(errors: &mut Vec<String>, cli: &Cli, file: &mut ServerFile) -> ClusterMode {
    let mode: Option<String> = cli.cluster.clone().or(file.cluster.take());
    let url: Option<String> = cli.redis_url.clone().or(file.redis_url.take());
    let node_id: Option<String> = cli.node_id.clone().or(file.node_id.take());
    let ttl = setting(errors, "lease_ttl", cli.lease_ttl.as_deref(), file.lease_ttl, 10u64);
    let prefix: String = cli.redis_prefix.clone().or(file.redis_prefix.take()).unwrap_or("herald".into());
    let ca_file = cli.redis_ca_file.clone().or(file.redis_ca_file.take().map(PathBuf::from));
    let cert_file = cli.redis_cert_file.clone().or(file.redis_cert_file.take().map(PathBuf::from));
    let key_file = cli.redis_key_file.clone().or(file.redis_key_file.take().map(PathBuf::from));
    let client = match (cert_file, key_file) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            errors.push("--redis-cert-file and --redis-key-file go together (mutual TLS)".into());
            None
        }
    };
    let tls = RedisTls { ca_file, client };
    let redis_mode: Option<String> = cli.redis_mode.clone().or(file.redis_mode.take());
    let sentinel_master: Option<String> =
        cli.redis_sentinel_master.clone().or(file.redis_sentinel_master.take()).filter(|m| !m.is_empty());
    let redis_mode = match (redis_mode.as_deref(), sentinel_master) {
        (None | Some("standalone"), None) => RedisMode::Standalone,
        (None | Some("standalone"), Some(_)) => {
            errors.push("--redis-sentinel-master needs --redis-mode sentinel".into());
            RedisMode::Standalone
        }
        (Some("sentinel"), Some(master)) => RedisMode::Sentinel { master },
        (Some("sentinel"), None) => {
            errors.push(
                "--redis-mode sentinel needs --redis-sentinel-master (the monitored master's name)".into(),
            );
            RedisMode::Standalone
        }
        (Some("cluster"), None) => RedisMode::Cluster,
        (Some("cluster"), Some(_)) => {
            errors.push("--redis-sentinel-master needs --redis-mode sentinel, not cluster".into());
            RedisMode::Cluster
        }
        (Some(other), _) => {
            errors.push(format!("redis_mode: expected 'standalone', 'sentinel' or 'cluster', got {other:?}"));
            RedisMode::Standalone
        }
    };
    match mode.as_deref() {
        None | Some("local") => {
            if url.is_some() {
                errors.push("redis_url is set but cluster is not 'redis' (add --cluster redis)".into());
            }
            ClusterMode::Local
        }
        Some("redis") => {
            let Some(url) = url else {
                errors.push("--cluster redis needs --redis-url (HERALD_REDIS_URL)".into());
                return ClusterMode::Local;
            };
            let urls: Vec<&str> = url.split(',').map(str::trim).collect();
            if urls.len() > 1 && redis_mode == RedisMode::Standalone {
                errors.push(
                    "redis_url lists several URLs: that is --redis-mode sentinel (the sentinels) or \
                     --redis-mode cluster (seed nodes)"
                        .into(),
                );
            }
            for one in &urls {
                if !(one.starts_with("redis://") || one.starts_with("rediss://")) {
                    errors.push(format!(
                        "redis_url must start with redis:// or rediss://, got {:?}",
                        redacted_url(one)
                    ));
                }
            }
            let node_id = node_id.unwrap_or_else(default_node_id);
            if node_id.is_empty()
                || !node_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                errors.push(format!("node_id {node_id:?} must be non-empty and use only A-Z a-z 0-9 - _ ."));
            }
            if ttl < 3 {
                errors.push("lease_ttl: must be at least 3 seconds".into());
            }
            check_timer(errors, "lease_ttl", Duration::from_secs(ttl));
            if tls != RedisTls::default() && !urls.iter().all(|u| u.starts_with("rediss://")) {
                errors.push(
                    "--redis-ca-file, --redis-cert-file and --redis-key-file need a rediss:// URL".into(),
                );
            }
            if prefix.is_empty() || prefix.contains(['{', '}', ' ']) {
                errors.push(format!("redis_prefix {prefix:?} must be non-empty without braces or spaces"));
            }
            ClusterMode::Redis(RedisSettings {
                url,
                node_id,
                lease_ttl: Duration::from_secs(ttl),
                prefix,
                tls,
                mode: redis_mode,
            })
        }
        Some(other) => {
            errors.push(format!("cluster: expected 'local' or 'redis', got {other:?}"));
            ClusterMode::Local
        }
    }
}
