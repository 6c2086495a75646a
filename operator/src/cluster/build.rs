//! Pure builders: a [`ValidatedCluster`] in, one builder per Kubernetes object it needs out.
//! No I/O, so every rule here is unit-tested without a cluster.

use std::collections::BTreeMap;

use herald_crds::cluster::{ErrorDialect, RedisMode, RedisTopology};
use herald_crds::contract::{keys, ServerFile};
use herald_crds::PusherCluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::ByteString;
use serde::de::DeserializeOwned;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::labels::{self, Component};
pub use crate::names::{self, REDIS_PASSWORD_KEY, REDIS_URL_KEY};
use crate::{Error, Result};

pub use super::validate::{validate, ValidatedCluster};

/// WebSocket and HTTP API port inside the pod.
pub const SERVER_PORT: i32 = 6001;
/// `/metrics`, `/healthz`, `/readyz` port inside the pod.
pub const METRICS_PORT: i32 = 9601;
/// Redis port.
pub const REDIS_PORT: i32 = 6379;
/// Default managed Redis image.
pub const REDIS_IMAGE: &str = "redis:7.4-alpine";
/// Seconds a stopping pod keeps serving before SIGTERM, so endpoints drop it first.
pub const PRE_STOP_SLEEP: i64 = 5;
/// Default server `shutdown_grace`.
const SHUTDOWN_GRACE: u32 = 10;
/// Non-root user of the server and Redis containers.
const RUN_AS_USER: i64 = 65532;

/// Everything `build` needs that is not in the cluster's spec: read from the API beforehand.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    /// Image when the spec names none.
    pub default_image: String,
    /// Secrets the server pods may read: those the cluster's PusherApps name. Sorted.
    pub app_secrets: Vec<String>,
    /// Hash of the external Redis URL Secret's data, so a changed URL rolls the pods.
    pub external_redis_hash: Option<String>,
}

/// The objects of one cluster, in apply order (identity and config before the pods that use
/// them). Optional objects are `None` when switched off, and are deleted if they exist.
#[derive(Debug, Clone)]
pub struct Resources {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub config_map: ConfigMap,
    pub redis: Option<RedisResources>,
    pub deployment: Deployment,
    pub service: Service,
    pub metrics_service: Service,
    pub pdb: Option<PodDisruptionBudget>,
    pub hpa: Option<HorizontalPodAutoscaler>,
    pub network_policies: Option<[NetworkPolicy; 2]>,
}

/// The managed Redis.
#[derive(Debug, Clone)]
pub struct RedisResources {
    pub deployment: Deployment,
    pub service: Service,
}

fn from_json<T: DeserializeOwned>(what: &'static str, value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).map_err(|source| Error::Serialize { what, source })
}

fn name_of(cluster: &PusherCluster) -> Result<String> {
    cluster.metadata.name.clone().ok_or(Error::MissingMeta("name"))
}

/// The server's `herald.toml`: server settings only; apps come from the PusherApps. Written
/// from the contract's [`ServerFile`], the struct the server parses its file with.
pub fn server_config(cluster: &PusherCluster) -> Result<String> {
    let s = &cluster.spec.server;
    let name = name_of(cluster)?;
    let namespace = cluster.metadata.namespace.clone().ok_or(Error::MissingMeta("namespace"))?;
    let file = ServerFile {
        port: Some(SERVER_PORT as u16),
        metrics_port: Some(METRICS_PORT as u16),
        activity_timeout: s.activity_timeout.map(u64::from),
        max_message_size: s.max_message_size.map(|m| m as usize),
        shutdown_grace: Some(u64::from(s.shutdown_grace.unwrap_or(SHUTDOWN_GRACE))),
        error_dialect: s.error_dialect.map(|d| {
            match d {
                ErrorDialect::Echo => "echo",
                ErrorDialect::Pusher => "pusher",
            }
            .to_owned()
        }),
        cluster: Some("redis".into()),
        // One Redis may serve several clusters (external mode): keep their keys apart.
        redis_prefix: Some(keys::prefix(&namespace, &name)),
        ..ServerFile::default()
    };
    Ok(toml::to_string(&with_secret_files(file, cluster))?)
}

