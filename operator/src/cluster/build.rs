//! Pure builders: a validated cluster in, the Kubernetes objects it needs out. No I/O, so
//! every rule here is unit-tested without a cluster.

use std::collections::BTreeMap;

use herald_crds::cluster::{ErrorDialect, RedisMode};
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
use crate::{Error, Result};

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
/// Secret key of the managed Redis password / URL.
pub const REDIS_PASSWORD_KEY: &str = "password";
/// Secret key of a Redis URL (managed Secret, and the default for external ones).
pub const REDIS_URL_KEY: &str = "url";

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

/// Names of a cluster's objects.
pub mod names {
    /// Server Deployment, Service, ServiceAccount, Role, RoleBinding, ConfigMap, PDB, HPA.
    pub fn server(cluster: &str) -> String {
        cluster.to_owned()
    }
    /// Service of the metrics port.
    pub fn metrics(cluster: &str) -> String {
        format!("{cluster}-metrics")
    }
    /// Managed Redis Deployment, Service and Secret.
    pub fn redis(cluster: &str) -> String {
        format!("{cluster}-redis")
    }
}

fn from_json<T: DeserializeOwned>(what: &'static str, value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).map_err(|source| Error::Serialize { what, source })
}

fn name_of(cluster: &PusherCluster) -> Result<String> {
    cluster.metadata.name.clone().ok_or(Error::MissingMeta("name"))
}

