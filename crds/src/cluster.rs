//! `PusherCluster`: one Herald deployment (server pods, their Service, Redis) that apps run on.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a Herald cluster.
// printcolumn(...) repeats `type_ = ...`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "PusherCluster",
    namespaced,
    status = "PusherClusterStatus",
    shortname = "pc",
    category = "herald",
    doc = "A Herald cluster: Pusher-compatible server pods, their Service and Redis.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Redis", type_ = "string", json_path = ".spec.redis.mode"),
    printcolumn(name = "Apps", type_ = "integer", json_path = ".status.apps"),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    cel
)]
#[serde(rename_all = "camelCase")]
pub struct PusherClusterSpec {
    /// Server pods. Ignored while `autoscaling` is set (the HorizontalPodAutoscaler owns it).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Server image; the operator's own version when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `Always`, `IfNotPresent` or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// CPU and memory of each server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How clients and backends reach the servers.
    #[serde(default)]
    pub service: ServiceSpec,
    /// The Redis the server pods share presence, channels and events through.
    #[serde(default)]
    pub redis: RedisSpec,
    /// Server settings every pod gets (see herald-server's configuration reference).
    #[serde(default)]
    pub server: ServerSettings,
    /// PodDisruptionBudget for the server pods.
    #[serde(default)]
    pub pod_disruption_budget: PdbSpec,
    /// A HorizontalPodAutoscaler on CPU; absent: fixed `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// A NetworkPolicy that admits only the client and metrics ports to the servers and only the
    /// servers to Redis.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
    /// TLS on the servers' own port (`wss://`, `https://`) from a `kubernetes.io/tls` Secret
    /// (a cert-manager Certificate's); rotations are picked up without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
    /// Stop every write the operator makes for this cluster (status still reports).
    #[serde(default)]
    pub paused: bool,
}

fn default_replicas() -> i32 {
    2
}

/// Kubernetes image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    /// Pull on every start.
    Always,
    /// Pull when the node lacks the image.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// The Service in front of the server pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `ClusterIP` (default), `NodePort` or `LoadBalancer`.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Port of WebSockets and the HTTP API; 6001 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Annotations on the Service (load balancer settings, for instance).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Kubernetes Service type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Also through a cloud load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Where Redis comes from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.mode != 'External' || has(self.external)",
     "message": "redis.external (a Secret holding the URL) is required when redis.mode is External"},
    {"rule": "self.mode != 'Managed' || !has(self.external)",
     "message": "redis.external is only read when redis.mode is External"}
]))]
pub struct RedisSpec {
    /// `Managed`: the operator runs Redis for this cluster. `External`: use the Redis at the URL
    /// in a Secret.
    #[serde(default)]
    pub mode: RedisMode,
    /// Settings of the managed Redis.
    #[serde(default)]
    pub managed: ManagedRedis,
    /// The external Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRedis>,
}

/// Who runs Redis.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RedisMode {
    /// The operator runs a Redis Deployment, Service and password Secret.
    #[default]
    Managed,
    /// A Redis the user runs, its URL in a Secret.
    External,
}

/// The Redis the operator runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedRedis {
    /// Redis image; `redis:7.4-alpine` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory of the Redis container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// A Redis the user runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.topology) || self.topology != 'Sentinel' || has(self.sentinelMaster)",
     "message": "redis.external.sentinelMaster (the monitored master's name) is required with topology Sentinel"},
    {"rule": "!has(self.sentinelMaster) || (has(self.topology) && self.topology == 'Sentinel')",
     "message": "redis.external.sentinelMaster goes with topology Sentinel only"}
]))]
pub struct ExternalRedis {
    /// The Secret (same namespace) holding the URL, e.g. `redis://:password@redis:6379/0`, or
    /// `rediss://` for TLS; with `Sentinel`, the sentinels' URLs, comma-separated; with
    /// `Cluster`, seed nodes of the Redis Cluster, comma-separated (one is enough).
    pub url_secret_ref: SecretKeyRef,
    /// `Standalone` (one address, the default), `Sentinel` or `Cluster` (Redis Cluster, e.g.
    /// ElastiCache with cluster mode enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<RedisTopology>,
    /// The master name the sentinels monitor (topology `Sentinel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel_master: Option<String>,
    /// A Secret with the PEM CA that signs Redis's certificate (key `ca.crt` when omitted), for
    /// a private CA; without it `rediss://` uses the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`): the client certificate for Redis
    /// with mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_name: Option<String>,
}

/// How an external Redis runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RedisTopology {
    /// One address (a primary, or a managed endpoint that follows failovers itself).
    #[default]
    Standalone,
    /// Sentinels that name the primary.
    Sentinel,
    /// A Redis Cluster: keys and sharded pub/sub spread over its primaries.
    Cluster,
}

/// TLS on the servers' own port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerTls {
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`) in the cluster's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// One key of a Secret in the object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret; `url` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Server settings shared by every pod of the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerSettings {
    /// Seconds of client silence before the server pings (protocol `activity_timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub activity_timeout: Option<u32>,
    /// Bytes of one client WebSocket message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub max_message_size: Option<u32>,
    /// Seconds sockets get to close when a pod stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 600))]
    pub shutdown_grace: Option<u32>,
    /// `echo` (pusher:subscription_error, what Laravel Echo expects) or `pusher`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_dialect: Option<ErrorDialect>,
    /// `tracing` filter, e.g. `info` or `herald_server=debug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

/// How subscription refusals are reported to clients.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErrorDialect {
    /// `pusher:subscription_error`.
    Echo,
    /// `pusher:error`.
    Pusher,
}

/// PodDisruptionBudget settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PdbSpec {
    /// Create the budget.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Server pods that may be down at once during voluntary disruptions.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub max_unavailable: i32,
}

impl Default for PdbSpec {
    fn default() -> Self {
        PdbSpec { enabled: true, max_unavailable: 1 }
    }
}

fn enabled() -> bool {
    true
}

fn one() -> i32 {
    1
}

/// HorizontalPodAutoscaler settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.minReplicas <= self.maxReplicas", "message": "autoscaling.minReplicas must not exceed maxReplicas"}
]))]
pub struct AutoscalingSpec {
    /// Fewest server pods.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most server pods.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU utilisation (percent of requests) the autoscaler aims for.
    #[serde(default = "default_cpu_target")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

fn default_cpu_target() -> i32 {
    70
}

/// NetworkPolicy settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the policies.
    #[serde(default)]
    pub enabled: bool,
}

/// What the operator observed of a cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PusherClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`, `RedisReady`, `ReconciliationPaused`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Server pods that exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Server pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Label selector of the server pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// In-cluster address clients and backends use (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// PusherApps that name this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps: Option<i32>,
}
