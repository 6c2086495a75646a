//! Names of a cluster's objects and of the keys in the Secrets the operator reads or writes:
//! what the controllers of both kinds refer to, so neither imports the other.

/// Secret key of the managed Redis password.
pub const REDIS_PASSWORD_KEY: &str = "password";
/// Secret key of a Redis URL (managed Secret, and the default for external ones).
pub const REDIS_URL_KEY: &str = "url";

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