/// Where a Secret the pods need as files is mounted, and what the config file calls them.
pub struct SecretFiles {
    /// Volume name.
    pub volume: &'static str,
    /// The Secret.
    pub secret: String,
    /// (key in the Secret, file name in the mount).
    pub items: Vec<(String, &'static str)>,
    /// Mount directory.
    pub dir: &'static str,
}

/// Secrets the server pods read as files: the external Redis's CA and client certificate, and
/// the servers' own TLS certificate. A rotated Secret is re-read by the servers in place.
pub fn secret_files(cluster: &PusherCluster) -> Vec<SecretFiles> {
    let spec = &cluster.spec;
    let mut out = Vec::new();
    if let (RedisMode::External, Some(ext)) = (spec.redis.mode, &spec.redis.external) {
        if let Some(ca) = &ext.ca_secret_ref {
            let key = ca.key.clone().unwrap_or_else(|| "ca.crt".into());
            out.push(SecretFiles {
                volume: "redis-ca",
                secret: ca.name.clone(),
                items: vec![(key, "ca.crt")],
                dir: REDIS_CA_DIR,
            });
        }
        if let Some(name) = &ext.client_cert_secret_name {
            let items = vec![("tls.crt".into(), "tls.crt"), ("tls.key".into(), "tls.key")];
            out.push(SecretFiles {
                volume: "redis-client",
                secret: name.clone(),
                items,
                dir: REDIS_CLIENT_DIR,
            });
        }
    }
    if let Some(tls) = &spec.tls {
        let items = vec![("tls.crt".into(), "tls.crt"), ("tls.key".into(), "tls.key")];
        out.push(SecretFiles { volume: "tls", secret: tls.secret_name.clone(), items, dir: SERVER_TLS_DIR });
    }
    out
}

/// Mount directory of the external Redis's CA.
const REDIS_CA_DIR: &str = "/etc/herald-redis-ca";
/// Mount directory of the Redis client certificate.
const REDIS_CLIENT_DIR: &str = "/etc/herald-redis-client";
/// Mount directory of the servers' own certificate.
const SERVER_TLS_DIR: &str = "/etc/herald-tls";

/// The config file's keys for the Redis topology and the mounted files.
fn with_secret_files(mut file: ServerFile, cluster: &PusherCluster) -> ServerFile {
    let spec = &cluster.spec;
    if let (RedisMode::External, Some(ext)) = (spec.redis.mode, &spec.redis.external) {
        match ext.topology {
            Some(RedisTopology::Sentinel) => {
                file.redis_mode = Some("sentinel".into());
                file.redis_sentinel_master = ext.sentinel_master.clone();
            }
            Some(RedisTopology::Cluster) => file.redis_mode = Some("cluster".into()),
            Some(RedisTopology::Standalone) | None => {}
        }
    }
    for mount in secret_files(cluster) {
        match mount.dir {
            REDIS_CA_DIR => file.redis_ca_file = Some(format!("{REDIS_CA_DIR}/ca.crt")),
            REDIS_CLIENT_DIR => {
                file.redis_cert_file = Some(format!("{REDIS_CLIENT_DIR}/tls.crt"));
                file.redis_key_file = Some(format!("{REDIS_CLIENT_DIR}/tls.key"));
            }
            _ => {
                file.tls_cert_file = Some(format!("{SERVER_TLS_DIR}/tls.crt"));
                file.tls_key_file = Some(format!("{SERVER_TLS_DIR}/tls.key"));
            }
        }
    }
    file
}

/// Hash of everything a pod reads only at start: the config file and where Redis is.
pub fn config_hash(config: &str, cluster: &PusherCluster, inputs: &Inputs) -> String {
    let mut h = Sha256::new();
    h.update(config.as_bytes());
    h.update(format!("{:?}", cluster.spec.redis).as_bytes());
    h.update(cluster.spec.server.log_level.as_deref().unwrap_or("").as_bytes());
    if let Some(external) = &inputs.external_redis_hash {
        h.update(external.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// Builds every object of the cluster: [`validate`], then one builder per object.
pub fn build(cluster: &PusherCluster, inputs: &Inputs) -> Result<Resources> {
    let v = validate(cluster, inputs)?;
    Ok(Resources {
        service_account: service_account(&v)?,
        role: role(&v)?,
        role_binding: role_binding(&v)?,
        config_map: config_map(&v)?,
        redis: match v.spec.redis.mode {
            RedisMode::Managed => Some(redis_resources(v.cluster, &v.name)?),
            RedisMode::External => None,
        },
        deployment: deployment(&v)?,
        service: service(&v)?,
        metrics_service: metrics_service(&v)?,
        pdb: pdb(&v)?,
        hpa: hpa(&v)?,
        network_policies: network_policies(&v)?,
    })
}

/// Standard metadata of one of the cluster's objects.
fn meta(v: &ValidatedCluster, object_name: String, component: Component) -> serde_json::Value {
    json!({ "name": object_name, "labels": labels::standard(&v.name, component) })
}

fn service_account(v: &ValidatedCluster) -> Result<ServiceAccount> {
    from_json("ServiceAccount", json!({ "metadata": meta(v, names::server(&v.name), Component::Server) }))
}

/// The pods read their cluster's PusherApps and exactly the Secrets those name: never every
/// Secret (an empty resourceNames list would mean all of them, so the rule is left out).
fn role(v: &ValidatedCluster) -> Result<Role> {
    let mut rules = vec![json!({
        "apiGroups": [herald_crds::GROUP], "resources": ["pusherapps"], "verbs": ["get", "list", "watch"]
    })];
    if !v.app_secrets.is_empty() {
        rules.push(json!({
            "apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"],
            "resourceNames": v.app_secrets
        }));
    }
    from_json(
        "Role",
        json!({ "metadata": meta(v, names::server(&v.name), Component::Server), "rules": rules }),
    )
}

fn role_binding(v: &ValidatedCluster) -> Result<RoleBinding> {
    from_json(
        "RoleBinding",
        json!({
            "metadata": meta(v, names::server(&v.name), Component::Server),
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": names::server(&v.name) },
            "subjects": [{ "kind": "ServiceAccount", "name": names::server(&v.name) }]
        }),
    )
}

fn config_map(v: &ValidatedCluster) -> Result<ConfigMap> {
    from_json(
        "ConfigMap",
        json!({ "metadata": meta(v, names::server(&v.name), Component::Server), "data": { "herald.toml": v.config } }),
    )
}

fn deployment(v: &ValidatedCluster) -> Result<Deployment> {
    let (name, spec) = (&v.name, v.spec);
    let server_selector = labels::selector(name, Component::Server);
    let redis_url_env = json!({ "name": v.redis_url_secret.0, "key": v.redis_url_secret.1 });
    let grace = i64::from(spec.server.shutdown_grace.unwrap_or(SHUTDOWN_GRACE));
    let resources = match &spec.resources {
        Some(r) => {
            serde_json::to_value(r).map_err(|source| Error::Serialize { what: "resources", source })?
        }
        None => json!({ "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "memory": "512Mi" } }),
    };
    let mut env = vec![
        json!({ "name": "HERALD_REDIS_URL", "valueFrom": { "secretKeyRef": redis_url_env } }),
        json!({ "name": "HERALD_NODE_ID", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }),
    ];
    if let Some(level) = &spec.server.log_level {
        env.push(json!({ "name": "RUST_LOG", "value": level }));
    }
    let mut container = json!({
        "name": "herald-server",
        "image": v.image,
        "args": ["--config", "/etc/herald/herald.toml", "--apps", "kubernetes",
                 "--cluster-name", name, "--namespace", v.namespace],
        "env": env,
        "ports": [
            { "name": "http", "containerPort": SERVER_PORT, "protocol": "TCP" },
            { "name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP" }
        ],
        "readinessProbe": { "httpGet": { "path": "/readyz", "port": "metrics" }, "periodSeconds": 5, "failureThreshold": 2 },
        "livenessProbe": { "httpGet": { "path": "/healthz", "port": "metrics" }, "periodSeconds": 10, "failureThreshold": 3 },
        "lifecycle": { "preStop": { "sleep": { "seconds": PRE_STOP_SLEEP } } },
        "resources": resources,
        "securityContext": container_security(),
        "volumeMounts": [{ "name": "config", "mountPath": "/etc/herald", "readOnly": true }]
    });
    let mut volumes = vec![json!({ "name": "config", "configMap": { "name": names::server(name) } })];
    for files in secret_files(v.cluster) {
        let items: Vec<_> =
            files.items.iter().map(|(key, path)| json!({ "key": key, "path": path })).collect();
        volumes
            .push(json!({ "name": files.volume, "secret": { "secretName": files.secret, "items": items } }));
        if let Some(mounts) = container["volumeMounts"].as_array_mut() {
            mounts.push(json!({ "name": files.volume, "mountPath": files.dir, "readOnly": true }));
        }
    }
    if let Some(policy) = spec.image_pull_policy {
        container["imagePullPolicy"] = policy.as_str().into();
    }
    let mut deployment_spec = json!({
        "selector": { "matchLabels": server_selector },
        "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } },
        "template": {
            "metadata": { "labels": labels::standard(name, Component::Server), "annotations": { labels::CONFIG_HASH: v.config_hash } },
            "spec": {
                "serviceAccountName": names::server(name),
                "terminationGracePeriodSeconds": grace + PRE_STOP_SLEEP + 5,
                "securityContext": pod_security(),
                "topologySpreadConstraints": [{
                    "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": { "matchLabels": server_selector }
                }],
                "containers": [container],
                "volumes": volumes
            }
        }
    });
    // With an autoscaler the HPA owns the replica count: leaving the field out of our apply
    // means we never fight it.
    if spec.autoscaling.is_none() {
        deployment_spec["replicas"] = spec.replicas.into();
    }
    from_json(
        "Deployment",
        json!({ "metadata": meta(v, names::server(name), Component::Server), "spec": deployment_spec }),
    )
}

fn service(v: &ValidatedCluster) -> Result<Service> {
    let mut service_meta = meta(v, names::server(&v.name), Component::Server);
    if !v.spec.service.annotations.is_empty() {
        service_meta["annotations"] = json!(v.spec.service.annotations);
    }
    from_json(
        "Service",
        json!({
            "metadata": service_meta,
            "spec": {
                "type": v.spec.service.type_.as_str(),
                "selector": labels::selector(&v.name, Component::Server),
                "ports": [{ "name": "http", "port": v.spec.service.port.unwrap_or(SERVER_PORT), "targetPort": "http", "protocol": "TCP" }]
            }
        }),
    )
}

fn metrics_service(v: &ValidatedCluster) -> Result<Service> {
    from_json(
        "Service",
        json!({
            "metadata": meta(v, names::metrics(&v.name), Component::Server),
            "spec": {
                "type": "ClusterIP",
                "selector": labels::selector(&v.name, Component::Server),
                "ports": [{ "name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP" }]
            }
        }),
    )
}

fn pdb(v: &ValidatedCluster) -> Result<Option<PodDisruptionBudget>> {
    if !v.spec.pod_disruption_budget.enabled {
        return Ok(None);
    }
    from_json(
        "PodDisruptionBudget",
        json!({
            "metadata": meta(v, names::server(&v.name), Component::Server),
            "spec": {
                "maxUnavailable": v.spec.pod_disruption_budget.max_unavailable,
                "selector": { "matchLabels": labels::selector(&v.name, Component::Server) }
            }
        }),
    )
    .map(Some)
}

fn hpa(v: &ValidatedCluster) -> Result<Option<HorizontalPodAutoscaler>> {
    let Some(a) = &v.spec.autoscaling else { return Ok(None) };
    from_json(
        "HorizontalPodAutoscaler",
        json!({
            "metadata": meta(v, names::server(&v.name), Component::Server),
            "spec": {
                "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": names::server(&v.name) },
                "minReplicas": a.min_replicas,
                "maxReplicas": a.max_replicas,
                "metrics": [{ "type": "Resource", "resource": { "name": "cpu",
                    "target": { "type": "Utilization", "averageUtilization": a.target_cpu_utilization_percentage } } }]
            }
        }),
    )
    .map(Some)
}

fn network_policies(v: &ValidatedCluster) -> Result<Option<[NetworkPolicy; 2]>> {
    if !v.spec.network_policy.enabled {
        return Ok(None);
    }
    let server_selector = labels::selector(&v.name, Component::Server);
    Ok(Some([
        from_json(
            "NetworkPolicy",
            json!({
                "metadata": meta(v, names::server(&v.name), Component::Server),
                "spec": {
                    "podSelector": { "matchLabels": server_selector },
                    "policyTypes": ["Ingress"],
                    "ingress": [{ "ports": [{ "port": SERVER_PORT, "protocol": "TCP" }, { "port": METRICS_PORT, "protocol": "TCP" }] }]
                }
            }),
        )?,
        from_json(
            "NetworkPolicy",
            json!({
                "metadata": meta(v, names::redis(&v.name), Component::Redis),
                "spec": {
                    "podSelector": { "matchLabels": labels::selector(&v.name, Component::Redis) },
                    "policyTypes": ["Ingress"],
                    "ingress": [{ "from": [{ "podSelector": { "matchLabels": server_selector } }],
                                  "ports": [{ "port": REDIS_PORT, "protocol": "TCP" }] }]
                }
            }),
        )?,
    ]))
}

fn container_security() -> serde_json::Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "runAsUser": RUN_AS_USER,
        "capabilities": { "drop": ["ALL"] }
    })
}

fn pod_security() -> serde_json::Value {
    json!({ "runAsNonRoot": true, "runAsUser": RUN_AS_USER, "seccompProfile": { "type": "RuntimeDefault" } })
}

fn redis_resources(cluster: &PusherCluster, name: &str) -> Result<RedisResources> {
    let managed = &cluster.spec.redis.managed;
    let selector = labels::selector(name, Component::Redis);
    let resources = match &managed.resources {
        Some(r) => {
            serde_json::to_value(r).map_err(|source| Error::Serialize { what: "resources", source })?
        }
        None => json!({ "requests": { "cpu": "50m", "memory": "64Mi" }, "limits": { "memory": "256Mi" } }),
    };
    let meta = json!({ "name": names::redis(name), "labels": labels::standard(name, Component::Redis) });
    let deployment = from_json(
        "Deployment",
        json!({
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "strategy": { "type": "Recreate" },
                "selector": { "matchLabels": selector },
                "template": {
                    "metadata": { "labels": labels::standard(name, Component::Redis) },
                    "spec": {
                        "securityContext": { "runAsNonRoot": true, "runAsUser": 999, "seccompProfile": { "type": "RuntimeDefault" } },
                        "containers": [{
                            "name": "redis",
                            "image": managed.image.clone().unwrap_or_else(|| REDIS_IMAGE.into()),
                            // Presence and channel state is rebuilt by the servers' leases:
                            // nothing to persist, so no disk and no snapshots.
                            "args": ["--requirepass", "$(REDIS_PASSWORD)", "--save", "", "--appendonly", "no"],
                            "env": [{ "name": "REDIS_PASSWORD", "valueFrom": { "secretKeyRef": { "name": names::redis(name), "key": REDIS_PASSWORD_KEY } } }],
                            "ports": [{ "name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP" }],
                            "readinessProbe": { "tcpSocket": { "port": "redis" }, "periodSeconds": 5 },
                            "livenessProbe": { "tcpSocket": { "port": "redis" }, "periodSeconds": 10 },
                            "resources": resources,
                            "securityContext": { "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": { "drop": ["ALL"] } },
                            "volumeMounts": [{ "name": "data", "mountPath": "/data" }]
                        }],
                        "volumes": [{ "name": "data", "emptyDir": {} }]
                    }
                }
            }
        }),
    )?;
    let service = from_json(
        "Service",
        json!({
            "metadata": meta,
            "spec": { "selector": selector, "ports": [{ "name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP" }] }
        }),
    )?;
    Ok(RedisResources { deployment, service })
}

/// The managed Redis password Secret, with a fresh random password. Created once; a Secret
/// that exists is never overwritten (the running Redis uses the stored password).
pub fn redis_secret(cluster: &PusherCluster, namespace: &str) -> Result<Secret> {
    let name = name_of(cluster)?;
    let password = hex::encode(rand::random::<[u8; 24]>());
    let url = format!("redis://:{password}@{}.{namespace}.svc:{REDIS_PORT}/0", names::redis(&name));
    let mut labels = labels::standard(&name, Component::Redis);
    labels.insert(labels::GENERATED.into(), "true".into());
    from_json(
        "Secret",
        json!({
            "metadata": { "name": names::redis(&name), "labels": labels },
            "type": "Opaque",
            "data": {
                REDIS_PASSWORD_KEY: ByteString(password.into_bytes()),
                REDIS_URL_KEY: ByteString(url.into_bytes())
            }
        }),
    )
}

/// `key=value` annotations as a map (used by tests and status).
pub fn annotations_of(deployment: &Deployment) -> BTreeMap<String, String> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
