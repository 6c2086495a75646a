//! Unit tests of the pure builders.

use super::*;
use serde_json::json;

fn cluster(spec: serde_json::Value) -> PusherCluster {
    let mut c = PusherCluster::new("main", serde_json::from_value(spec).expect("spec"));
    c.metadata.namespace = Some("chat".into());
    c
}

fn inputs() -> Inputs {
    Inputs { default_image: "herald-server:test".into(), app_secrets: vec![], external_redis_hash: None }
}

fn pod_hash(r: &Resources) -> String {
    annotations_of(&r.deployment)[labels::CONFIG_HASH].clone()
}

#[test]
fn server_pods_may_read_no_secret_until_an_app_names_one() {
    let r = build(&cluster(json!({})), &inputs()).expect("build");
    let rules = r.role.rules.expect("rules");
    assert_eq!(rules.len(), 1, "only PusherApps: {rules:?}");
    assert_eq!(rules[0].resources.as_deref(), Some(&["pusherapps".to_owned()][..]));

    let with_apps = Inputs { app_secrets: vec!["a-credentials".into(), "b-keys".into()], ..inputs() };
    let rules = build(&cluster(json!({})), &with_apps).expect("build").role.rules.expect("rules");
    let secrets =
        rules.iter().find(|r| r.resources.as_deref() == Some(&["secrets".to_owned()][..])).expect("rule");
    assert_eq!(
        secrets.resource_names.as_deref(),
        Some(&["a-credentials".to_owned(), "b-keys".to_owned()][..])
    );
    assert_eq!(secrets.verbs, vec!["get", "list", "watch"]);
}

#[test]
fn autoscaled_clusters_leave_replicas_to_the_hpa() {
    let fixed = build(&cluster(json!({ "replicas": 3 })), &inputs()).expect("build");
    assert_eq!(fixed.deployment.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert!(fixed.hpa.is_none());

    let auto = build(&cluster(json!({ "autoscaling": { "minReplicas": 2, "maxReplicas": 8 } })), &inputs())
        .expect("build");
    assert_eq!(
        auto.deployment.spec.as_ref().and_then(|s| s.replicas),
        None,
        "the operator must not fight the HPA"
    );
    let hpa = auto.hpa.expect("hpa").spec.expect("spec");
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 8));
    assert_eq!(hpa.scale_target_ref.name, "main");
}

#[test]
fn config_changes_roll_the_pods_but_scaling_does_not() {
    let base = pod_hash(&build(&cluster(json!({ "replicas": 2 })), &inputs()).expect("build"));
    let scaled = pod_hash(&build(&cluster(json!({ "replicas": 7 })), &inputs()).expect("build"));
    assert_eq!(base, scaled, "scaling must not restart every pod");
    let tuned =
        pod_hash(&build(&cluster(json!({ "server": { "activityTimeout": 30 } })), &inputs()).expect("build"));
    assert_ne!(base, tuned);
    let external =
        json!({ "redis": { "mode": "External", "external": { "urlSecretRef": { "name": "r" } } } });
    let one = pod_hash(
        &build(&cluster(external.clone()), &Inputs { external_redis_hash: Some("a".into()), ..inputs() })
            .unwrap(),
    );
    let two = pod_hash(
        &build(&cluster(external), &Inputs { external_redis_hash: Some("b".into()), ..inputs() }).unwrap(),
    );
    assert_ne!(one, two, "a new Redis URL in the user's Secret rolls the pods");
}

#[test]
fn external_redis_uses_the_users_secret_and_runs_no_redis() {
    let spec = json!({ "redis": { "mode": "External", "external": { "urlSecretRef": { "name": "redis-url", "key": "uri" } } } });
    let r = build(&cluster(spec), &inputs()).expect("build");
    assert!(r.redis.is_none());
    let container = &r.deployment.spec.expect("spec").template.spec.expect("pod").containers[0];
    let env = container.env.as_ref().expect("env");
    let url = env.iter().find(|e| e.name == "HERALD_REDIS_URL").expect("redis env");
    let key_ref = url.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).expect("secretKeyRef");
    assert_eq!((key_ref.name.as_str(), key_ref.key.as_str()), ("redis-url", "uri"));
}

