//! Apps from Kubernetes: the `PusherApp` objects of one cluster in one namespace, with their
//! key and secret from the Secrets they name. Everything is watched: adding, changing,
//! disabling or deleting an app and rotating its secret take effect within seconds, without a
//! restart. A malformed PusherApp or a missing Secret drops that app only.
//!
//! The pod's Role lets it read PusherApps and exactly the Secrets the apps name, so each
//! Secret is watched on its own (`fieldSelector=metadata.name=...`), started and stopped as
//! apps come and go.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use herald_crds::contract::credentials;
use herald_crds::PusherApp;
use k8s_openapi::api::core::v1::Secret;
use kube::core::DeserializeGuard;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{App, AppStore, WebhookTarget};

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeAppsError {
    /// No kubeconfig or in-cluster service account.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    /// The first list of PusherApps did not arrive in time.
    #[error("no answer listing PusherApps in namespace {namespace} within {seconds} s: {last_error}")]
    NotSynced {
        /// Namespace watched.
        namespace: String,
        /// How long we waited.
        seconds: u64,
        /// The last watch error, if any.
        last_error: String,
    },
}

#[derive(Default)]
struct Index {
    by_key: HashMap<String, Arc<App>>,
    by_id: HashMap<String, Arc<App>>,
}

/// The apps of one PusherCluster, kept current by watches.
pub struct KubeApps {
    index: RwLock<Index>,
    changes: watch::Sender<u64>,
}

