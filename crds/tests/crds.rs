//! The committed CRD YAML matches the types, and the CEL rules accept and refuse what they
//! should, evaluated offline (the e2e suite checks the same rules in a real kube-apiserver).

use herald_crds::app::{CredentialsSecretRef, CredentialsSpec};
use herald_crds::cluster::{ExternalRedis, RedisMode, SecretKeyRef};
use herald_crds::{PusherApp, PusherAppSpec, PusherCluster, PusherClusterSpec};

fn committed(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|err| panic!("cannot read {}: {err}", full.display()))
}

#[test]
fn committed_crd_yaml_matches_the_types_in_crds_and_in_the_chart() {
    let generated = herald_crds::crds_yaml().expect("CRDs render");
    for path in ["crds/herald.dev.yaml", "charts/herald-operator/crds/herald.dev.yaml"] {
        assert!(
            committed(path) == generated,
            "{path} is stale: run `cargo run -p herald-crds --bin herald-crdgen -- --write`"
        );
    }
}

fn app(cluster: &str, app_id: Option<&str>) -> PusherApp {
    let spec: PusherAppSpec =
        serde_json::from_value(serde_json::json!({ "clusterRef": cluster })).expect("minimal spec parses");
    PusherApp::new("chat", PusherAppSpec { app_id: app_id.map(str::to_owned), ..spec })
}

fn cluster(spec: serde_json::Value) -> PusherCluster {
    PusherCluster::new("main", serde_json::from_value::<PusherClusterSpec>(spec).expect("spec parses"))
}

#[test]
fn minimal_specs_get_the_documented_defaults() {
    let app = app("main", None);
    assert!(app.spec.enabled, "apps are enabled by default");
    assert!(app.spec.watchlist_events);
    assert!(!app.spec.client_events, "client events are opt-in, as on Pusher");
    let cluster = cluster(serde_json::json!({}));
    assert_eq!(cluster.spec.replicas, 2);
    assert_eq!(cluster.spec.redis.mode, RedisMode::Managed);
    assert!(cluster.spec.pod_disruption_budget.enabled);
    assert!(!cluster.spec.paused);
}

#[test]
fn cluster_ref_cannot_change() {
    let old = app("main", Some("1001"));
    let moved = app("other", Some("1001"));
    let err = moved.validate_cel_update(&old).expect_err("moving an app is refused");
    assert!(err.to_string().contains("clusterRef is immutable"), "{err}");
    assert!(old.validate_cel_update(&old).is_ok());
}

#[test]
fn app_id_is_immutable_once_set_but_may_be_given_later() {
    let old = app("main", Some("1001"));
    let err = app("main", Some("1002")).validate_cel_update(&old).expect_err("a changed app id is refused");
    assert!(err.to_string().contains("appId is immutable"), "{err}");
    let err = app("main", None).validate_cel_update(&old).expect_err("removing the app id is refused");
    assert!(err.to_string().contains("appId is immutable"), "{err}");
    assert!(app("main", Some("1001")).validate_cel_update(&app("main", None)).is_ok());
}

#[test]
fn external_redis_needs_its_url_secret() {
    let external = cluster(serde_json::json!({ "redis": { "mode": "External" } }));
    let err = external.validate_cel().expect_err("External without a Secret is refused");
    assert!(err.to_string().contains("redis.external"), "{err}");

    let mut ok = external.clone();
    ok.spec.redis.external = Some(ExternalRedis {
        url_secret_ref: SecretKeyRef { name: "redis-url".into(), key: None },
        topology: None,
        sentinel_master: None,
        ca_secret_ref: None,
        client_cert_secret_name: None,
    });
    assert!(ok.validate_cel().is_ok());

    let mut stray = ok.clone();
    stray.spec.redis.mode = RedisMode::Managed;
    assert!(stray.validate_cel().is_err(), "an external URL with managed Redis is a mistake worth refusing");
}

#[test]
fn autoscaling_bounds_are_ordered() {
    let bad = cluster(serde_json::json!({ "autoscaling": { "minReplicas": 5, "maxReplicas": 2 } }));
    let err = bad.validate_cel().expect_err("min > max is refused");
    assert!(err.to_string().contains("minReplicas must not exceed maxReplicas"), "{err}");
    let good = cluster(serde_json::json!({ "autoscaling": { "minReplicas": 2, "maxReplicas": 5 } }));
    assert!(good.validate_cel().is_ok());
}

#[test]
fn credentials_secret_keys_default_to_key_and_secret() {
    let creds = CredentialsSpec {
        secret_ref: CredentialsSecretRef { name: "chat-creds".into(), key_key: None, secret_key: None },
    };
    assert_eq!(creds.secret_ref.key_key(), "key");
    assert_eq!(creds.secret_ref.secret_key(), "secret");
}

#[test]
fn a_sentinel_redis_needs_its_master_name() {
    let sentinel = cluster(serde_json::json!({
        "redis": { "mode": "External", "external": { "urlSecretRef": { "name": "s" }, "topology": "Sentinel" } }
    }));
    let err = sentinel.validate_cel().expect_err("Sentinel without a master name is refused");
    assert!(err.to_string().contains("sentinelMaster"), "{err}");
    let named = cluster(serde_json::json!({
        "redis": { "mode": "External", "external": { "urlSecretRef": { "name": "s" }, "topology": "Sentinel", "sentinelMaster": "mymaster" } }
    }));
    assert!(named.validate_cel().is_ok());
}

#[test]
fn a_private_ca_works_with_every_topology_and_a_master_name_only_with_sentinel() {
    for topology in ["Standalone", "Sentinel", "Cluster"] {
        let master = (topology == "Sentinel").then_some("m");
        let c = cluster(serde_json::json!({
            "redis": { "mode": "External", "external": {
                "urlSecretRef": { "name": "s" }, "topology": topology, "sentinelMaster": master,
                "caSecretRef": { "name": "ca" }, "clientCertSecretName": "client"
            } }
        }));
        assert!(c.validate_cel().is_ok(), "{topology}: {:?}", c.validate_cel());
    }
    let c = cluster(serde_json::json!({
        "redis": { "mode": "External", "external": {
            "urlSecretRef": { "name": "s" }, "topology": "Cluster", "sentinelMaster": "m"
        } }
    }));
    let err = c.validate_cel().expect_err("a master name without Sentinel is refused");
    assert!(err.to_string().contains("sentinelMaster goes with topology Sentinel"), "{err}");
}