#[test]
fn managed_redis_is_password_protected_from_its_secret() {
    let r = build(&cluster(json!({})), &inputs()).expect("build");
    let redis = r.redis.expect("managed redis");
    let container = &redis.deployment.spec.expect("spec").template.spec.expect("pod").containers[0];
    assert!(container
        .args
        .as_ref()
        .expect("args")
        .windows(2)
        .any(|w| w == ["--requirepass", "$(REDIS_PASSWORD)"]));
    let secret = redis_secret(&cluster(json!({})), "chat").expect("secret");
    let data = secret.data.expect("data");
    let url = String::from_utf8(data[REDIS_URL_KEY].0.clone()).expect("utf8");
    let password = String::from_utf8(data[REDIS_PASSWORD_KEY].0.clone()).expect("utf8");
    assert_eq!(url, format!("redis://:{password}@main-redis.chat.svc:6379/0"));
    let again = redis_secret(&cluster(json!({})), "chat").expect("secret");
    assert_ne!(
        again.data.expect("data")[REDIS_PASSWORD_KEY],
        data[REDIS_PASSWORD_KEY],
        "passwords are random"
    );
}

#[test]
fn pods_get_time_to_drain_and_run_locked_down() {
    let r = build(&cluster(json!({ "server": { "shutdownGrace": 20 } })), &inputs()).expect("build");
    let pod = r.deployment.spec.expect("spec").template.spec.expect("pod");
    assert!(pod.termination_grace_period_seconds.expect("grace") >= 20 + PRE_STOP_SLEEP);
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().expect("security context");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.as_ref().and_then(|c| c.drop.clone()), Some(vec!["ALL".to_owned()]));
    assert_eq!(c.image.as_deref(), Some("herald-server:test"));
    let args = c.args.clone().expect("args");
    assert!(
        args.windows(2).any(|w| w == ["--cluster-name", "main"])
            && args.windows(2).any(|w| w == ["--namespace", "chat"])
    );
}

#[test]
fn optional_objects_follow_their_switches() {
    let plain = build(&cluster(json!({})), &inputs()).expect("build");
    assert!(plain.pdb.is_some() && plain.network_policies.is_none());
    let r = build(
        &cluster(
            json!({ "podDisruptionBudget": { "enabled": false }, "networkPolicy": { "enabled": true } }),
        ),
        &inputs(),
    )
    .expect("build");
    assert!(r.pdb.is_none());
    let [server, redis] = r.network_policies.expect("policies");
    assert_eq!(server.metadata.name.as_deref(), Some("main"));
    let from = redis.spec.expect("spec").ingress.expect("ingress")[0].from.clone().expect("from");
    assert!(from[0].pod_selector.is_some(), "only server pods reach Redis");
}

