//! herald-operator: reconciles `PusherCluster` (server pods, Services, Redis, RBAC) and
//! `PusherApp` (app id, credentials, status) with kube-runtime controllers.
//!
//! Layout, one reconcile = dereference → validate → build (pure) → apply → status; modules in
//! layers, each importing only from the ones below (see `docs/architecture.md`):
//! - [`run`]: wiring (namespaces, controllers, leader election, shutdown).
//! - [`cluster`]: the PusherCluster controller; [`cluster::validate`] makes the one value the
//!   builders take, [`cluster::build`] has a pure builder per object, [`cluster::status`].
//! - [`app`]: the PusherApp controller (credentials, app ids, live usage).
//! - [`apply`]: server-side apply with one field manager per controller, create-once Secrets,
//!   pruning of owned objects no longer wanted (found by label).
//! - [`conditions`]: status conditions whose `lastTransitionTime` moves only on a flip.
//! - [`metrics`], [`web`]: the controller metrics trio, `/metrics` and `/healthz`.
//! - [`leader`]: optional Lease-based leader election for 2+ replicas.
//! - [`names`], [`labels`]: object names, Secret keys and labels, shared by both controllers.
//!
//! What the operator and the server pods agree on (config file, Redis keys, credentials
//! Secret, webhook kinds) is `herald_crds::contract`.

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
