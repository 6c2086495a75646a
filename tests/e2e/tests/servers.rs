//! The users' path on a real control plane, from `helm install` to two browsers chatting: the
//! chart installs the CRDs and the operator's RBAC; the operator (on the chart's ServiceAccount
//! token) reconciles a PusherCluster and a PusherApp; two herald-server processes play the
//! cluster's pods (`--apps kubernetes`, the pods' ServiceAccount token, the operator's
//! ConfigMap, a real Redis); the official pusher-js client and Node server SDK talk across both,
//! then the chat example in two headless Chromium contexts; disabling, rotating and deleting the
//! app take effect live.

use std::time::Duration;

use herald_e2e::{eventually, workspace_root, ControlPlane};
use herald_testkit::nodes::{Node, Redis};
use herald_testkit::{connect_key, signed_query_as};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
const NS: &str = "live";

async fn trigger(node: &Node, app_id: &str, key: &str, secret: &str, channel: &str) -> u16 {
    let path = format!("/apps/{app_id}/events");
    let body = json!({ "name": "news", "channels": [channel], "data": "{\"n\":1}" }).to_string();
    let query = signed_query_as(key, secret, "POST", &path, &[], &body, herald_testkit::now());
    reqwest::Client::new()
        .post(format!("http://{}{path}?{query}", node.addr))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Connects to `/app/{key}`; `Ok` with the client when established, `Err(close code)` when
/// the server refuses.
async fn try_connect(node: &Node, key: &str) -> Result<herald_testkit::Client, Option<u16>> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut ws =
        herald_testkit::raw(node.addr, &format!("/app/{key}?protocol=7&client=js&version=8.6.0")).await;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let frame: Value = serde_json::from_str(&t).expect("json");
                if frame["event"] == "pusher:connection_established" {
                    let data: Value =
                        serde_json::from_str(frame["data"].as_str().unwrap_or("{}")).expect("json");
                    let socket_id = data["socket_id"].as_str().unwrap_or_default().to_owned();
                    return Ok(herald_testkit::Client { ws, socket_id });
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => return Err(frame.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => {}
            _ => return Err(None),
        }
    }
}

