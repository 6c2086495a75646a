//! The validate phase: a PusherCluster and what the dereference phase read (its apps' Secrets,
//! the external Redis Secret's hash) become one [`ValidatedCluster`], the value every builder
//! takes. What the builders share is decided here once: names, the config file and its hash,
//! the image, where the Redis URL comes from.

use herald_crds::cluster::{PusherClusterSpec, RedisMode};
use herald_crds::PusherCluster;

use super::build::{config_hash, server_config, Inputs};
use crate::names::{self, REDIS_URL_KEY};
use crate::{Error, Result};

/// A cluster whose spec the builders can turn into objects.
#[derive(Debug, Clone)]
pub struct ValidatedCluster<'a> {
    /// The resource itself (owner of every object).
    pub cluster: &'a PusherCluster,
    /// Its spec.
    pub spec: &'a PusherClusterSpec,
    /// Its name: the instance label and the prefix of every object's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The server's `herald.toml`.
    pub config: String,
    /// Hash of what a pod reads only at start; a change rolls the pods.
    pub config_hash: String,
    /// The server image.
    pub image: String,
    /// The Secrets the server pods may read, sorted.
    pub app_secrets: Vec<String>,
    /// Secret name and key of the Redis URL the pods get.
    pub redis_url_secret: (String, String),
}

/// Validates a cluster for the builders.
pub fn validate<'a>(cluster: &'a PusherCluster, inputs: &Inputs) -> Result<ValidatedCluster<'a>> {
    let name = cluster.metadata.name.clone().ok_or(Error::MissingMeta("name"))?;
    let namespace = cluster.metadata.namespace.clone().ok_or(Error::MissingMeta("namespace"))?;
    let spec = &cluster.spec;
    let config = server_config(cluster)?;
    let config_hash = config_hash(&config, cluster, inputs);
    let redis_url_secret = match spec.redis.mode {
        RedisMode::Managed => (names::redis(&name), REDIS_URL_KEY.to_owned()),
        // A missing reference is reported by the RedisReady condition (status phase).
        RedisMode::External => {
            let r = spec.redis.external.as_ref().map(|e| &e.url_secret_ref);
            let secret = r.map(|r| r.name.clone()).unwrap_or_default();
            let key = r.and_then(|r| r.key.clone()).unwrap_or_else(|| REDIS_URL_KEY.into());
            (secret, key)
        }
    };
    Ok(ValidatedCluster {
        cluster,
        spec,
        image: spec.image.clone().unwrap_or_else(|| inputs.default_image.clone()),
        app_secrets: inputs.app_secrets.clone(),
        name,
        namespace,
        config,
        config_hash,
        redis_url_secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(spec: serde_json::Value) -> PusherCluster {
        let mut c = PusherCluster::new("main", serde_json::from_value(spec).expect("spec"));
        c.metadata.namespace = Some("chat".into());
        c
    }

    fn inputs() -> Inputs {
        Inputs { default_image: "herald-server:test".into(), app_secrets: vec![], external_redis_hash: None }
    }

    #[test]
    fn managed_redis_url_comes_from_the_managed_secret_and_external_from_the_users() {
        let managed = cluster(serde_json::json!({}));
        let v = validate(&managed, &inputs()).expect("valid");
        assert_eq!(v.redis_url_secret, ("main-redis".to_owned(), "url".to_owned()));
        assert_eq!(v.image, "herald-server:test");
        let external = cluster(serde_json::json!({
            "image": "mine:1",
            "redis": { "mode": "External", "external": { "urlSecretRef": { "name": "r", "key": "u" } } }
        }));
        let v = validate(&external, &inputs()).expect("valid");
        assert_eq!(v.redis_url_secret, ("r".to_owned(), "u".to_owned()));
        assert_eq!(v.image, "mine:1");
    }

    #[test]
    fn a_cluster_without_a_namespace_is_refused() {
        let mut c = cluster(serde_json::json!({}));
        c.metadata.namespace = None;
        assert!(matches!(validate(&c, &inputs()), Err(Error::MissingMeta("namespace"))));
    }
}
