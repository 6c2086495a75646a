//! The operator against a real kube-apiserver + etcd + kube-controller-manager. One control
//! plane and one `herald-operator` process serve every test; each test works in a namespace
//! of its own.

use std::sync::OnceLock;
use std::time::Duration;

use herald_crds::{PusherApp, PusherCluster};
use herald_e2e::{eventually, ControlPlane, Process};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

struct Env {
    plane: ControlPlane,
    _operator: Process,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let plane = ControlPlane::start();
        plane.install_crds();
        // Several namespaces, as WATCH_NAMESPACE allows (one controller pair per namespace).
        let operator = plane.start_operator(&[
            ("HERALD_SERVER_IMAGE", "herald-server:e2e"),
            ("WATCH_NAMESPACE", "managed,generated,gitops,invalid,drift,external"),
        ]);
        Env { plane, _operator: operator }
    })
}

const WAIT: Duration = Duration::from_secs(60);

async fn setup(namespace: &str) -> (&'static ControlPlane, Client) {
    let plane = &env().plane;
    let client = plane.client().await;
    plane.namespace(&client, namespace).await;
    (plane, client)
}

async fn create_cluster(client: &Client, ns: &str, name: &str, spec: serde_json::Value) -> PusherCluster {
    let cluster: PusherCluster = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "PusherCluster",
        "metadata": { "name": name }, "spec": spec
    }))
    .expect("cluster");
    Api::<PusherCluster>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cluster)
        .await
        .expect("create cluster")
}

async fn create_app(client: &Client, ns: &str, name: &str, spec: serde_json::Value) -> PusherApp {
    let app: PusherApp = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "PusherApp",
        "metadata": { "name": name }, "spec": spec
    }))
    .expect("app");
    Api::<PusherApp>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &app)
        .await
        .expect("create app")
}

async fn get<K>(client: &Client, ns: &str, name: &str) -> Option<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns).get_opt(name).await.expect("get")
}

fn condition<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Waits until the cluster's condition `type_` has `status`; returns the cluster.
async fn cluster_condition(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    status: &str,
) -> PusherCluster {
    eventually(&format!("PusherCluster {ns}/{name} {type_}={status}"), WAIT, || async {
        let c: PusherCluster = get(client, ns, name).await?;
        let st = c.status.as_ref()?;
        (condition(&st.conditions, type_)?.status == status).then_some(c)
    })
    .await
}

async fn app_condition(client: &Client, ns: &str, name: &str, type_: &str, status: &str) -> PusherApp {
    eventually(&format!("PusherApp {ns}/{name} {type_}={status}"), WAIT, || async {
        let a: PusherApp = get(client, ns, name).await?;
        let st = a.status.as_ref()?;
        (condition(&st.conditions, type_)?.status == status).then_some(a)
    })
    .await
}

/// The pod template's config hash: it changes exactly when the pods must restart.
fn hash(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default()["herald.dev/config-hash"]
        .clone()
}

fn owned_by(meta: &kube::api::ObjectMeta, owner_uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|r| r.uid == owner_uid && r.controller == Some(true))
}