/// Waits (up to a minute) for the server to close `client`; returns the close code.
async fn closed_with(client: &mut herald_testkit::Client) -> Option<u16> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(WAIT, client.ws.next()).await.expect("closed within a minute") {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

fn secret_value(plane: &ControlPlane, secret: &str, key: &str) -> String {
    plane.kubectl_ok(&[
        "get",
        "secret",
        secret,
        "-n",
        NS,
        "-o",
        &format!("go-template={{{{.data.{key} | base64decode}}}}"),
    ])
}

fn apply(plane: &ControlPlane, yaml: &str) {
    let (ok, out) = plane.kubectl_stdin(&["apply", "-n", NS, "-f", "-"], Some(yaml));
    assert!(ok, "kubectl apply: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn from_helm_install_to_two_browsers_chatting_with_apps_served_live() {
    let plane = ControlPlane::start();
    let client = plane.client().await;
    plane.namespace(&client, NS).await;
    let chart = workspace_root().join("charts/herald-operator").display().to_string();
    let (ok, out) = plane.helm(&[
        "install",
        "herald-operator",
        &chart,
        "-n",
        "herald-system",
        "--create-namespace",
        "--set",
        "watchNamespaces={live}",
    ]);
    assert!(ok, "helm install: {out}");
    plane.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/pusherclusters.herald.dev",
        "crd/pusherapps.herald.dev",
    ]);
    let operator_token = plane.service_account_token("herald-system", "herald-operator");
    let operator_kubeconfig = plane.kubeconfig_for_token("operator", &operator_token);
    let _operator = plane.start_operator_as(
        &operator_kubeconfig,
        &[("WATCH_NAMESPACE", NS), ("HERALD_OPERATOR_USAGE_REFRESH", "1")],
    );
    let redis = Redis::start().await;

    plane.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "redis-url",
        "-n",
        NS,
        &format!("--from-literal=url={}", redis.url()),
    ]);
    apply(
        &plane,
        "apiVersion: herald.dev/v1alpha1\nkind: PusherCluster\nmetadata: {name: rt}\nspec:\n  redis: {mode: External, external: {urlSecretRef: {name: redis-url}}}\n",
    );
    apply(
        &plane,
        "apiVersion: herald.dev/v1alpha1\nkind: PusherApp\nmetadata: {name: chat}\nspec: {clusterRef: rt, clientEvents: true}\n",
    );
    plane.kubectl_ok(&[
        "wait",
        "-n",
        NS,
        "--for=condition=CredentialsResolved",
        "--timeout=60s",
        "pusherapp/chat",
    ]);
    eventually("the pods' Role grants the app's Secret", WAIT, || async {
        let (ok, out) = plane.kubectl(&[
            "auth",
            "can-i",
            "get",
            "secret/chat-credentials",
            "-n",
            NS,
            "--as",
            "system:serviceaccount:live:rt",
        ]);
        (ok && out.trim() == "yes").then_some(())
    })
    .await;
    let (ok, _) = plane.kubectl(&[
        "auth",
        "can-i",
        "get",
        "secret/redis-url",
        "-n",
        NS,
        "--as",
        "system:serviceaccount:live:rt",
    ]);
    assert!(!ok, "the pods may not read Secrets no app names");

    // The "pods": herald-server processes with the ServiceAccount token of the cluster's pods.
    let token = plane.service_account_token(NS, "rt");
    let kubeconfig = plane.kubeconfig_for_token("rt-pods", &token);
    // What a compromised pod could try: read another Secret, or list them all. Refused.
    let (ok, out) = plane.kubectl_as(&kubeconfig, &["get", "secret", "redis-url", "-n", NS], None);
    assert!(!ok && out.contains("Forbidden"), "a pod reads only its apps' Secrets: {out}");
    let (ok, out) = plane.kubectl_as(&kubeconfig, &["get", "secrets", "-n", NS], None);
    assert!(!ok && out.contains("Forbidden"), "a pod cannot list Secrets: {out}");
    let (ok, _) = plane.kubectl_as(&kubeconfig, &["get", "secret", "chat-credentials", "-n", NS], None);
    assert!(ok, "but it reads its app's credentials");
    // Each pod mounts the operator's ConfigMap (Redis key prefix and server settings).
    let config = plane.dir.join("herald.toml");
    std::fs::write(
        &config,
        plane.kubectl_ok(&[
            "get",
            "configmap",
            "rt",
            "-n",
            NS,
            "-o",
            "go-template={{index .data \"herald.toml\"}}",
        ]),
    )
    .expect("config file");
    let config = config.display().to_string();
    let a = Node::spawn_kubernetes(&redis, "rt-a", "rt", NS, &kubeconfig, &["--config", &config]).await;
    let b = Node::spawn_kubernetes(&redis, "rt-b", "rt", NS, &kubeconfig, &["--config", &config]).await;

    // Credentials as a user reads them.
    let app_id = secret_value(&plane, "chat-credentials", "appId");
    let key = secret_value(&plane, "chat-credentials", "key");
    let secret = secret_value(&plane, "chat-credentials", "secret");

    // Official pusher-js on pod a, official Node SDK on pod b.
    let script = workspace_root().join("tests/compat/k8s-roundtrip.mjs");
    assert!(
        workspace_root().join("tests/compat/node_modules/pusher-js").exists(),
        "run `npm ci` in tests/compat first (./scripts/test does)"
    );
    let config = json!({ "appId": app_id, "key": key, "secret": secret, "clientPort": a.addr.port(), "apiPort": b.addr.port() });
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .arg(config.to_string())
        .output()
        .await
        .expect("node runs");
    assert!(
        out.status.success(),
        "SDK round trip: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).expect("json line");
    assert_eq!(result["public"], json!({ "id": 7 }));
    assert_eq!(result["private"], json!({ "id": 7 }), "private channel auth signed with the Secret's secret");
    assert_eq!(result["members"], json!([{ "id": "ada" }]), "presence read across pods");

    // The chat example in two browsers, on pod a (WebSockets) and pod b (its backend's API calls).
    let target = json!({ "appId": app_id, "key": key, "secret": secret, "clientPort": a.addr.port(), "apiPort": b.addr.port() });
    let out = tokio::process::Command::new("node")
        .args(["--test", "--test-timeout=60000", "chat-browser.test.mjs"])
        .current_dir(workspace_root().join("tests/compat"))
        .env("HERALD_CHAT_TARGET", target.to_string())
        .env("HERALD_BIN", herald_e2e::binary("herald-server"))
        .output()
        .await
        .expect("node runs");
    assert!(
        out.status.success(),
        "two browsers chatting: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // An app whose Secret is missing is not served, and harms nobody else.
    apply(
        &plane,
        "apiVersion: herald.dev/v1alpha1\nkind: PusherApp\nmetadata: {name: broken}\nspec: {clusterRef: rt, appId: \"99\", credentials: {secretRef: {name: nowhere}}}\n",
    );

    // A connection on pod a, subscribed.
    let mut conn = connect_key(a.addr, &key).await;
    conn.subscribe("updates").await;
    assert_eq!(trigger(&b, &app_id, &key, &secret, "updates").await, 200);
    assert_eq!(conn.next().await["event"], "news");

    // `kubectl get pusherapps` shows live usage, read from the cluster's Redis.
    eventually("status.connections counts the open connection", WAIT, || async {
        let out = plane.kubectl_ok(&[
            "get",
            "pusherapp",
            "chat",
            "-n",
            NS,
            "-o",
            "jsonpath={.status.connections}/{.status.channels}",
        ]);
        (out.trim() == "1/1").then_some(())
    })
    .await;
    let table = plane.kubectl_ok(&["get", "pusherapps", "-n", NS]);
    assert!(table.lines().next().unwrap_or_default().contains("CONNECTIONS"), "{table}");

    // Rotate the secret: new signatures work within seconds, the old one stops, and the open
    // connection stays up.
    let rotated = "rotated-secret-0123456789abcdef";
    plane.kubectl_ok(&[
        "patch",
        "secret",
        "chat-credentials",
        "-n",
        NS,
        "--type=merge",
        "-p",
        &json!({ "stringData": { "secret": rotated } }).to_string(),
    ]);
    eventually("the rotated secret is accepted on both pods", WAIT, || async {
        (trigger(&a, &app_id, &key, rotated, "updates").await == 200
            && trigger(&b, &app_id, &key, rotated, "updates").await == 200)
            .then_some(())
    })
    .await;
    assert_eq!(trigger(&b, &app_id, &key, &secret, "updates").await, 401, "the old secret no longer signs");
    assert_eq!(conn.next().await["event"], "news", "the connection stayed up through the rotation");

    // Disable: open sockets get 4003, new ones are refused with 4003.
    plane.kubectl_ok(&[
        "patch",
        "pusherapp",
        "chat",
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"enabled":false}}"#,
    ]);
    assert_eq!(closed_with(&mut conn).await, Some(4003));
    assert_eq!(try_connect(&b, &key).await.err(), Some(Some(4003)), "new connections are refused with 4003");

    // Enable again, then delete: 4001.
    plane.kubectl_ok(&[
        "patch",
        "pusherapp",
        "chat",
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"enabled":true}}"#,
    ]);
    let mut conn =
        eventually("connections accepted again", WAIT, || async { try_connect(&b, &key).await.ok() }).await;
    plane.kubectl_ok(&["delete", "pusherapp", "chat", "-n", NS]);
    assert_eq!(closed_with(&mut conn).await, Some(4001));
    assert_eq!(
        trigger(&a, &app_id, &key, rotated, "updates").await / 100,
        4,
        "a deleted app's API calls are refused"
    );
}
