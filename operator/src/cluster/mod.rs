//! The PusherCluster controller: dereference (apps, external Redis Secret) → build (pure) →
//! apply (server-side, in order) → status.

pub mod build;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use herald_crds::cluster::RedisMode;
use herald_crds::{PusherApp, PusherCluster};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use sha2::{Digest, Sha256};
use tracing::{info, instrument};

use crate::apply::{Applier, CLUSTER_MANAGER};
use crate::{app, Context, Error, Result};
use build::{names, Inputs, Resources};

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
    let app_secrets = app::secrets_named(&apps);
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

/// Applies the built objects, identity and configuration before the pods that use them.
async fn apply(cluster: &PusherCluster, ctx: &Context, resources: Resources) -> Result<()> {
    let applier = Applier::new(ctx.client.clone(), cluster, CLUSTER_MANAGER)?;
    let name = cluster.name_any();
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
    applier.apply(service_account).await?;
    applier.apply(role).await?;
    applier.apply(role_binding).await?;
    applier.apply(config_map).await?;
    match redis {
        Some(redis) => {
            applier.create_once(build::redis_secret(cluster, applier.namespace())?).await?;
            applier.apply(redis.service).await?;
            applier.apply(redis.deployment).await?;
        }
        None => {
            applier.delete_owned::<Deployment>(&names::redis(&name)).await?;
            applier.delete_owned::<k8s_openapi::api::core::v1::Service>(&names::redis(&name)).await?;
            applier.delete_owned::<Secret>(&names::redis(&name)).await?;
        }
    }
    applier.apply(deployment).await?;
    applier.apply(service).await?;
    applier.apply(metrics_service).await?;
    match pdb {
        Some(pdb) => drop(applier.apply(pdb).await?),
        None => drop(applier.delete_owned::<PodDisruptionBudget>(&names::server(&name)).await?),
    }
    match hpa {
        Some(hpa) => drop(applier.apply(hpa).await?),
        None => drop(applier.delete_owned::<HorizontalPodAutoscaler>(&names::server(&name)).await?),
    }
    match network_policies {
        Some(policies) => {
            for policy in policies {
                applier.apply(policy).await?;
            }
        }
        None => {
            applier.delete_owned::<NetworkPolicy>(&names::server(&name)).await?;
            applier.delete_owned::<NetworkPolicy>(&names::redis(&name)).await?;
        }
    }
    Ok(())
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
