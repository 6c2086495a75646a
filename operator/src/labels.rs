//! The labels and names every object the operator creates carries.

use std::collections::BTreeMap;

/// `app.kubernetes.io/managed-by` of every object the operator writes.
pub const MANAGED_BY: &str = "herald-operator";
/// `app.kubernetes.io/part-of`.
pub const PART_OF: &str = "herald";
/// Annotation on the server pod template: hash of everything that needs a restart to apply.
pub const CONFIG_HASH: &str = "herald.dev/config-hash";
/// Label on Secrets the operator generated (so a person can tell them from their own).
pub const GENERATED: &str = "herald.dev/generated";

/// Component of a cluster's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// herald-server pods and their Services.
    Server,
    /// The managed Redis.
    Redis,
    /// An app's credentials.
    App,
}

impl Component {
    /// `app.kubernetes.io/component` and `app.kubernetes.io/name` values.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Component::Server => ("server", "herald-server"),
            Component::Redis => ("redis", "redis"),
            Component::App => ("app", "herald-app"),
        }
    }
}

/// Labels that select a cluster's pods of one component; never change them (Deployment
/// selectors are immutable).
pub fn selector(instance: &str, component: Component) -> BTreeMap<String, String> {
    let (component, name) = component.names();
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), name.to_owned()),
        ("app.kubernetes.io/instance".to_owned(), instance.to_owned()),
        ("app.kubernetes.io/component".to_owned(), component.to_owned()),
    ])
}

/// The labels every object of one cluster carries, whatever its component: how the operator
/// finds what it created for the cluster (and deletes what it no longer wants).
pub fn instance(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".to_owned(), instance.to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), MANAGED_BY.to_owned()),
    ])
}

/// The selector labels plus `managed-by` and `part-of`: every object the operator creates.
pub fn standard(instance: &str, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector(instance, component);
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    labels.insert("app.kubernetes.io/part-of".into(), PART_OF.into());
    labels
}

/// `k=v,k=v` form of a label set (for `status.selector` and list calls).
pub fn to_selector_string(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}