impl AppStore for KubeApps {
    fn by_key(&self, key: &str) -> Option<Arc<App>> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).by_key.get(key).cloned()
    }

    fn by_id(&self, id: &str) -> Option<Arc<App>> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).by_id.get(id).cloned()
    }

    fn all(&self) -> Vec<Arc<App>> {
        let mut apps: Vec<_> =
            self.index.read().unwrap_or_else(|p| p.into_inner()).by_id.values().cloned().collect();
        apps.sort_by(|a, b| a.id.cmp(&b.id));
        apps
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Name of the Secret an app's credentials are in.
pub fn credentials_secret(app: &PusherApp) -> String {
    credentials::secret_name(app)
}

fn secret_value(secret: &Secret, key: &str) -> Result<String, String> {
    let data = secret.data.as_ref().and_then(|d| d.get(key)).map(|v| v.0.as_slice());
    credentials::value(&secret.name_any(), data, key)
}

/// The server's view of one PusherApp, given its credentials Secret. Pure.
pub fn app_from_resource(resource: &PusherApp, secret: Option<&Secret>) -> Result<App, String> {
    let spec = &resource.spec;
    let secret_name = credentials_secret(resource);
    let secret = secret.ok_or_else(|| format!("Secret {secret_name} is missing or not readable"))?;
    let (key_key, secret_key) = match &spec.credentials {
        Some(c) => (c.secret_ref.key_key(), c.secret_ref.secret_key()),
        None => (credentials::KEY, credentials::SECRET),
    };
    let key = secret_value(secret, key_key)?;
    let signing_secret = secret_value(secret, secret_key)?;
    let generated_id =
        if spec.credentials.is_none() { secret_value(secret, credentials::APP_ID).ok() } else { None };
    let id = spec
        .app_id
        .clone()
        .or(generated_id)
        .or_else(|| resource.status.as_ref().and_then(|s| s.app_id.clone()))
        .ok_or_else(|| {
            "no app id yet (spec.appId is empty and the operator has not assigned one)".to_owned()
        })?;

    let mut app = App::new(id, key, signing_secret);
    app.enabled = spec.enabled;
    app.client_events = spec.client_events;
    app.user_authentication = spec.user_authentication;
    app.watchlist_events = spec.watchlist_events;
    app.subscription_count = spec.subscription_count;
    app.allowed_origins = spec.allowed_origins.clone();
    let l = &spec.limits;
    app.limits.max_connections = l.max_connections;
    if let Some(n) = l.max_presence_members {
        app.limits.max_presence_members = n as usize;
    }
    if let Some(n) = l.max_event_data_size {
        app.limits.max_event_data_size = n as usize;
    }
    if let Some(n) = l.client_events_per_second {
        app.limits.client_events_per_second = n;
    }
    app.limits.max_backend_events_per_second = l.max_backend_events_per_second;
    app.limits.max_read_requests_per_second = l.max_read_requests_per_second;
    app.webhooks = spec
        .webhooks
        .iter()
        .map(|w| WebhookTarget {
            url: w.url.clone(),
            event_types: w.event_types.clone(),
            channel_prefix: w.channel_prefix.clone(),
            channel_suffix: w.channel_suffix.clone(),
        })
        .collect();
    Ok(app)
}

/// What the watch tasks tell the store's loop.
enum Update {
    /// The set of PusherApps of the cluster (after the initial list, and on every change).
    Apps(Vec<PusherApp>),
    /// One Secret's current state (`None`: absent or not readable).
    Secret(String, Option<Box<Secret>>),
}

impl KubeApps {
    /// Watches the PusherApps of `cluster` in `namespace`; returns once the first list is in
    /// (and the Secrets it names had a chance to arrive).
    pub async fn start(
        client: Client,
        namespace: &str,
        cluster: &str,
        shutdown: CancellationToken,
    ) -> Result<Arc<KubeApps>, KubeAppsError> {
        let store =
            Arc::new(KubeApps { index: RwLock::new(Index::default()), changes: watch::Sender::new(0) });
        let (tx, rx) = mpsc::channel(64);
        let (synced_tx, mut synced_rx) = watch::channel::<Result<(), String>>(Err(String::new()));
        tokio::spawn(watch_apps(
            client.clone(),
            namespace.to_owned(),
            cluster.to_owned(),
            tx.clone(),
            synced_tx,
            shutdown.clone(),
        ));
        let (first_tx, mut first_rx) = watch::channel(false);
        tokio::spawn(run_loop(store.clone(), client, namespace.to_owned(), rx, tx, first_tx, shutdown));

        let wait = Duration::from_secs(30);
        let synced = tokio::time::timeout(wait, synced_rx.wait_for(|r| r.is_ok())).await.is_ok();
        if !synced {
            let last_error = synced_rx.borrow().clone().err().unwrap_or_default();
            return Err(KubeAppsError::NotSynced {
                namespace: namespace.to_owned(),
                seconds: wait.as_secs(),
                last_error,
            });
        }
        // Give the Secret watches a moment so the first requests do not meet "app not found".
        let _ = tokio::time::timeout(Duration::from_secs(5), first_rx.wait_for(|ready| *ready)).await;
        info!(namespace, cluster, apps = store.all().len(), "apps from Kubernetes");
        Ok(store)
    }

    fn replace(&self, apps: Vec<App>) {
        let mut index = Index::default();
        for app in apps {
            let app = Arc::new(app);
            if index.by_id.contains_key(&app.id) || index.by_key.contains_key(&app.key) {
                warn!(app_id = %app.id, "two PusherApps share this app id or key: the older one is served");
                continue;
            }
            index.by_key.insert(app.key.clone(), app.clone());
            index.by_id.insert(app.id.clone(), app);
        }
        let changed = {
            let mut current = self.index.write().unwrap_or_else(|p| p.into_inner());
            let same = current.by_id.len() == index.by_id.len()
                && current.by_id.iter().all(|(id, a)| index.by_id.get(id).is_some_and(|b| a == b));
            *current = index;
            !same
        };
        if changed {
            self.changes.send_modify(|n| *n += 1);
        }
    }
}

async fn watch_apps(
    client: Client,
    namespace: String,
    cluster: String,
    tx: mpsc::Sender<Update>,
    synced: watch::Sender<Result<(), String>>,
    shutdown: CancellationToken,
) {
    let api: Api<DeserializeGuard<PusherApp>> = Api::namespaced(client, &namespace);
    let mut current: BTreeMap<String, PusherApp> = BTreeMap::new();
    let mut initial: Option<BTreeMap<String, PusherApp>> = None;
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures_util::pin_mut!(stream);
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = stream.next() => match event {
                Some(event) => event,
                None => return,
            },
        };
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                warn!(%err, "watching PusherApps");
                synced.send_if_modified(|s| {
                    if s.is_err() {
                        *s = Err(err.to_string());
                    }
                    false
                });
                continue;
            }
        };
        let keep = |guard: DeserializeGuard<PusherApp>| match guard.0 {
            Ok(app) if app.spec.cluster_ref == cluster => Some(app),
            Ok(_) => None,
            Err(invalid) => {
                warn!(app = invalid.metadata.name.as_deref().unwrap_or(""), error = %invalid.error, "malformed PusherApp ignored");
                None
            }
        };
        match event {
            watcher::Event::Init => initial = Some(BTreeMap::new()),
            watcher::Event::InitApply(guard) => {
                let name = guard.0.as_ref().map(ResourceExt::name_any).unwrap_or_default();
                if let (Some(app), Some(init)) = (keep(guard), initial.as_mut()) {
                    init.insert(name, app);
                }
            }
            watcher::Event::InitDone => {
                current = initial.take().unwrap_or_default();
                let _ = tx.send(Update::Apps(current.values().cloned().collect())).await;
                let _ = synced.send_replace(Ok(()));
            }
            watcher::Event::Apply(guard) => {
                let name = match &guard.0 {
                    Ok(app) => app.name_any(),
                    Err(invalid) => invalid.metadata.name.clone().unwrap_or_default(),
                };
                match keep(guard) {
                    Some(app) => current.insert(name, app),
                    None => current.remove(&name),
                };
                let _ = tx.send(Update::Apps(current.values().cloned().collect())).await;
            }
            watcher::Event::Delete(guard) => {
                let name = match &guard.0 {
                    Ok(app) => app.name_any(),
                    Err(invalid) => invalid.metadata.name.clone().unwrap_or_default(),
                };
                current.remove(&name);
                let _ = tx.send(Update::Apps(current.values().cloned().collect())).await;
            }
        }
    }
}