#[tokio::test(flavor = "multi_thread")]
async fn managed_cluster_gets_every_object_owned_and_ready_when_pods_are() {
    let ns = "managed";
    let (plane, client) = setup(ns).await;
    let cluster = create_cluster(&client, ns, "main", json!({ "replicas": 2 })).await;
    let uid = cluster.uid().expect("uid");

    let deployment: Deployment = eventually("server Deployment", WAIT, || get(&client, ns, "main")).await;
    assert!(owned_by(&deployment.metadata, &uid), "Deployment is owned by the cluster");
    let spec = deployment.spec.clone().expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.clone().expect("pod spec");
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some("herald-server:e2e"), "the operator's default image is used");
    let readiness =
        container.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("readiness probe");
    assert_eq!(readiness.path.as_deref(), Some("/readyz"));
    let liveness =
        container.liveness_probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("liveness probe");
    assert_eq!(liveness.path.as_deref(), Some("/healthz"));
    assert!(container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()).is_some(), "preStop drain");
    let security = container.security_context.as_ref().expect("security context");
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert!(pod.topology_spread_constraints.is_some());
    let annotations = spec.template.metadata.as_ref().and_then(|m| m.annotations.clone()).unwrap_or_default();
    assert!(annotations.contains_key("herald.dev/config-hash"));
    let env_names: Vec<_> = container.env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert!(env_names.contains(&"HERALD_REDIS_URL"), "{env_names:?}");

    for name in ["main", "main-metrics", "main-redis"] {
        let svc: Service = eventually(&format!("Service {name}"), WAIT, || get(&client, ns, name)).await;
        assert!(owned_by(&svc.metadata, &uid), "Service {name} is owned");
    }
    let cm: ConfigMap = get(&client, ns, "main").await.expect("ConfigMap");
    assert!(cm.data.unwrap_or_default()["herald.toml"].contains("cluster = \"redis\""));
    let sa: ServiceAccount = get(&client, ns, "main").await.expect("ServiceAccount");
    assert!(owned_by(&sa.metadata, &uid));
    let role: Role = get(&client, ns, "main").await.expect("Role");
    assert!(owned_by(&role.metadata, &uid));
    let rules = role.rules.unwrap_or_default();
    assert!(
        !rules.iter().any(|r| r.resources.iter().flatten().any(|x| x == "secrets")),
        "with no apps the server pods may read no Secret at all: {rules:?}"
    );
    let _: RoleBinding = get(&client, ns, "main").await.expect("RoleBinding");
    let pdb: PodDisruptionBudget = get(&client, ns, "main").await.expect("PodDisruptionBudget");
    assert!(owned_by(&pdb.metadata, &uid));
    let redis: Deployment = get(&client, ns, "main-redis").await.expect("Redis Deployment");
    assert!(owned_by(&redis.metadata, &uid));
    let secret: Secret = get(&client, ns, "main-redis").await.expect("Redis password Secret");
    assert!(owned_by(&secret.metadata, &uid));
    let data = secret.data.unwrap_or_default();
    assert!(data["password"].0.len() >= 32, "a generated password");
    assert!(String::from_utf8_lossy(&data["url"].0).starts_with("redis://:"));

    // No kubelet: pods exist (kube-controller-manager made them) but are not ready.
    let pending = cluster_condition(&client, ns, "main", "Ready", "False").await;
    let ready = condition(&pending.status.as_ref().unwrap().conditions, "Ready").unwrap().clone();
    assert!(ready.message.contains("ready") || ready.message.contains("Redis"), "{ready:?}");
    assert_eq!(pending.status.as_ref().unwrap().observed_generation, pending.metadata.generation);

    // Play the kubelet: Redis, then the servers become ready.
    eventually("pods to exist", WAIT, || async {
        let n = plane.mark_pods_ready(&client, ns, "app.kubernetes.io/instance=main").await;
        (n >= 3).then_some(())
    })
    .await;
    let ready = eventually("Ready=True after pods are ready", WAIT, || async {
        plane.mark_pods_ready(&client, ns, "app.kubernetes.io/instance=main").await;
        let c: PusherCluster = get(&client, ns, "main").await?;
        let st = c.status.clone()?;
        (condition(&st.conditions, "Ready")?.status == "True").then_some(c)
    })
    .await;
    let status = ready.status.expect("status");
    assert_eq!(condition(&status.conditions, "RedisReady").unwrap().status, "True");
    assert_eq!(condition(&status.conditions, "Degraded").unwrap().status, "False");
    assert_eq!(status.ready_replicas, Some(2));
    assert_eq!(status.endpoint.as_deref(), Some("main.managed.svc:6001"));

    let table = plane.kubectl_ok(&["get", "pusherclusters", "-n", ns]);
    let header = table.lines().next().unwrap_or_default();
    for column in ["REPLICAS", "READY", "REDIS", "APPS", "STATUS", "AGE"] {
        assert!(header.contains(column), "kubectl get shows {column}: {table}");
    }
    assert!(table.contains("Managed") && table.contains("Ready"), "{table}");

    // The scale subresource is what HPA and `kubectl scale` use.
    plane.kubectl_ok(&["scale", "-n", ns, "pushercluster/main", "--replicas=3"]);
    eventually("Deployment scaled through the PusherCluster", WAIT, || async {
        let d: Deployment = get(&client, ns, "main").await?;
        (d.spec?.replicas == Some(3)).then_some(())
    })
    .await;

    let events = plane.kubectl_ok(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "involvedObject.kind=PusherCluster",
    ]);
    assert!(events.contains("Ready"), "Events on transitions: {events}");
}