#[test]
fn service_type_port_and_annotations_come_from_the_spec() {
    let spec = json!({ "service": { "type": "LoadBalancer", "port": 443, "annotations": { "lb/internal": "true" } } });
    let r = build(&cluster(spec), &inputs()).expect("build");
    let svc = r.service;
    assert_eq!(svc.metadata.annotations.expect("annotations")["lb/internal"], "true");
    let s = svc.spec.expect("spec");
    assert_eq!(s.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(s.ports.expect("ports")[0].port, 443);
    let metrics = r.metrics_service.spec.expect("spec");
    assert_eq!(metrics.type_.as_deref(), Some("ClusterIP"), "metrics never go through a load balancer");
}

#[test]
fn the_config_file_the_operator_writes_is_the_one_the_server_loads() {
    use herald_server::config::{Cli, ClusterMode, Config};
    use std::time::Duration;
    let c = cluster(json!({
        "server": { "activityTimeout": 60, "maxMessageSize": 2048, "shutdownGrace": 7, "errorDialect": "pusher" }
    }));
    let text = server_config(&c).expect("config");
    // What the Deployment passes besides the file: args and the Redis URL from a Secret.
    let cli = Cli {
        apps: Some("kubernetes".into()),
        cluster_name: Some("main".into()),
        namespace: Some("chat".into()),
        redis_url: Some("redis://redis.chat.svc:6379/0".into()),
        node_id: Some("main-abc".into()),
        ..Cli::default()
    };
    let config = Config::load_with_file(&cli, Some(("herald.toml", &text))).expect("the server accepts it");
    let s = &config.settings;
    assert_eq!((s.port, s.metrics_port), (SERVER_PORT as u16, METRICS_PORT as u16));
    assert_eq!(s.activity_timeout, Duration::from_secs(60));
    assert_eq!(s.max_message_size, 2048);
    assert_eq!(s.shutdown_grace, Duration::from_secs(7));
    assert_eq!(s.error_dialect, herald_server::protocol::frames::ErrorDialect::Pusher);
    match &s.cluster {
        ClusterMode::Redis(redis) => assert_eq!(redis.prefix, "herald:chat:main"),
        other => panic!("expected the Redis backend, got {other:?}"),
    }
}

#[test]
fn sentinel_tls_and_certificates_reach_the_pods_as_config_and_files() {
    use herald_server::config::{Cli, ClusterMode, Config, RedisMode as ServerRedisMode};
    let c = cluster(json!({
        "redis": { "mode": "External", "external": {
            "urlSecretRef": { "name": "redis-url" }, "topology": "Sentinel", "sentinelMaster": "mymaster",
            "caSecretRef": { "name": "redis-ca", "key": "ca.pem" }, "clientCertSecretName": "redis-client"
        } },
        "tls": { "secretName": "realtime-tls" }
    }));
    let r = build(&c, &inputs()).expect("build");
    let pod = r.deployment.spec.expect("spec").template.spec.expect("pod");
    let volumes: Vec<String> = pod
        .volumes
        .unwrap_or_default()
        .iter()
        .map(|v| v.secret.as_ref().and_then(|s| s.secret_name.clone()).unwrap_or_default())
        .collect();
    assert_eq!(volumes, ["", "redis-ca", "redis-client", "realtime-tls"], "the config map, then each Secret");
    let mounts: Vec<String> = pod.containers[0]
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|m| m.mount_path.clone())
        .collect();
    assert_eq!(
        mounts,
        ["/etc/herald", "/etc/herald-redis-ca", "/etc/herald-redis-client", "/etc/herald-tls"]
    );

    // The server loads that file (with the sentinels' URL from the Secret, as the pod gets it).
    let text = server_config(&c).expect("config");
    let cli = Cli {
        apps: Some("kubernetes".into()),
        cluster_name: Some("main".into()),
        namespace: Some("chat".into()),
        redis_url: Some("rediss://s1:26379,rediss://s2:26379".into()),
        ..Cli::default()
    };
    let config = Config::load_with_file(&cli, Some(("herald.toml", &text))).expect("loads");
    match &config.settings.cluster {
        ClusterMode::Redis(redis) => {
            assert_eq!(redis.mode, ServerRedisMode::Sentinel { master: "mymaster".into() });
            assert_eq!(
                redis.tls.ca_file.as_deref().map(|p| p.display().to_string()).as_deref(),
                Some("/etc/herald-redis-ca/ca.crt")
            );
            assert!(redis.tls.client.is_some(), "the client certificate, for sentinels and data nodes");
        }
        other => panic!("{other:?}"),
    }
    let standalone = cluster(json!({
        "redis": { "mode": "External", "external": {
            "urlSecretRef": { "name": "redis-url" }, "caSecretRef": { "name": "redis-ca" }
        } },
        "tls": { "secretName": "realtime-tls" }
    }));
    let text = server_config(&standalone).expect("config");
    let cli = Cli { redis_url: Some("rediss://redis:6380".into()), ..cli };
    let config = Config::load_with_file(&cli, Some(("herald.toml", &text))).expect("loads");
    let tls = config.settings.tls.expect("TLS on the public port");
    assert_eq!(tls.cert.display().to_string(), "/etc/herald-tls/tls.crt");
    match &config.settings.cluster {
        ClusterMode::Redis(redis) => {
            assert_eq!(
                redis.tls.ca_file.as_deref().map(|p| p.display().to_string()).as_deref(),
                Some("/etc/herald-redis-ca/ca.crt")
            );
            assert_eq!(redis.mode, ServerRedisMode::Standalone);
        }
        other => panic!("{other:?}"),
    }
    let sentinel_only = cluster(json!({
        "redis": { "mode": "External", "external": {
            "urlSecretRef": { "name": "redis-url" }, "topology": "Sentinel", "sentinelMaster": "mymaster"
        } }
    }));
    let text = server_config(&sentinel_only).expect("config");
    let cli = Cli { redis_url: Some("redis://s1:26379,redis://s2:26379".into()), ..cli };
    let config = Config::load_with_file(&cli, Some(("herald.toml", &text))).expect("loads");
    match &config.settings.cluster {
        ClusterMode::Redis(redis) => {
            assert_eq!(redis.mode, ServerRedisMode::Sentinel { master: "mymaster".into() })
        }
        other => panic!("{other:?}"),
    }

    // A Redis Cluster over TLS with a private CA (ElastiCache with cluster mode and in-transit
    // encryption): the seed URLs come from the Secret, the CA as a mounted file.
    let sharded = cluster(json!({
        "redis": { "mode": "External", "external": {
            "urlSecretRef": { "name": "redis-url" }, "topology": "Cluster",
            "caSecretRef": { "name": "redis-ca" }
        } }
    }));
    let text = server_config(&sharded).expect("config");
    let cli = Cli { redis_url: Some("rediss://c1:6379,rediss://c2:6379".into()), ..cli };
    let config = Config::load_with_file(&cli, Some(("herald.toml", &text))).expect("loads");
    match &config.settings.cluster {
        ClusterMode::Redis(redis) => {
            assert_eq!(redis.mode, ServerRedisMode::Cluster);
            assert!(redis.tls.ca_file.is_some());
        }
        other => panic!("{other:?}"),
    }
}
