//! herald-operator: reconciles `PusherCluster` (server pods, Services, Redis, RBAC) and
//! `PusherApp` (app id, credentials, status) with kube-runtime controllers.
//!
//! Layout, one reconcile = dereference → validate → build (pure) → apply → status:
//! - [`cluster`]: the PusherCluster controller; [`cluster::build`] turns a spec into objects.
//! - [`app`]: the PusherApp controller (credentials, app ids).
//! - [`apply`]: server-side apply with one field manager per controller, standard labels.
//! - [`conditions`]: status conditions whose `lastTransitionTime` moves only on a flip.
//! - [`metrics`], [`web`]: the controller metrics trio, `/metrics` and `/healthz`.
//! - [`leader`]: optional Lease-based leader election for 2+ replicas.
//! - [`run`]: wiring (namespaces, controllers, shutdown).

pub mod app;
pub mod apply;
pub mod cluster;
pub mod conditions;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod run;
pub mod web;

use std::sync::Arc;

use kube::runtime::events::Recorder;
use kube::Client;

/// What a reconcile can fail with. Each variant has a short label for metrics and Events.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be serialized for apply.
    #[error("serializing {what}: {source}")]
    Serialize {
        /// What was being serialized.
        what: &'static str,
        /// Why it failed.
        source: serde_json::Error,
    },
    /// The object lacks a namespace or name (never for namespaced custom resources).
    #[error("object has no {0}")]
    MissingMeta(&'static str),
    /// The rendered server configuration could not be written.
    #[error("rendering herald.toml: {0}")]
    Config(#[from] toml::ser::Error),
}

impl Error {
    /// Low-cardinality label for `herald_operator_reconcile_failures_total{error}`.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Serialize { .. } => "serialize",
            Error::MissingMeta(_) => "missing_meta",
            Error::Config(_) => "config",
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shared by every reconcile.
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// Kubernetes Events, reported as `herald-operator`.
    pub recorder: Recorder,
    /// The controller metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Image for clusters that do not name one.
    pub server_image: String,
    /// How often settled apps' `status.connections` / `status.channels` are refreshed.
    pub usage_refresh: std::time::Duration,
}
