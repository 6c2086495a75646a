//! Wiring: one PusherCluster and one PusherApp controller per watched namespace (or one pair
//! for all namespaces), `/metrics` and `/healthz`, shutdown on SIGTERM.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::join_all;
use futures_util::StreamExt;
use herald_crds::{PusherApp, PusherCluster};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::NamespaceResourceScope;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::web::{router, WebState};
use crate::{app, cluster, labels, Context, Error};

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespaces to watch; empty watches all.
    pub namespaces: Vec<String>,
    /// Image for clusters that do not name one.
    pub server_image: String,
    /// Address of `/metrics` and `/healthz`.
    pub metrics_addr: SocketAddr,
    /// How often settled apps' usage is refreshed.
    pub usage_refresh: std::time::Duration,
    /// Run the controllers only while holding this Lease (two or more replicas).
    pub leader_election: Option<crate::leader::Election>,
}

/// Parses `WATCH_NAMESPACE`: empty or unset is all namespaces, else a comma-separated list.
pub fn parse_namespaces(value: Option<&str>) -> Vec<String> {
    value.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Why the operator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The CRDs are not installed (or not readable).
    #[error("cannot list PusherClusters ({0}); are the herald.dev CRDs installed? `herald-operator crd | kubectl apply -f -`")]
    Crds(#[source] kube::Error),
    /// The metrics port is taken.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Consecutive failures per object, for exponential backoff.
#[derive(Default)]
struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    fn bump(&self, key: String) -> u32 {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    fn clear(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

struct Shared {
    ctx: Context,
    failures: Failures,
}

fn key_of<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.meta().namespace.as_deref().unwrap_or(""), obj.meta().name.as_deref().unwrap_or(""))
}

fn error_policy<K>(controller: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Shared>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    move |obj, err, shared| {
        shared.ctx.metrics.failed(controller, err.label());
        let failures = shared.failures.bump(key_of(obj.as_ref()));
        let delay = cluster::backoff(failures);
        warn!(controller, object = key_of(obj.as_ref()), error = %err, retry_in = ?delay, "reconcile failed");
        let recorder = shared.ctx.recorder.clone();
        let reference = obj.object_ref(&());
        let note = err.to_string();
        tokio::spawn(async move {
            let event = Event {
                type_: EventType::Warning,
                reason: "ReconcileError".into(),
                note: Some(note),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(err) = recorder.publish(&event, &reference).await {
                warn!(%err, "cannot publish event");
            }
        });
        Action::requeue(delay)
    }
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn owned<K>(
    c: Controller<PusherCluster>,
    client: &Client,
    namespace: Option<&str>,
) -> Controller<PusherCluster>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let managed =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={}", labels::MANAGED_BY));
    c.owns(scoped::<K>(client, namespace), managed)
}

async fn run_namespace(client: Client, namespace: Option<String>, shared: Arc<Shared>) {
    let ns = namespace.as_deref();
    let wc = watcher::Config::default();

    let mut clusters = Controller::new(scoped::<PusherCluster>(&client, ns), wc.clone());
    clusters = owned::<Deployment>(clusters, &client, ns);
    clusters = owned::<Service>(clusters, &client, ns);
    clusters = owned::<ConfigMap>(clusters, &client, ns);
    clusters = owned::<Secret>(clusters, &client, ns);
    clusters = owned::<ServiceAccount>(clusters, &client, ns);
    clusters = owned::<Role>(clusters, &client, ns);
    clusters = owned::<RoleBinding>(clusters, &client, ns);
    clusters = owned::<PodDisruptionBudget>(clusters, &client, ns);
    clusters = owned::<HorizontalPodAutoscaler>(clusters, &client, ns);
    clusters = owned::<NetworkPolicy>(clusters, &client, ns);
    // An app added, removed or pointed at new Secrets changes the cluster's Role and app count;
    // a changed external Redis URL Secret (the user's) rolls the pods; a Secret that opts in to
    // Herald may now be granted to the pods (the Role is rebuilt for the namespace's clusters).
    let by_redis_secret = clusters.store();
    let clusters = clusters
        .watches(scoped::<Secret>(&client, ns), wc.clone(), move |secret| {
            let namespace = secret.namespace();
            let name = secret.name_any();
            let opted_in = herald_crds::contract::credentials::opted_in(secret.metadata.labels.as_ref());
            by_redis_secret
                .state()
                .into_iter()
                .filter(|c| {
                    c.namespace() == namespace
                        && (opted_in
                            || c.spec.redis.external.as_ref().is_some_and(|e| e.url_secret_ref.name == name))
                })
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches(scoped::<PusherApp>(&client, ns), wc.clone(), |app| {
            let namespace = app.namespace()?;
            Some(ObjectRef::<PusherCluster>::new(&app.spec.cluster_ref).within(&namespace))
        })
        .shutdown_on_signal()
        .run(
            |obj, shared: Arc<Shared>| async move {
                let key = key_of(obj.as_ref());
                let result = cluster::reconcile(obj, Arc::new(shared.ctx.clone())).await;
                if result.is_ok() {
                    shared.failures.clear(&key);
                }
                result
            },
            error_policy::<PusherCluster>("cluster"),
            shared.clone(),
        )
        .for_each(|res| async move {
            if let Err(err) = res {
                tracing::debug!(%err, "cluster controller");
            }
        });

    let apps = Controller::new(scoped::<PusherApp>(&client, ns), wc.clone());
    let by_cluster = apps.store();
    let by_secret = apps.store();
    let apps = apps
        // A cluster appearing, disappearing or becoming ready changes its apps' conditions.
        .watches(scoped::<PusherCluster>(&client, ns), wc.clone(), move |cluster| {
            let namespace = cluster.namespace();
            let name = cluster.name_any();
            by_cluster
                .state()
                .into_iter()
                .filter(|a| a.spec.cluster_ref == name && a.namespace() == namespace)
                .map(|a| ObjectRef::from_obj(a.as_ref()))
                .collect::<Vec<_>>()
        })
        // A credentials Secret created, changed or deleted changes CredentialsResolved.
        .watches(scoped::<Secret>(&client, ns), wc, move |secret| {
            let namespace = secret.namespace();
            let name = secret.name_any();
            by_secret
                .state()
                .into_iter()
                .filter(|a| a.namespace() == namespace && app::credentials_secret_name(a) == name)
                .map(|a| ObjectRef::from_obj(a.as_ref()))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(
            |obj, shared: Arc<Shared>| async move {
                let key = key_of(obj.as_ref());
                let result = app::reconcile(obj, Arc::new(shared.ctx.clone())).await;
                if result.is_ok() {
                    shared.failures.clear(&key);
                }
                result
            },
            error_policy::<PusherApp>("app"),
            shared,
        )
        .for_each(|res| async move {
            if let Err(err) = res {
                tracing::debug!(%err, "app controller");
            }
        });
    futures_util::join!(clusters, apps);
}

/// Checks what the operator needs to start: a client, the CRDs, and the right to list
/// PusherClusters and PusherApps where it watches. Used at start and by `herald-operator check`
/// (the Helm test).
pub async fn check(namespaces: &[String]) -> Result<Client, StartError> {
    let client = Client::try_default().await.map_err(StartError::Client)?;
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    for ns in scopes {
        scoped::<PusherCluster>(&client, ns)
            .list(&ListParams::default().limit(1))
            .await
            .map_err(StartError::Crds)?;
        scoped::<PusherApp>(&client, ns)
            .list(&ListParams::default().limit(1))
            .await
            .map_err(StartError::Crds)?;
    }
    Ok(client)
}

/// Runs the operator until SIGTERM or Ctrl-C.
pub async fn run(settings: Settings) -> Result<(), StartError> {
    let client = check(&settings.namespaces).await?;

    let metrics = Arc::new(Metrics::default());
    let running = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .map_err(|source| StartError::Listen { addr: settings.metrics_addr, source })?;
    let web = router(WebState { metrics: metrics.clone(), running: running.clone() });
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, web).await {
            warn!(%err, "metrics server stopped");
        }
    });

    let reporter =
        Reporter { controller: labels::MANAGED_BY.into(), instance: std::env::var("POD_NAME").ok() };
    let ctx = Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        server_image: settings.server_image.clone(),
        usage_refresh: settings.usage_refresh,
    };
    let shared = Arc::new(Shared { ctx, failures: Failures::default() });
    if let Some(election) = settings.leader_election.clone() {
        info!(lease = %election.name, "leader election: waiting for the Lease");
        election.lead(client.clone()).await;
    }
    let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    info!(namespaces = ?settings.namespaces, image = %settings.server_image, metrics = %settings.metrics_addr, "herald-operator running");
    running.store(true, Ordering::Relaxed);
    join_all(scopes.into_iter().map(|ns| run_namespace(client.clone(), ns, shared.clone()))).await;
    info!("herald-operator stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_namespaces;

    #[test]
    fn watch_namespace_is_one_several_or_all() {
        assert!(parse_namespaces(None).is_empty());
        assert!(parse_namespaces(Some(" ")).is_empty());
        assert_eq!(parse_namespaces(Some("chat")), vec!["chat"]);
        assert_eq!(parse_namespaces(Some("chat, games,")), vec!["chat", "games"]);
    }
}
