//! The PusherApp controller: resolves the app's cluster, credentials and app id, and reports
//! them in status. The server pods read the app itself (and its Secret) live.

pub mod credentials;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use herald_crds::{PusherApp, PusherAppStatus, PusherCluster};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::instrument;

use crate::apply::{Applier, APP_MANAGER};
use crate::conditions::{self, Desired};
use crate::{Context, Error, Result};
use credentials::Resolved;

pub use herald_crds::contract::credentials::{
    generated_name as generated_secret_name, secret_name as credentials_secret_name,
};

/// Every Secret the apps name (credentials and encryption master keys), sorted, unique: the
/// only Secrets the cluster's server pods may read.
pub fn secrets_named(apps: &[PusherApp]) -> Vec<String> {
    let mut names: Vec<String> = apps
        .iter()
        .flat_map(|a| {
            let encryption = a.spec.encryption_master_key_secret_ref.as_ref().map(|r| r.name.clone());
            std::iter::once(credentials_secret_name(a)).chain(encryption)
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The app id in use by an app: the spec's, else the one recorded in status.
fn app_id_of(app: &PusherApp) -> Option<String> {
    app.spec.app_id.clone().or_else(|| app.status.as_ref().and_then(|s| s.app_id.clone()))
}

/// A fresh app id not used by `taken`: seven digits, like hosted Pusher's.
pub fn new_app_id(taken: &[String]) -> String {
    loop {
        let id = rand::random_range(1_000_000u32..10_000_000).to_string();
        if !taken.contains(&id) {
            return id;
        }
    }
}

/// Whether `app` lost a tie with `other` (same app id or key): the older object keeps it.
fn loses_to(app: &PusherApp, other: &PusherApp) -> bool {
    let age = |a: &PusherApp| (a.metadata.creation_timestamp.clone().map(|t| t.0), a.name_any());
    age(other) < age(app)
}

/// Reconciles one PusherApp.
#[instrument(skip_all, fields(namespace = app.namespace().unwrap_or_default(), app = app.name_any()))]
pub async fn reconcile(app: Arc<PusherApp>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.measure("app");
    let namespace = app.namespace().ok_or(Error::MissingMeta("namespace"))?;
    let name = app.name_any();
    let cluster_ref = &app.spec.cluster_ref;

    // Dereference: the cluster, its other apps.
    let cluster =
        Api::<PusherCluster>::namespaced(ctx.client.clone(), &namespace).get_opt(cluster_ref).await?;
    let siblings: Vec<PusherApp> = Api::<PusherApp>::namespaced(ctx.client.clone(), &namespace)
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|a| a.spec.cluster_ref == *cluster_ref && a.name_any() != name)
        .collect();

    let applier = Applier::new(ctx.client.clone(), app.as_ref(), APP_MANAGER)?;
    let taken: Vec<String> = siblings.iter().filter_map(app_id_of).collect();
    let resolved = credentials::resolve(&app, &applier, &ctx, &taken).await?;
    let app_id = resolved
        .app_id()
        .map(str::to_owned)
        .or_else(|| app_id_of(&app))
        .unwrap_or_else(|| new_app_id(&taken));

    let duplicate_id =
        siblings.iter().find(|s| app_id_of(s).as_deref() == Some(app_id.as_str()) && loses_to(&app, s));
    let accepted = match (&cluster, duplicate_id) {
        (None, _) => Desired::no(
            "Accepted",
            "ClusterNotFound",
            format!(
                "PusherCluster {namespace}/{cluster_ref} does not exist: create it or fix spec.clusterRef"
            ),
        ),
        (Some(_), Some(other)) => Desired::no(
            "Accepted",
            "DuplicateAppId",
            format!(
                "app id {app_id} is already used by PusherApp {} on this cluster: choose another spec.appId",
                other.name_any()
            ),
        ),
        (Some(_), None) => {
            Desired::yes("Accepted", "ClusterFound", format!("served by PusherCluster {cluster_ref}"))
        }
    };
    let credentials = match &resolved {
        Resolved::Ok { key, .. } => {
            let clash = siblings.iter().find(|s| {
                s.status.as_ref().and_then(|st| st.key.as_deref()) == Some(key.as_str()) && loses_to(&app, s)
            });
            match clash {
                Some(other) => Desired::no(
                    "CredentialsResolved",
                    "DuplicateKey",
                    format!("key {key} is already used by PusherApp {} on this cluster: give this app its own key", other.name_any()),
                ),
                None => Desired::yes("CredentialsResolved", resolved.reason(), resolved.message()),
            }
        }
        Resolved::Failed { .. } => Desired::no("CredentialsResolved", resolved.reason(), resolved.message()),
    };
    let cluster_ready = cluster
        .as_ref()
        .and_then(|c| c.status.as_ref())
        .is_some_and(|s| conditions::is_true(&s.conditions, "Ready"));
    let ready = if !accepted.status {
        Desired::no("Ready", accepted.reason, accepted.message.clone())
    } else if !credentials.status {
        Desired::no("Ready", credentials.reason, credentials.message.clone())
    } else if !app.spec.enabled {
        Desired::no("Ready", "Disabled", "spec.enabled is false: connections get 4003 and API calls 403")
    } else if !cluster_ready {
        Desired::no("Ready", "ClusterNotReady", format!("PusherCluster {cluster_ref} is not Ready yet"))
    } else {
        Desired::yes("Ready", "Serving", format!("app {app_id} is served by PusherCluster {cluster_ref}"))
    };

    let previous = app.status.clone().unwrap_or_default();
    let usage = match (&cluster, accepted.status) {
        (Some(cluster), true) => usage::read(&ctx.client, cluster, &namespace, &app_id).await,
        _ => None,
    };
    let (conditions, flips) = conditions::merge(
        &previous.conditions,
        vec![ready, accepted, credentials],
        app.metadata.generation,
        Timestamp::now(),
    );
    let status = PusherAppStatus {
        observed_generation: app.metadata.generation,
        conditions,
        app_id: Some(app_id),
        key: resolved.key().map(str::to_owned),
        credentials_secret: Some(credentials_secret_name(&app)),
        connections: usage.map(|u| u.0).or(previous.connections),
        channels: usage.map(|u| u.1).or(previous.channels),
    };
    if status != previous {
        let patch = json!({ "apiVersion": "herald.dev/v1alpha1", "kind": "PusherApp", "status": status });
        Api::<PusherApp>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(&name, &PatchParams::apply(APP_MANAGER).force(), &Patch::Apply(&patch))
            .await?;
    }
    // Every condition of an app is one that should hold: a flip to False is bad news.
    conditions::publish_flips(&ctx.recorder, &app.object_ref(&()), flips, |f| !f.status).await;
    // Usage is refreshed on this period too, so `kubectl get pusherapps` stays current.
    let settled = status.conditions.iter().all(|c| c.status == "True");
    Ok(Action::requeue(if settled { ctx.usage_refresh } else { Duration::from_secs(15) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, spec: serde_json::Value) -> PusherApp {
        PusherApp::new(name, serde_json::from_value(spec).expect("spec"))
    }

    #[test]
    fn the_secrets_apps_name_are_listed_once_each() {
        let apps = [
            app("chat", serde_json::json!({ "clusterRef": "main" })),
            app(
                "shop",
                serde_json::json!({ "clusterRef": "main", "credentials": { "secretRef": { "name": "shared" } },
                "encryptionMasterKeySecretRef": { "name": "shared", "key": "master" } }),
            ),
            app(
                "games",
                serde_json::json!({ "clusterRef": "main", "credentials": { "secretRef": { "name": "games" } } }),
            ),
        ];
        assert_eq!(secrets_named(&apps), vec!["chat-credentials", "games", "shared"]);
    }

    #[test]
    fn new_app_ids_are_seven_digits_and_avoid_taken_ones() {
        for _ in 0..100 {
            let id = new_app_id(&["1234567".into()]);
            assert_eq!(id.len(), 7);
            assert!(id.chars().all(|c| c.is_ascii_digit()));
            assert_ne!(id, "1234567");
        }
    }
}
