//! `PusherApp`: one Pusher app (id, key, secret, switches, limits, webhooks) on a `PusherCluster`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a Pusher app.
// printcolumn(...) repeats `type_ = ...`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "PusherApp",
    namespaced,
    status = "PusherAppStatus",
    shortname = "papp",
    category = "herald",
    doc = "A Pusher app served by a PusherCluster in the same namespace.",
    printcolumn(name = "App ID", type_ = "string", json_path = ".status.appId"),
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterRef"),
    printcolumn(name = "Enabled", type_ = "boolean", json_path = ".spec.enabled"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Connections", type_ = "integer", json_path = ".status.connections"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    cel
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.clusterRef == oldSelf.clusterRef", "message": "clusterRef is immutable; create a new PusherApp to move an app"},
    {"rule": "!has(oldSelf.appId) || (has(self.appId) && self.appId == oldSelf.appId)", "message": "appId is immutable once set"}
]))]
pub struct PusherAppSpec {
    /// Name of the PusherCluster (same namespace) that serves this app.
    #[schemars(length(min = 1, max = 253))]
    pub cluster_ref: String,
    /// Numeric app id, as in `/apps/{appId}/events`; generated (unique in the cluster) when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,20}$"), length(min = 1, max = 20))]
    pub app_id: Option<String>,
    /// A disabled app refuses connections (4003) and API calls (403).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Key and secret: from a Secret you own (`secretRef`, never written by the operator), or
    /// generated once into a Secret the operator owns when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsSpec>,
    /// Whether clients may send `client-` events on private and presence channels.
    #[serde(default)]
    pub client_events: bool,
    /// "Authorized connections": sockets must sign in or join a private channel within the
    /// timeout, or they are closed with 4009.
    #[serde(default)]
    pub user_authentication: bool,
    /// Online/offline events for signed-in users' watchlists.
    #[serde(default = "yes")]
    pub watchlist_events: bool,
    /// `pusher:subscription_count` on non-presence channels.
    #[serde(default)]
    pub subscription_count: bool,
    /// Browser origins allowed to open WebSockets (`https://*.example.com` works); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Limits; each omitted one keeps Herald's default (Pusher's where Pusher has one).
    #[serde(default)]
    pub limits: AppLimits,
    /// Where webhooks go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub webhooks: Vec<WebhookSpec>,
    /// Master key for `private-encrypted-` channels: a Secret key holding 32 bytes in base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_master_key_secret_ref: Option<KeyRef>,
}

fn yes() -> bool {
    true
}

/// Where the app's key and secret come from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSpec {
    /// A Secret you own (kept in Git, sealed-secrets, external-secrets…) with the key and secret.
    pub secret_ref: CredentialsSecretRef,
}

/// A user-owned credentials Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Secret name (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key of the Secret holding the app key; `key` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_key: Option<String>,
    /// Key of the Secret holding the app secret; `secret` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
}

impl CredentialsSecretRef {
    /// The Secret key holding the app key.
    pub fn key_key(&self) -> &str {
        self.key_key.as_deref().unwrap_or(crate::contract::credentials::KEY)
    }

    /// The Secret key holding the app secret.
    pub fn secret_key(&self) -> &str {
        self.secret_key.as_deref().unwrap_or(crate::contract::credentials::SECRET)
    }
}

/// One key of a Secret in the app's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Per-app limits; omitted ones keep the server's defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppLimits {
    /// Concurrent connections; unlimited when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_connections: Option<u64>,
    /// Members of one presence channel (Pusher: 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_presence_members: Option<u32>,
    /// Bytes of an event's data (Pusher: 10240).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_event_data_size: Option<u32>,
    /// Client events per second per connection (Pusher: 10; 0 is unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_events_per_second: Option<u32>,
    /// HTTP API events per second; unlimited when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_backend_events_per_second: Option<u32>,
    /// HTTP API reads per second; unlimited when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_read_requests_per_second: Option<u32>,
}

/// One webhook endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// `http://` or `https://` URL receiving signed `POST`s.
    #[schemars(regex(pattern = r"^https?://.+"))]
    pub url: String,
    /// Event kinds sent there; every kind when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<WebhookEventType>,
    /// Only channels starting with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_prefix: Option<String>,
    /// Only channels ending with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_suffix: Option<String>,
}

// One enum for the CRD, the server's config file and the server's webhook filters (the
// contract); its doc line below is the CRD schema's description.
/// A webhook event kind, spelled as in Pusher's webhook payloads.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEventType {
    /// A channel got its first subscriber.
    ChannelOccupied,
    /// A channel lost its last subscriber.
    ChannelVacated,
    /// A user joined a presence channel.
    MemberAdded,
    /// A user left a presence channel.
    MemberRemoved,
    /// A client event was relayed.
    ClientEvent,
    /// A cache channel was found empty.
    CacheMiss,
    /// A channel's subscriber count changed.
    SubscriptionCount,
}

/// What the operator observed of an app.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PusherAppStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Accepted` (the cluster exists), `CredentialsResolved`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The app id in use (from the spec, or generated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// The public app key (not secret: browsers see it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The Secret holding `key` and `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Open connections across the cluster, last time the operator looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<i64>,
    /// Occupied channels across the cluster, last time the operator looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<i64>,
}
