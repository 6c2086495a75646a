//! The PusherCluster status: what exists, said plainly.

use std::time::Duration;

use herald_crds::cluster::RedisMode;
use herald_crds::{PusherCluster, PusherClusterStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use super::build::{names, SERVER_PORT};
use super::ExternalRedis;
use crate::apply::CLUSTER_MANAGER;
use crate::conditions::{self, Desired};
use crate::labels::{self, Component};
use crate::{Context, Result};

/// What the API server says about the cluster's pods and Redis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Replicas the server Deployment wants (its spec; the HPA's choice under autoscaling).
    pub desired: i32,
    /// Server pods that exist / are ready / run the current template.
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    /// Whether the Deployment controller has seen the latest template.
    pub deployment_current: bool,
    /// The Deployment reported a failure (progress deadline, replica failure): its message.
    pub deployment_failure: Option<String>,
    /// Whether the server Deployment exists.
    pub deployment_exists: bool,
    /// Ready pods of the managed Redis.
    pub redis_ready: i32,
}

/// Reads the server and Redis Deployments.
pub async fn observe(client: &Client, cluster: &PusherCluster, namespace: &str) -> Result<Observed> {
    let name = cluster.name_any();
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let mut observed = Observed::default();
    if let Some(d) = deployments.get_opt(&names::server(&name)).await? {
        observed.deployment_exists = true;
        observed.desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = d.status.unwrap_or_default();
        observed.replicas = status.replicas.unwrap_or(0);
        observed.ready = status.ready_replicas.unwrap_or(0);
        observed.updated = status.updated_replicas.unwrap_or(0);
        observed.deployment_current = status.observed_generation >= d.metadata.generation;
        observed.deployment_failure = status.conditions.unwrap_or_default().into_iter().find_map(|c| {
            let failed = (c.type_ == "Progressing" && c.status == "False")
                || (c.type_ == "ReplicaFailure" && c.status == "True");
            failed.then(|| c.message.unwrap_or(c.reason.unwrap_or_default()))
        });
    }
    if cluster.spec.redis.mode == RedisMode::Managed {
        if let Some(d) = deployments.get_opt(&names::redis(&name)).await? {
            observed.redis_ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        }
    }
    Ok(observed)
}

/// The conditions for what was observed. Pure.
pub fn conditions(cluster: &PusherCluster, o: &Observed, external: &ExternalRedis) -> Vec<Desired> {
    let redis = match (cluster.spec.redis.mode, external) {
        (RedisMode::External, ExternalRedis::Missing(why)) => {
            Desired::no("RedisReady", "RedisSecretMissing", why.clone())
        }
        (RedisMode::External, _) => Desired::yes(
            "RedisReady",
            "ExternalRedisConfigured",
            "the external Redis URL Secret exists; server pods report connectivity in their readiness",
        ),
        (RedisMode::Managed, _) if o.redis_ready > 0 => Desired::yes(
            "RedisReady",
            "RedisRunning",
            format!("managed Redis {} is ready", names::redis(&cluster.name_any())),
        ),
        (RedisMode::Managed, _) => Desired::no(
            "RedisReady",
            "RedisNotReady",
            format!("managed Redis {} has no ready pod yet", names::redis(&cluster.name_any())),
        ),
    };
    let redis_ok = redis.status;
    let rolling =
        !o.deployment_current || o.updated < o.desired || o.ready < o.desired || o.replicas > o.desired;
    let progressing = if !o.deployment_exists {
        Desired::yes("Progressing", "Creating", "the server Deployment is being created")
    } else if rolling {
        Desired::yes(
            "Progressing",
            "RollingOut",
            format!("{} of {} server pods updated, {} ready", o.updated, o.desired, o.ready),
        )
    } else {
        Desired::no("Progressing", "Stable", format!("{} server pods run the current spec", o.desired))
    };
    let degraded = if let Some(why) = &o.deployment_failure {
        Desired::yes("Degraded", "DeploymentFailing", why.clone())
    } else if !redis_ok && matches!(external, ExternalRedis::Missing(_)) {
        Desired::yes("Degraded", "RedisSecretMissing", redis.message.clone())
    } else {
        Desired::no("Degraded", "AsExpected", "no failure observed")
    };
    let ready = if o.desired == 0 {
        Desired::no("Ready", "ScaledToZero", "replicas is 0: no server pod runs")
    } else if !redis_ok {
        Desired::no("Ready", "RedisNotReady", redis.message.clone())
    } else if o.ready < o.desired {
        Desired::no("Ready", "PodsNotReady", format!("{} of {} server pods ready", o.ready, o.desired))
    } else {
        Desired::yes("Ready", "Ready", format!("{} of {} server pods ready", o.ready, o.desired))
    };
    let paused = if cluster.spec.paused {
        Desired::yes("ReconciliationPaused", "Paused", "spec.paused is true: the operator changes nothing")
    } else {
        Desired::no(
            "ReconciliationPaused",
            "Reconciling",
            "the operator keeps the cluster's objects as specified",
        )
    };
    vec![ready, progressing, degraded, redis, paused]
}

/// Writes the status (only when it changed), publishes Events for condition flips, and says
/// when to look again.
pub async fn write(
    cluster: &PusherCluster,
    ctx: &Context,
    namespace: &str,
    observed: Observed,
    external: &ExternalRedis,
    apps: usize,
) -> Result<Duration> {
    let name = cluster.name_any();
    let previous = cluster.status.clone().unwrap_or_default();
    let desired = conditions(cluster, &observed, external);
    let (conditions, flips) =
        conditions::merge(&previous.conditions, desired, cluster.metadata.generation, Timestamp::now());
    let steady =
        conditions::is_true(&conditions, "Ready") && !conditions::is_true(&conditions, "Progressing");
    let port = cluster.spec.service.port.unwrap_or(SERVER_PORT);
    let status = PusherClusterStatus {
        observed_generation: cluster.metadata.generation,
        conditions,
        replicas: Some(observed.replicas),
        ready_replicas: Some(observed.ready),
        selector: Some(labels::to_selector_string(&labels::selector(&name, Component::Server))),
        endpoint: Some(format!("{}.{namespace}.svc:{port}", names::server(&name))),
        apps: Some(i32::try_from(apps).unwrap_or(i32::MAX)),
    };
    if status != previous {
        let patch = json!({ "apiVersion": "herald.dev/v1alpha1", "kind": "PusherCluster", "status": status });
        Api::<PusherCluster>::namespaced(ctx.client.clone(), namespace)
            .patch_status(&name, &PatchParams::apply(CLUSTER_MANAGER).force(), &Patch::Apply(&patch))
            .await?;
    }
    let bad_news =
        |f: &conditions::Flip| (f.type_ == "Degraded" && f.status) || (f.type_ == "Ready" && !f.status);
    conditions::publish_flips(&ctx.recorder, &cluster.object_ref(&()), flips, bad_news).await;
    Ok(if steady { Duration::from_secs(300) } else { Duration::from_secs(10) })
}