/// Watches one Secret by name; reports its state after the first list and on every change.
async fn watch_secret(client: Client, namespace: String, name: String, tx: mpsc::Sender<Update>) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api, config).default_backoff();
    futures_util::pin_mut!(stream);
    let mut seen: Option<Secret> = None;
    while let Some(event) = stream.next().await {
        let update = match event {
            Ok(watcher::Event::Init) => continue,
            Ok(watcher::Event::InitApply(s)) => {
                seen = Some(s);
                continue;
            }
            Ok(watcher::Event::InitDone) => seen.take(),
            Ok(watcher::Event::Apply(s)) => Some(s),
            Ok(watcher::Event::Delete(_)) => None,
            Err(err) => {
                // The API is away (restart, network) or the operator has not yet granted this
                // Secret to the pods' Role. Neither says the Secret is gone: keep what we know,
                // and the watcher retries with backoff (re-listing when it is back).
                warn!(secret = %name, %err, "watching Secret");
                continue;
            }
        };
        if tx.send(Update::Secret(name.clone(), update.map(Box::new))).await.is_err() {
            return;
        }
    }
}

async fn run_loop(
    store: Arc<KubeApps>,
    client: Client,
    namespace: String,
    mut rx: mpsc::Receiver<Update>,
    tx: mpsc::Sender<Update>,
    first: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let mut apps: Vec<PusherApp> = Vec::new();
    let mut secrets: HashMap<String, Option<Box<Secret>>> = HashMap::new();
    let mut watches: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut problems: HashMap<String, String> = HashMap::new();
    loop {
        let update = tokio::select! {
            _ = shutdown.cancelled() => break,
            update = rx.recv() => match update { Some(u) => u, None => break },
        };
        match update {
            Update::Apps(list) => {
                apps = list;
                let wanted: Vec<String> = apps.iter().map(credentials_secret).collect();
                watches.retain(|name, handle| {
                    let keep = wanted.contains(name);
                    if !keep {
                        handle.abort();
                        secrets.remove(name);
                    }
                    keep
                });
                for name in wanted {
                    watches.entry(name.clone()).or_insert_with(|| {
                        tokio::spawn(watch_secret(client.clone(), namespace.clone(), name, tx.clone()))
                    });
                }
            }
            Update::Secret(name, secret) => {
                if watches.contains_key(&name) {
                    secrets.insert(name, secret);
                }
            }
        }
        let mut served = Vec::new();
        let mut sorted: Vec<&PusherApp> = apps.iter().collect();
        sorted.sort_by_key(|a| (a.metadata.creation_timestamp.clone().map(|t| t.0), a.name_any()));
        for resource in sorted {
            let secret = secrets.get(&credentials_secret(resource)).and_then(Option::as_deref);
            let name = resource.name_any();
            match app_from_resource(resource, secret) {
                Ok(app) => {
                    problems.remove(&name);
                    served.push(app);
                }
                Err(problem) => {
                    if problems.get(&name) != Some(&problem) {
                        warn!(app = %name, %problem, "PusherApp not served");
                        problems.insert(name, problem);
                    }
                }
            }
        }
        store.replace(served);
        let all_known = apps.iter().all(|a| secrets.contains_key(&credentials_secret(a)));
        if all_known {
            first.send_if_modified(|ready| !std::mem::replace(ready, true));
        }
    }
    for handle in watches.into_values() {
        handle.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn resource(spec: serde_json::Value) -> PusherApp {
        PusherApp::new("chat", serde_json::from_value(spec).expect("spec"))
    }

    fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
        let data: BTreeMap<String, ByteString> =
            data.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect();
        let mut s = Secret { data: Some(data), ..Default::default() };
        s.metadata.name = Some(name.into());
        s
    }

    #[test]
    fn generated_credentials_give_key_secret_and_app_id() {
        let r = resource(
            json!({ "clusterRef": "main", "clientEvents": true, "limits": { "maxConnections": 50 } }),
        );
        let s = secret("chat-credentials", &[("key", "k1"), ("secret", "s1"), ("appId", "1234567")]);
        let app = app_from_resource(&r, Some(&s)).expect("app");
        assert_eq!((app.id.as_str(), app.key.as_str(), app.secret.as_str()), ("1234567", "k1", "s1"));
        assert!(app.client_events && app.enabled);
        assert_eq!(app.limits.max_connections, Some(50));
    }

    #[test]
    fn user_secrets_use_their_own_key_names_and_the_spec_app_id() {
        let r = resource(json!({ "clusterRef": "main", "appId": "42",
            "credentials": { "secretRef": { "name": "pusher", "keyKey": "PUSHER_KEY", "secretKey": "PUSHER_SECRET" } },
            "webhooks": [{ "url": "http://hooks/x", "eventTypes": ["member_added"] }] }));
        let s = secret("pusher", &[("PUSHER_KEY", "k"), ("PUSHER_SECRET", "s")]);
        let app = app_from_resource(&r, Some(&s)).expect("app");
        assert_eq!((app.id.as_str(), app.key.as_str()), ("42", "k"));
        assert_eq!(app.webhooks[0].event_types, vec![crate::apps::WebhookKind::MemberAdded]);
    }

    #[test]
    fn missing_secret_keys_or_app_id_say_what_is_wrong() {
        let r = resource(json!({ "clusterRef": "main" }));
        assert!(app_from_resource(&r, None).unwrap_err().contains("chat-credentials"));
        let no_secret = secret("chat-credentials", &[("key", "k")]);
        assert!(app_from_resource(&r, Some(&no_secret)).unwrap_err().contains("\"secret\""));
        let with_newline = secret("chat-credentials", &[("key", "k\n"), ("secret", "s"), ("appId", "1")]);
        assert!(app_from_resource(&r, Some(&with_newline)).unwrap_err().contains("whitespace"));
        let user = resource(json!({ "clusterRef": "main", "credentials": { "secretRef": { "name": "u" } } }));
        let s = secret("u", &[("key", "k"), ("secret", "s")]);
        assert!(app_from_resource(&user, Some(&s)).unwrap_err().contains("no app id yet"));
    }
}
