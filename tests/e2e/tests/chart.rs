//! The Helm chart on a real control plane: `helm install` puts the CRDs, the operator's
//! Deployment and its least-privilege RBAC in place; the operator, running with nothing but the
//! chart's ServiceAccount token, reconciles a full PusherCluster and PusherApp; two replicas
//! with leader election hand over when the leader dies.

use std::time::Duration;

use herald_crds::{PusherApp, PusherCluster};
use herald_e2e::{binary, eventually, workspace_root, ControlPlane};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::Role;
use kube::api::PostParams;
use kube::Api;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_then_the_operator_runs_on_the_charts_rbac_alone_and_hands_over_leadership() {
    let plane = ControlPlane::start();
    let client = plane.client().await;
    plane.namespace(&client, "team").await;
    let chart = workspace_root().join("charts/herald-operator");
    let chart = chart.display().to_string();

    let (ok, out) = plane.helm(&["lint", "--strict", &chart]);
    assert!(ok, "helm lint: {out}");
    let (ok, out) = plane.helm(&[
        "install",
        "herald-operator",
        &chart,
        "--namespace",
        "herald-system",
        "--create-namespace",
        "--set",
        "watchNamespaces={team}",
        "--set",
        "leaderElection.enabled=true",
        "--set",
        "replicas=2",
    ]);
    assert!(ok, "helm install: {out}");
    assert!(out.contains("kind: PusherCluster"), "NOTES tell the user what to apply next: {out}");

    plane.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/pusherclusters.herald.dev",
        "crd/pusherapps.herald.dev",
    ]);
    let deployment: Deployment = Api::namespaced(client.clone(), "herald-system")
        .get("herald-operator")
        .await
        .expect("operator Deployment");
    let labels = deployment.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("Helm"));
    assert_eq!(deployment.spec.and_then(|s| s.replicas), Some(2));
    plane.kubectl_ok(&["get", "rolebinding", "herald-operator", "-n", "team"]);
    plane.kubectl_ok(&["get", "clusterrole", "herald-admin", "herald-view"]);

    // The operator's rights are what the chart grants, nothing more.
    let (allowed, _) = plane.kubectl(&[
        "auth",
        "can-i",
        "create",
        "deployments",
        "-n",
        "team",
        "--as",
        "system:serviceaccount:herald-system:herald-operator",
    ]);
    assert!(allowed);
    let (allowed, _) = plane.kubectl(&[
        "auth",
        "can-i",
        "create",
        "pods",
        "-n",
        "team",
        "--as",
        "system:serviceaccount:herald-system:herald-operator",
    ]);
    assert!(!allowed, "the operator never needs to create pods");
    let (allowed, _) = plane.kubectl(&[
        "auth",
        "can-i",
        "list",
        "secrets",
        "-n",
        "kube-system",
        "--as",
        "system:serviceaccount:herald-system:herald-operator",
    ]);
    assert!(!allowed, "with watchNamespaces, no rights outside them");

    let token = plane.service_account_token("herald-system", "herald-operator");
    let kubeconfig = plane.kubeconfig_for_token("operator", &token);

    // `herald-operator check` is what the chart's `helm test` pod runs.
    let check = std::process::Command::new(binary("herald-operator"))
        .arg("check")
        .env("KUBECONFIG", &kubeconfig)
        .env("WATCH_NAMESPACE", "team")
        .output()
        .expect("check runs");
    assert!(check.status.success(), "check: {}", String::from_utf8_lossy(&check.stderr));
    let outside = std::process::Command::new(binary("herald-operator"))
        .arg("check")
        .env("KUBECONFIG", &kubeconfig)
        .env("WATCH_NAMESPACE", "kube-system")
        .output()
        .expect("check runs");
    assert!(!outside.status.success(), "no rights in kube-system");
    assert!(
        String::from_utf8_lossy(&outside.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&outside.stderr)
    );

    let start = |pod: &str| {
        plane.start_operator_as(
            &kubeconfig,
            &[
                ("WATCH_NAMESPACE", "team"),
                ("HERALD_OPERATOR_LEADER_ELECTION", "true"),
                ("POD_NAMESPACE", "herald-system"),
                ("POD_NAME", pod),
            ],
        )
    };
    let mut first = start("operator-a");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "herald-system");
    eventually("operator-a holds the Lease", WAIT, || async {
        let lease = leases.get_opt("herald-operator").await.ok()??;
        (lease.spec?.holder_identity.as_deref() == Some("operator-a")).then_some(())
    })
    .await;
    let mut second = start("operator-b");

    let cluster: PusherCluster = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "PusherCluster", "metadata": { "name": "rt" },
        "spec": { "autoscaling": { "maxReplicas": 4 }, "networkPolicy": { "enabled": true } }
    }))
    .expect("cluster");
    Api::<PusherCluster>::namespaced(client.clone(), "team")
        .create(&PostParams::default(), &cluster)
        .await
        .expect("create");
    let app: PusherApp = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "PusherApp", "metadata": { "name": "chat" },
        "spec": { "clusterRef": "rt" }
    }))
    .expect("app");
    Api::<PusherApp>::namespaced(client.clone(), "team")
        .create(&PostParams::default(), &app)
        .await
        .expect("create");

    eventually("every object of the cluster and the app's Role rule", WAIT, || async {
        let d: Option<Deployment> = Api::namespaced(client.clone(), "team").get_opt("rt").await.ok()?;
        let redis: Option<Deployment> =
            Api::namespaced(client.clone(), "team").get_opt("rt-redis").await.ok()?;
        let hpa: Option<HorizontalPodAutoscaler> =
            Api::namespaced(client.clone(), "team").get_opt("rt").await.ok()?;
        let np: Option<NetworkPolicy> =
            Api::namespaced(client.clone(), "team").get_opt("rt-redis").await.ok()?;
        let role: Role = Api::namespaced(client.clone(), "team").get_opt("rt").await.ok()??;
        let names_secret =
            role.rules?.iter().any(|r| r.resource_names.iter().flatten().any(|n| n == "chat-credentials"));
        (d.is_some() && redis.is_some() && hpa.is_some() && np.is_some() && names_secret).then_some(())
    })
    .await;
    let app: PusherApp = eventually("app credentials", WAIT, || async {
        let a: PusherApp = Api::namespaced(client.clone(), "team").get("chat").await.ok()?;
        let resolved = a
            .status
            .as_ref()?
            .conditions
            .iter()
            .any(|c| c.type_ == "CredentialsResolved" && c.status == "True");
        resolved.then_some(a)
    })
    .await;
    assert!(app.status.and_then(|s| s.app_id).is_some());
    first.assert_running();
    second.assert_running();
    let logs = format!("{}\n{}", first.tail(), second.tail());
    assert!(
        !logs.to_lowercase().contains("forbidden"),
        "the chart's RBAC covers everything the operator does:\n{logs}"
    );
    assert!(!second.tail().contains("leading"), "only one operator leads:\n{}", second.tail());

    // The leader dies; the other takes over and reconciles.
    first.stop(Duration::from_secs(5));
    eventually("operator-b takes the Lease", Duration::from_secs(60), || async {
        let lease = leases.get_opt("herald-operator").await.ok()??;
        (lease.spec?.holder_identity.as_deref() == Some("operator-b")).then_some(())
    })
    .await;
    plane.kubectl_ok(&["delete", "service", "rt", "-n", "team"]);
    eventually("the new leader restores the Service", WAIT, || async {
        let s: Option<k8s_openapi::api::core::v1::Service> =
            Api::namespaced(client.clone(), "team").get_opt("rt").await.ok()?;
        s.filter(|s| s.metadata.deletion_timestamp.is_none()).map(|_| ())
    })
    .await;
    second.assert_running();
}