#[tokio::test(flavor = "multi_thread")]
async fn app_without_secret_ref_gets_generated_credentials_that_are_never_overwritten() {
    let ns = "generated";
    let (_plane, client) = setup(ns).await;
    create_cluster(&client, ns, "main", json!({})).await;
    let app = create_app(&client, ns, "chat", json!({ "clusterRef": "main" })).await;
    let uid = app.uid().expect("uid");

    let app = app_condition(&client, ns, "chat", "CredentialsResolved", "True").await;
    let status = app.status.clone().expect("status");
    let app_id = status.app_id.clone().expect("app id generated");
    assert!(app_id.len() == 7 && app_id.chars().all(|c| c.is_ascii_digit()), "numeric app id: {app_id}");
    assert_eq!(status.credentials_secret.as_deref(), Some("chat-credentials"));
    assert_eq!(condition(&status.conditions, "Accepted").unwrap().status, "True");

    let secret: Secret = get(&client, ns, "chat-credentials").await.expect("generated Secret");
    assert!(owned_by(&secret.metadata, &uid), "the generated Secret is owned by the app");
    let data = secret.data.clone().unwrap_or_default();
    assert_eq!(status.key.as_deref(), Some(String::from_utf8_lossy(&data["key"].0).as_ref()));
    assert_eq!(String::from_utf8_lossy(&data["appId"].0), app_id);
    assert!(data["secret"].0.len() >= 32);

    // The server pods may read exactly this Secret.
    eventually("Role names the app's Secret", WAIT, || async {
        let role: Role = get(&client, ns, "main").await?;
        let names: Vec<String> =
            role.rules?.into_iter().flat_map(|r| r.resource_names.unwrap_or_default()).collect();
        (names == vec!["chat-credentials".to_owned()]).then_some(())
    })
    .await;

    // A spec change reconciles again; the Secret is not rewritten.
    let apps = Api::<PusherApp>::namespaced(client.clone(), ns);
    apps.patch("chat", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "clientEvents": true } })))
        .await
        .expect("patch app");
    eventually("observedGeneration 2", WAIT, || async {
        let a: PusherApp = get(&client, ns, "chat").await?;
        (a.status?.observed_generation == Some(2)).then_some(())
    })
    .await;
    let again: Secret = get(&client, ns, "chat-credentials").await.expect("Secret");
    assert_eq!(again.data, secret.data, "credentials are generated once");
    assert_eq!(again.metadata.resource_version, secret.metadata.resource_version);

    // Disabled apps are not Ready, with a reason a person understands.
    apps.patch("chat", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "enabled": false } })))
        .await
        .expect("disable");
    let disabled = eventually("Ready reason Disabled", WAIT, || async {
        let a: PusherApp = get(&client, ns, "chat").await?;
        let c = condition(&a.status.as_ref()?.conditions, "Ready")?.clone();
        (c.reason == "Disabled").then_some(c)
    })
    .await;
    assert_eq!(disabled.status, "False");

    // Deleting the app deletes its generated Secret (garbage collection).
    apps.delete("chat", &DeleteParams::foreground()).await.expect("delete app");
    eventually("generated Secret garbage-collected", WAIT, || async {
        get::<Secret>(&client, ns, "chat-credentials").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn app_with_secret_ref_reads_the_users_secret_and_never_writes_it() {
    let ns = "gitops";
    let (plane, client) = setup(ns).await;
    create_cluster(&client, ns, "main", json!({})).await;
    create_app(
        &client,
        ns,
        "shop",
        json!({ "clusterRef": "main", "appId": "4242", "credentials": { "secretRef": { "name": "shop-pusher" } } }),
    )
    .await;

    let missing = app_condition(&client, ns, "shop", "CredentialsResolved", "False").await;
    let c = condition(&missing.status.as_ref().unwrap().conditions, "CredentialsResolved").unwrap();
    assert_eq!(c.reason, "SecretNotFound");
    assert!(c.message.contains("gitops/shop-pusher") && c.message.contains("\"key\""), "{}", c.message);
    let described = plane.kubectl_ok(&["describe", "pusherapp", "-n", ns, "shop"]);
    assert!(described.contains("SecretNotFound"), "kubectl describe tells: {described}");

    plane.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "shop-pusher",
        "-n",
        ns,
        "--from-literal=key=shop-key",
        "--from-literal=secret=shop-secret",
    ]);
    // Naming a Secret is not enough: until it opts in, nothing of it is read or granted.
    let refused = eventually("the unlabelled Secret refused", WAIT, || async {
        let app: PusherApp = get(&client, ns, "shop").await?;
        let c = condition(&app.status.as_ref()?.conditions, "CredentialsResolved")?;
        (c.reason == "SecretNotOptedIn").then_some(app)
    })
    .await;
    let c = condition(&refused.status.as_ref().unwrap().conditions, "CredentialsResolved").unwrap();
    assert!(
        c.message.contains("herald.dev/credentials=true"),
        "the condition says what to add: {}",
        c.message
    );
    assert_eq!(refused.status.as_ref().unwrap().key, None, "no value copied into status");
    let everything = format!(
        "{}{}{}",
        plane.kubectl_ok(&["get", "pusherapp", "-n", ns, "shop", "-o", "yaml"]),
        plane.kubectl_ok(&["get", "events", "-n", ns, "-o", "yaml"]),
        plane.kubectl_ok(&["get", "role", "-n", ns, "-o", "yaml"]),
    );
    assert!(
        !everything.contains("shop-key") && !everything.contains("shop-secret"),
        "a value leaked: {everything}"
    );
    assert!(!everything.contains("- shop-pusher"), "the pods' Role must not grant the unlabelled Secret");
    plane.kubectl_ok(&["label", "secret", "shop-pusher", "-n", ns, "herald.dev/credentials=true"]);
    let resolved = app_condition(&client, ns, "shop", "CredentialsResolved", "True").await;
    let status = resolved.status.expect("status");
    assert_eq!(status.app_id.as_deref(), Some("4242"), "the spec's app id is used");
    assert_eq!(status.key.as_deref(), Some("shop-key"));
    assert_eq!(condition(&status.conditions, "CredentialsResolved").unwrap().reason, "SecretFound");

    let secret: Secret = get(&client, ns, "shop-pusher").await.expect("user Secret");
    assert!(secret.metadata.owner_references.is_none(), "a user's Secret gets no owner");
    let managers: Vec<String> =
        secret.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect();
    assert!(!managers.iter().any(|m| m.contains("herald")), "the operator never writes it: {managers:?}");

    // A broken Secret is reported, not used.
    plane.kubectl_ok(&[
        "patch",
        "secret",
        "shop-pusher",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"data":{"secret":""}}"#,
    ]);
    let broken = app_condition(&client, ns, "shop", "CredentialsResolved", "False").await;
    let c = condition(&broken.status.as_ref().unwrap().conditions, "CredentialsResolved").unwrap();
    assert_eq!(c.reason, "SecretInvalid", "{c:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_specs_are_refused_by_the_apiserver_with_a_clear_message() {
    let ns = "invalid";
    let (plane, client) = setup(ns).await;
    let apply = |yaml: String| plane.kubectl_stdin(&["apply", "-n", ns, "-f", "-"], Some(&yaml));

    let (ok, out) = apply(
        "apiVersion: herald.dev/v1alpha1\nkind: PusherApp\nmetadata: {name: bad-id}\nspec: {clusterRef: main, appId: abc}\n"
            .into(),
    );
    assert!(!ok && out.contains("spec.appId"), "a non-numeric app id is refused: {out}");

    let (ok, out) = apply(
        "apiVersion: herald.dev/v1alpha1\nkind: PusherCluster\nmetadata: {name: ext}\nspec: {redis: {mode: External}}\n"
            .into(),
    );
    assert!(!ok && out.contains("redis.external (a Secret holding the URL) is required"), "{out}");

    let (ok, out) = apply(
        "apiVersion: herald.dev/v1alpha1\nkind: PusherCluster\nmetadata: {name: neg}\nspec: {replicas: -1}\n"
            .into(),
    );
    assert!(!ok && out.contains("spec.replicas"), "{out}");

    create_app(&client, ns, "fixed", json!({ "clusterRef": "main", "appId": "77" })).await;
    let (ok, out) = apply(
        "apiVersion: herald.dev/v1alpha1\nkind: PusherApp\nmetadata: {name: fixed}\nspec: {clusterRef: other, appId: \"77\"}\n"
            .into(),
    );
    assert!(!ok && out.contains("clusterRef is immutable"), "{out}");
    let (ok, out) = apply(
        "apiVersion: herald.dev/v1alpha1\nkind: PusherApp\nmetadata: {name: fixed}\nspec: {clusterRef: main, appId: \"78\"}\n"
            .into(),
    );
    assert!(!ok && out.contains("appId is immutable"), "{out}");

    // Refused objects leave nothing behind; the valid one is untouched.
    let app: PusherApp = get(&client, ns, "fixed").await.expect("app");
    assert_eq!(app.spec.app_id.as_deref(), Some("77"));
    assert!(get::<PusherApp>(&client, ns, "bad-id").await.is_none());
    // An app whose cluster does not exist says so.
    let orphan = app_condition(&client, ns, "fixed", "Accepted", "False").await;
    let c = condition(&orphan.status.as_ref().unwrap().conditions, "Accepted").unwrap();
    assert_eq!(c.reason, "ClusterNotFound");
    assert!(c.message.contains("invalid/main"), "{}", c.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_is_corrected_pause_stops_writes_and_delete_cascades() {
    let ns = "drift";
    let (plane, client) = setup(ns).await;
    create_cluster(&client, ns, "main", json!({ "replicas": 2 })).await;
    let services = Api::<Service>::namespaced(client.clone(), ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let _: Service = eventually("Service", WAIT, || get(&client, ns, "main")).await;

    // Deleted Service comes back.
    services.delete("main", &DeleteParams::default()).await.expect("delete Service");
    eventually("Service recreated", WAIT, || async {
        let s: Service = get(&client, ns, "main").await?;
        s.metadata.deletion_timestamp.is_none().then_some(())
    })
    .await;

    // A hand-scaled Deployment is scaled back.
    plane.kubectl_ok(&["scale", "-n", ns, "deployment/main", "--replicas=5"]);
    eventually("replicas restored to 2", WAIT, || async {
        let d: Deployment = get(&client, ns, "main").await?;
        (d.spec?.replicas == Some(2)).then_some(())
    })
    .await;

    // A config change rolls the pods (new config hash on the template).
    let before = hash(&deployments.get("main").await.expect("deployment"));
    let clusters = Api::<PusherCluster>::namespaced(client.clone(), ns);
    clusters
        .patch(
            "main",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "server": { "activityTimeout": 30 } } })),
        )
        .await
        .expect("patch");
    eventually("config hash changes", WAIT, || async {
        let d: Deployment = get(&client, ns, "main").await?;
        (hash(&d) != before).then_some(())
    })
    .await;
    let cm: ConfigMap = get(&client, ns, "main").await.expect("ConfigMap");
    assert!(cm.data.unwrap_or_default()["herald.toml"].contains("activity_timeout = 30"));

    // Paused: the operator writes nothing, and says so.
    clusters
        .patch("main", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "paused": true } })))
        .await
        .expect("pause");
    cluster_condition(&client, ns, "main", "ReconciliationPaused", "True").await;
    services.delete("main", &DeleteParams::default()).await.expect("delete Service");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(get::<Service>(&client, ns, "main").await.is_none(), "a paused cluster's Service stays deleted");
    clusters
        .patch("main", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "paused": false } })))
        .await
        .expect("resume");
    let _: Service = eventually("Service back after resume", WAIT, || get(&client, ns, "main")).await;
    cluster_condition(&client, ns, "main", "ReconciliationPaused", "False").await;

    // Switching optional objects off deletes them.
    clusters
        .patch(
            "main",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "podDisruptionBudget": { "enabled": false } } })),
        )
        .await
        .expect("patch");
    eventually("PDB removed", WAIT, || async {
        get::<PodDisruptionBudget>(&client, ns, "main").await.is_none().then_some(())
    })
    .await;

    // Deleting the cluster deletes everything it owns.
    clusters.delete("main", &DeleteParams::foreground()).await.expect("delete cluster");
    eventually("owned objects garbage-collected", Duration::from_secs(90), || async {
        let gone = get::<Deployment>(&client, ns, "main").await.is_none()
            && get::<Deployment>(&client, ns, "main-redis").await.is_none()
            && get::<Service>(&client, ns, "main-redis").await.is_none()
            && get::<Secret>(&client, ns, "main-redis").await.is_none()
            && get::<ConfigMap>(&client, ns, "main").await.is_none();
        gone.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_examples_are_accepted_by_the_apiserver() {
    let (plane, _client) = setup("examples").await;
    let dir = herald_e2e::workspace_root().join("examples/kubernetes");
    for entry in std::fs::read_dir(&dir).expect("examples/kubernetes") {
        let path = entry.expect("entry").path();
        let (ok, out) = plane.kubectl(&[
            "apply",
            "--dry-run=server",
            "-n",
            "examples",
            "-f",
            &path.display().to_string(),
        ]);
        assert!(ok, "{} is refused: {out}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn external_redis_secret_is_reported_when_missing_and_a_new_url_rolls_the_pods() {
    let ns = "external";
    let (plane, client) = setup(ns).await;
    create_cluster(
        &client,
        ns,
        "main",
        json!({ "redis": { "mode": "External", "external": { "urlSecretRef": { "name": "redis-url" } } } }),
    )
    .await;
    let missing = cluster_condition(&client, ns, "main", "RedisReady", "False").await;
    let status = missing.status.expect("status");
    let redis = condition(&status.conditions, "RedisReady").unwrap();
    assert_eq!(redis.reason, "RedisSecretMissing");
    assert!(redis.message.contains("external/redis-url"), "{}", redis.message);
    assert_eq!(condition(&status.conditions, "Degraded").unwrap().status, "True");
    assert!(
        get::<Deployment>(&client, ns, "main-redis").await.is_none(),
        "no managed Redis in External mode"
    );

    plane.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "redis-url",
        "-n",
        ns,
        "--from-literal=url=redis://10.0.0.1:6379/0",
    ]);
    cluster_condition(&client, ns, "main", "RedisReady", "True").await;
    let before: Deployment = eventually("Deployment", WAIT, || get(&client, ns, "main")).await;
    let before = hash(&before);
    plane.kubectl_ok(&[
        "patch",
        "secret",
        "redis-url",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"stringData":{"url":"redis://10.0.0.2:6379/0"}}"#,
    ]);
    eventually("a new Redis URL rolls the pods", WAIT, || async {
        let d: Deployment = get(&client, ns, "main").await?;
        (hash(&d) != before).then_some(())
    })
    .await;
}
