//! The contract between the operator and the server pods it runs, kept in one place both
//! crates depend on so that no format can drift: the server's config file ([`ServerFile`]),
//! the Redis key schema the operator reads live usage from ([`keys`]), the credentials Secret
//! layout ([`credentials`]), and the webhook event kinds ([`WebhookEventType`], the same enum
//! in a PusherApp and in the server).

use serde::{Deserialize, Serialize};

pub use crate::app::WebhookEventType;

/// The server-wide keys of `herald.toml` (every key but `[[apps]]`). The operator serializes
/// it into the ConfigMap the pods mount; the server parses its file with it, so an unknown key
/// is an error on both sides.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// Address to listen on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<std::net::IpAddr>,
    /// WebSocket and HTTP API port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Port of `/metrics`, `/healthz`, `/readyz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_port: Option<u16>,
    /// Seconds of client silence before the server pings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_timeout: Option<u64>,
    /// Seconds to wait for the pong before closing with 4201.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pong_timeout: Option<u64>,
    /// `echo` or `pusher`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_dialect: Option<String>,
    /// Frames queued for one socket before it is a slow consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued_messages: Option<usize>,
    /// Webhook events waiting for the sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_queue_size: Option<usize>,
    /// Webhook requests in flight or waiting to retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_webhooks: Option<usize>,
    /// Largest client WebSocket message, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<usize>,
    /// Largest HTTP API request body, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_size: Option<usize>,
    /// Seconds sockets get to close on shutdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<u64>,
    /// Seconds over which the shutdown's 4200 closes are spread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_spread: Option<u64>,
    /// Serve the debug console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<bool>,
    /// Open connections allowed from one IP address; 0 is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<usize>,
    /// Seconds a connection gets to send a complete request head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_timeout: Option<u64>,
    /// PEM certificate (chain) for TLS on the public port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<String>,
    /// PEM private key of `tls_cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<String>,
    /// `local` or `redis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Redis URL (the operator passes it as `HERALD_REDIS_URL` from a Secret instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// This node's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Seconds a node's lease lives without renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<u64>,
    /// Prefix of every Redis key and channel ([`keys::prefix`] for operator-run clusters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_prefix: Option<String>,
    /// `standalone` (one Redis, the default), `sentinel` (`redis_url` lists the sentinels) or
    /// `cluster` (`redis_url` lists seed nodes of a Redis Cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_mode: Option<String>,
    /// The master name the sentinels monitor (`redis_mode = "sentinel"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_sentinel_master: Option<String>,
    /// PEM file of a private CA that signs the Redis server's certificate (`rediss://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_ca_file: Option<String>,
    /// PEM file of a client certificate for Redis (mutual TLS), with `redis_key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_cert_file: Option<String>,
    /// PEM file of the client certificate's private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_key_file: Option<String>,
}

/// The Redis key schema, as far as anyone but the server reads it. Every per-app key carries
/// the app id in a hash tag (`{app}`), so all of an app's keys live in one Redis Cluster slot.
pub mod keys {
    /// Prefix of every key of an operator-run cluster: one Redis may serve several clusters.
    pub fn prefix(namespace: &str, cluster: &str) -> String {
        format!("herald:{namespace}:{cluster}")
    }

    /// HASH incarnation → open connections of an app.
    pub fn conns(prefix: &str, app: &str) -> String {
        format!("{prefix}:{{{app}}}:conns")
    }

    /// SET of an app's occupied channels.
    pub fn channels(prefix: &str, app: &str) -> String {
        format!("{prefix}:{{{app}}}:channels")
    }
}

/// The Secret an app's credentials are in, for the operator (which reads or generates it) and
/// the server pods (which read it live).
pub mod credentials {
    /// Secret key holding an app's key (also the default `keyKey`).
    pub const KEY: &str = "key";
    /// Secret key holding an app's secret (also the default `secretKey`).
    pub const SECRET: &str = "secret";
    /// Secret key holding the app id, in Secrets the operator generates.
    pub const APP_ID: &str = "appId";

    /// Label a user's Secret must carry (value `true`) before Herald reads it or lets the server
    /// pods read it: naming a Secret in a PusherApp is not enough, or whoever may manage
    /// PusherApps could read any Secret of the namespace through `status.key`.
    pub const OPT_IN_LABEL: &str = "herald.dev/credentials";

    /// Whether a Secret's labels opt it in (or it is one the operator generated).
    pub fn opted_in(labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
        labels.is_some_and(|l| {
            l.get(OPT_IN_LABEL).is_some_and(|v| v == "true")
                || l.get("herald.dev/generated").is_some_and(|v| v == "true")
        })
    }

    /// Name of the Secret the operator generates for an app that names none.
    pub fn generated_name(app: &str) -> String {
        format!("{app}-credentials")
    }

    /// Name of the Secret holding an app's key and secret: the one it names, else the one the
    /// operator generates.
    pub fn secret_name(app: &crate::PusherApp) -> String {
        match &app.spec.credentials {
            Some(c) => c.secret_ref.name.clone(),
            None => generated_name(&kube::ResourceExt::name_any(app)),
        }
    }

    /// A credential value as stored: present, UTF-8 text, not empty, no whitespace (a trailing
    /// newline from `echo` is the usual mistake). The error says which, naming the Secret.
    pub fn value(secret: &str, data: Option<&[u8]>, key: &str) -> Result<String, String> {
        let raw = data.ok_or_else(|| format!("Secret {secret} has no key {key:?}"))?;
        let value = String::from_utf8(raw.to_vec())
            .map_err(|_| format!("Secret {secret} key {key:?} is not UTF-8 text"))?;
        if value.is_empty() || value.chars().any(char::is_whitespace) {
            return Err(format!(
                "Secret {secret} key {key:?} is empty or contains whitespace (a trailing newline?)"
            ));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_and_absent_ones_are_left_out() {
        let file = ServerFile { port: Some(6001), cluster: Some("redis".into()), ..ServerFile::default() };
        let json = serde_json::to_value(&file).unwrap();
        assert_eq!(json, serde_json::json!({ "port": 6001, "cluster": "redis" }));
        let err = serde_json::from_value::<ServerFile>(serde_json::json!({ "colour": "red" })).unwrap_err();
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn credential_values_are_checked_the_same_way_everywhere() {
        assert_eq!(credentials::value("s", Some(b"abc"), "key"), Ok("abc".to_owned()));
        assert!(credentials::value("s", None, "key").unwrap_err().contains("has no key"));
        assert!(credentials::value("s", Some(b"abc\n"), "key").unwrap_err().contains("whitespace"));
        assert!(credentials::value("s", Some(&[0xff]), "key").unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn every_key_of_an_app_is_in_its_hash_slot() {
        let prefix = keys::prefix("chat", "realtime");
        assert_eq!(keys::conns(&prefix, "7"), "herald:chat:realtime:{7}:conns");
        assert_eq!(keys::channels(&prefix, "7"), "herald:chat:realtime:{7}:channels");
    }
}
