//! Apps served from the Kubernetes API survive the API going away: a kube-apiserver restart
//! breaks every watch of the server pods (PusherApps and the credentials Secrets), and none of
//! that may remove an app or close a socket. Only deleting or disabling the PusherApp does.

use std::time::Duration;

use futures_util::StreamExt;
use herald_e2e::ControlPlane;
use herald_testkit::nodes::{Node, Redis};
use herald_testkit::{connect_key, signed_query_as};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const NS: &str = "restart";

async fn trigger(node: &Node, key: &str, secret: &str) -> u16 {
    let path = "/apps/4242/events";
    let body = json!({ "name": "news", "channels": ["news"], "data": "after-restart" }).to_string();
    let query = signed_query_as(key, secret, "POST", path, &[], &body, herald_testkit::now());
    reqwest::Client::new()
        .post(format!("http://{}{path}?{query}", node.addr))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kube_apiserver_restart_closes_no_socket_and_removes_no_app() {
    let mut plane = ControlPlane::start();
    plane.install_crds();
    let client = plane.client().await;
    plane.namespace(&client, NS).await;
    let (key, secret) = ("restart-key", "restart-secret");
    plane.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "chat-keys",
        "-n",
        NS,
        &format!("--from-literal=key={key}"),
        &format!("--from-literal=secret={secret}"),
    ]);
    let (ok, out) = plane.kubectl_stdin(
        &["apply", "-n", NS, "-f", "-"],
        Some("apiVersion: herald.dev/v1alpha1\nkind: PusherApp\nmetadata: {name: chat}\nspec: {clusterRef: rt, appId: \"4242\", credentials: {secretRef: {name: chat-keys}}}\n"),
    );
    assert!(ok, "kubectl apply: {out}");
    let redis = Redis::start().await;
    let node = Node::spawn_kubernetes(&redis, "rt-a", "rt", NS, &plane.kubeconfig, &[]).await;
    let mut c = connect_key(node.addr, key).await;
    c.subscribe("news").await;

    // The API goes away for 5 s and comes back; the server's watches all break meanwhile.
    let restart = tokio::task::spawn_blocking(move || {
        plane.restart_apiserver(Duration::from_secs(5));
        plane
    });
    let plane = loop {
        if let Ok(frame) = tokio::time::timeout(Duration::from_millis(200), c.ws.next()).await {
            match frame {
                Some(Ok(Message::Close(f))) => panic!("the socket was closed during the restart: {f:?}"),
                Some(Ok(Message::Text(t))) if t.contains("pusher:error") => panic!("error frame: {t}"),
                Some(Ok(_)) => {}
                other => panic!("the socket went away during the restart: {other:?}"),
            }
        }
        if restart.is_finished() {
            break restart.await.expect("restart");
        }
    };
    // Past the watchers' backoff and re-list: still served, still connected.
    for _ in 0..50 {
        match tokio::time::timeout(Duration::from_millis(200), c.ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => panic!("closed after the restart: {f:?}"),
            Ok(Some(Ok(Message::Text(t)))) if t.contains("pusher:error") => panic!("error frame: {t}"),
            _ => {}
        }
    }
    assert_eq!(trigger(&node, key, secret).await, 200, "the app is still served by the HTTP API");
    let event = c.next().await;
    assert_eq!(event["data"], "after-restart", "{event}");
    let _fresh = connect_key(node.addr, key).await;
    drop(plane);
}