/// The server's `herald.toml`: server settings only; apps come from the PusherApps.
pub fn server_config(cluster: &PusherCluster) -> Result<String> {
    let s = &cluster.spec.server;
    let name = name_of(cluster)?;
    let namespace = cluster.metadata.namespace.clone().ok_or(Error::MissingMeta("namespace"))?;
    let mut table = toml::map::Map::new();
    table.insert("port".into(), SERVER_PORT.into());
    table.insert("metrics_port".into(), METRICS_PORT.into());
    if let Some(t) = s.activity_timeout {
        table.insert("activity_timeout".into(), i64::from(t).into());
    }
    if let Some(m) = s.max_message_size {
        table.insert("max_message_size".into(), i64::from(m).into());
    }
    table.insert("shutdown_grace".into(), i64::from(s.shutdown_grace.unwrap_or(SHUTDOWN_GRACE)).into());
    if let Some(d) = s.error_dialect {
        let dialect = match d {
            ErrorDialect::Echo => "echo",
            ErrorDialect::Pusher => "pusher",
        };
        table.insert("error_dialect".into(), dialect.into());
    }
    table.insert("cluster".into(), "redis".into());
    // One Redis may serve several clusters (external mode): keep their keys apart.
    table.insert("redis_prefix".into(), crate::app::usage::redis_prefix(&namespace, &name).into());
    Ok(toml::to_string(&toml::Value::Table(table))?)
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

/// Builds every object of the cluster.
pub fn build(cluster: &PusherCluster, inputs: &Inputs) -> Result<Resources> {
    let name = name_of(cluster)?;
    let spec = &cluster.spec;
    let server_labels = labels::standard(&name, Component::Server);
    let server_selector = labels::selector(&name, Component::Server);
    let config = server_config(cluster)?;
    let hash = config_hash(&config, cluster, inputs);
    let meta = |object_name: String, component: Component| json!({ "name": object_name, "labels": labels::standard(&name, component) });

    let service_account: ServiceAccount =
        from_json("ServiceAccount", json!({ "metadata": meta(names::server(&name), Component::Server) }))?;

    // The pods read their cluster's PusherApps and exactly the Secrets those name: never every
    // Secret (an empty resourceNames list would mean all of them, so the rule is left out).
    let mut rules = vec![json!({
        "apiGroups": [herald_crds::GROUP], "resources": ["pusherapps"], "verbs": ["get", "list", "watch"]
    })];
    if !inputs.app_secrets.is_empty() {
        rules.push(json!({
            "apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"],
            "resourceNames": inputs.app_secrets
        }));
    }
    let role: Role = from_json(
        "Role",
        json!({ "metadata": meta(names::server(&name), Component::Server), "rules": rules }),
    )?;
    let role_binding: RoleBinding = from_json(
        "RoleBinding",
        json!({
            "metadata": meta(names::server(&name), Component::Server),
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": names::server(&name) },
            "subjects": [{ "kind": "ServiceAccount", "name": names::server(&name) }]
        }),
    )?;
    let config_map: ConfigMap = from_json(
        "ConfigMap",
        json!({ "metadata": meta(names::server(&name), Component::Server), "data": { "herald.toml": config } }),
    )?;

    let redis_url_env = match spec.redis.mode {
        RedisMode::Managed => json!({ "name": names::redis(&name), "key": REDIS_URL_KEY }),
        RedisMode::External => {
            let r = spec.redis.external.as_ref().map(|e| &e.url_secret_ref);
            let secret = r.map(|r| r.name.clone()).unwrap_or_default();
            let key = r.and_then(|r| r.key.clone()).unwrap_or_else(|| REDIS_URL_KEY.into());
            json!({ "name": secret, "key": key })
        }
    };
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
    let image = spec.image.clone().unwrap_or_else(|| inputs.default_image.clone());
    let mut container = json!({
        "name": "herald-server",
        "image": image,
        "args": ["--config", "/etc/herald/herald.toml", "--apps", "kubernetes",
                 "--cluster-name", name, "--namespace", cluster.metadata.namespace.clone().unwrap_or_default()],
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
    if let Some(policy) = spec.image_pull_policy {
        container["imagePullPolicy"] = policy.as_str().into();
    }
    let mut deployment_spec = json!({
        "selector": { "matchLabels": server_selector },
        "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } },
        "template": {
            "metadata": { "labels": server_labels, "annotations": { labels::CONFIG_HASH: hash } },
            "spec": {
                "serviceAccountName": names::server(&name),
                "terminationGracePeriodSeconds": grace + PRE_STOP_SLEEP + 5,
                "securityContext": pod_security(),
                "topologySpreadConstraints": [{
                    "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": { "matchLabels": server_selector }
                }],
                "containers": [container],
                "volumes": [{ "name": "config", "configMap": { "name": names::server(&name) } }]
            }
        }
    });
    // With an autoscaler the HPA owns the replica count: leaving the field out of our apply
    // means we never fight it.
    if spec.autoscaling.is_none() {
        deployment_spec["replicas"] = spec.replicas.into();
    }
    let deployment: Deployment = from_json(
        "Deployment",
        json!({ "metadata": meta(names::server(&name), Component::Server), "spec": deployment_spec }),
    )?;

    let mut service_meta = meta(names::server(&name), Component::Server);
    if !spec.service.annotations.is_empty() {
        service_meta["annotations"] = json!(spec.service.annotations);
    }
    let service: Service = from_json(
        "Service",
        json!({
            "metadata": service_meta,
            "spec": {
                "type": spec.service.type_.as_str(),
                "selector": server_selector,
                "ports": [{ "name": "http", "port": spec.service.port.unwrap_or(SERVER_PORT), "targetPort": "http", "protocol": "TCP" }]
            }
        }),
    )?;
    let metrics_service: Service = from_json(
        "Service",
        json!({
            "metadata": meta(names::metrics(&name), Component::Server),
            "spec": {
                "type": "ClusterIP",
                "selector": server_selector,
                "ports": [{ "name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP" }]
            }
        }),
    )?;

    let pdb = if spec.pod_disruption_budget.enabled {
        Some(from_json(
            "PodDisruptionBudget",
            json!({
                "metadata": meta(names::server(&name), Component::Server),
                "spec": { "maxUnavailable": spec.pod_disruption_budget.max_unavailable, "selector": { "matchLabels": server_selector } }
            }),
        )?)
    } else {
        None
    };
    let hpa = match &spec.autoscaling {
        Some(a) => Some(from_json(
            "HorizontalPodAutoscaler",
            json!({
                "metadata": meta(names::server(&name), Component::Server),
                "spec": {
                    "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": names::server(&name) },
                    "minReplicas": a.min_replicas,
                    "maxReplicas": a.max_replicas,
                    "metrics": [{ "type": "Resource", "resource": { "name": "cpu",
                        "target": { "type": "Utilization", "averageUtilization": a.target_cpu_utilization_percentage } } }]
                }
            }),
        )?),
        None => None,
    };

    let redis = match spec.redis.mode {
        RedisMode::Managed => Some(redis_resources(cluster, &name)?),
        RedisMode::External => None,
    };
    let redis_selector = labels::selector(&name, Component::Redis);
    let network_policies = if spec.network_policy.enabled {
        Some([
            from_json(
                "NetworkPolicy",
                json!({
                    "metadata": meta(names::server(&name), Component::Server),
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
                    "metadata": meta(names::redis(&name), Component::Redis),
                    "spec": {
                        "podSelector": { "matchLabels": redis_selector },
                        "policyTypes": ["Ingress"],
                        "ingress": [{ "from": [{ "podSelector": { "matchLabels": server_selector } }],
                                      "ports": [{ "port": REDIS_PORT, "protocol": "TCP" }] }]
                    }
                }),
            )?,
        ])
    } else {
        None
    };

    Ok(Resources {
        service_account,
        role,
        role_binding,
        config_map,
        redis,
        deployment,
        service,
        metrics_service,
        pdb,
        hpa,
        network_policies,
    })
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
