//! The PusherCluster controller: dereference (apps, external Redis Secret) → validate
//! ([`validate`]: one value the builders take) → build ([`build`]: a pure builder per object) →
//! apply (server-side, in order; what is no longer wanted is found by label and deleted) →
//! status ([`status`]).

pub mod build;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use herald_crds::cluster::RedisMode;
use herald_crds::{PusherApp, PusherCluster};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use sha2::{Digest, Sha256};
use tracing::{info, instrument};

use crate::apply::{Applier, CLUSTER_MANAGER};
use crate::{app, labels, Context, Error, Result};
use build::{Inputs, Resources};

/// What the dereference phase found about the external Redis URL Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalRedis {
    /// Managed mode: nothing to look up.
    NotUsed,
    /// The Secret and key exist; hash of the value.
    Found(String),
    /// A sentence saying what is missing.
    Missing(String),
}

/// Reconciles one PusherCluster.
#[instrument(skip_all, fields(namespace = cluster.namespace().unwrap_or_default(), cluster = cluster.name_any()))]
pub async fn reconcile(cluster: Arc<PusherCluster>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.measure("cluster");
    let namespace = cluster.namespace().ok_or(Error::MissingMeta("namespace"))?;
    let name = cluster.name_any();

    // Dereference: the apps of this cluster and the Secrets they name, the external Redis URL.
    let apps: Vec<PusherApp> = Api::<PusherApp>::namespaced(ctx.client.clone(), &namespace)
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|a| a.spec.cluster_ref == name)
        .collect();
    // The pods may read only the Secrets the apps name that opted in (or that the operator
    // generated): naming a Secret in a PusherApp must not grant access to it.
    let mut app_secrets = Vec::new();
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    for name in app::secrets_named(&apps) {
        let secret = secrets.get_opt(&name).await?;
        if secret.is_some_and(|s| herald_crds::contract::credentials::opted_in(s.metadata.labels.as_ref())) {
            app_secrets.push(name);
        }
    }
    let external = external_redis(&cluster, &ctx, &namespace).await?;
    let inputs = Inputs {
        default_image: ctx.server_image.clone(),
        app_secrets,
        external_redis_hash: match &external {
            ExternalRedis::Found(hash) => Some(hash.clone()),
            _ => None,
        },
    };

    let resources = build::build(&cluster, &inputs)?;
    if cluster.spec.paused {
        info!("paused: no writes");
    } else {
        apply(&cluster, &ctx, resources).await?;
    }

    let observed = status::observe(&ctx.client, &cluster, &namespace).await?;
    let requeue = status::write(&cluster, &ctx, &namespace, observed, &external, apps.len()).await?;
    Ok(Action::requeue(requeue))
}

/// Applies the built objects, identity and configuration before the pods that use them, then
/// deletes the objects of this cluster it no longer wants (found by label and owner).
async fn apply(cluster: &PusherCluster, ctx: &Context, resources: Resources) -> Result<()> {
    let applier = Applier::new(ctx.client.clone(), cluster, CLUSTER_MANAGER)?;
    // Destructured without `..`: a new kind of object does not compile until it is applied.
    let Resources {
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
    } = resources;
    let mut kept = Kept::default();
    applier.apply(service_account).await?;
    applier.apply(role).await?;
    applier.apply(role_binding).await?;
    applier.apply(config_map).await?;
    if let Some(redis) = redis {
        kept.secrets
            .push(applier.create_once(build::redis_secret(cluster, applier.namespace())?).await?.name_any());
        kept.services.push(applier.apply(redis.service).await?.name_any());
        kept.deployments.push(applier.apply(redis.deployment).await?.name_any());
    }
    kept.deployments.push(applier.apply(deployment).await?.name_any());
    kept.services.push(applier.apply(service).await?.name_any());
    kept.services.push(applier.apply(metrics_service).await?.name_any());
    if let Some(pdb) = pdb {
        kept.pdbs.push(applier.apply(pdb).await?.name_any());
    }
    if let Some(hpa) = hpa {
        kept.hpas.push(applier.apply(hpa).await?.name_any());
    }
    for policy in network_policies.into_iter().flatten() {
        kept.network_policies.push(applier.apply(policy).await?.name_any());
    }
    let selector = labels::to_selector_string(&labels::instance(&cluster.name_any()));
    applier.prune::<Deployment>(&selector, &kept.deployments).await?;
    applier.prune::<Service>(&selector, &kept.services).await?;
    applier.prune::<Secret>(&selector, &kept.secrets).await?;
    applier.prune::<PodDisruptionBudget>(&selector, &kept.pdbs).await?;
    applier.prune::<HorizontalPodAutoscaler>(&selector, &kept.hpas).await?;
    applier.prune::<NetworkPolicy>(&selector, &kept.network_policies).await?;
    Ok(())
}

/// Names of what one reconcile applied, by kind: everything else of the cluster's is pruned.
#[derive(Default)]
struct Kept {
    deployments: Vec<String>,
    services: Vec<String>,
    secrets: Vec<String>,
    pdbs: Vec<String>,
    hpas: Vec<String>,
    network_policies: Vec<String>,
}

async fn external_redis(cluster: &PusherCluster, ctx: &Context, namespace: &str) -> Result<ExternalRedis> {
    if cluster.spec.redis.mode != RedisMode::External {
        return Ok(ExternalRedis::NotUsed);
    }
    let Some(reference) = cluster.spec.redis.external.as_ref().map(|e| &e.url_secret_ref) else {
        return Ok(ExternalRedis::Missing("spec.redis.external.urlSecretRef is not set".into()));
    };
    let key = reference.key.as_deref().unwrap_or(build::REDIS_URL_KEY);
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace).get_opt(&reference.name).await?;
    let Some(secret) = secret else {
        return Ok(ExternalRedis::Missing(format!(
            "Secret {namespace}/{} (the external Redis URL) does not exist",
            reference.name
        )));
    };
    match secret.data.as_ref().and_then(|d| d.get(key)) {
        Some(value) if !value.0.is_empty() => {
            Ok(ExternalRedis::Found(hex::encode(&Sha256::digest(&value.0)[..16])))
        }
        _ => Ok(ExternalRedis::Missing(format!(
            "Secret {namespace}/{} has no key {key:?} with the Redis URL",
            reference.name
        ))),
    }
}

/// How long to wait after a failed reconcile: doubles per consecutive failure, up to 5 min.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1 << failures.min(6)).min(300))
}
