//! Redis as managed offerings run it: TLS only, a private CA, client certificates. Nodes join a
//! TLS-only `redis-server` with the certificates a test CA signed, and behave as one server; a
//! node given the wrong CA refuses to start and says why.

use std::time::Duration;

use herald_testkit::nodes::{server_binary, Node, Redis, TlsFiles};
use herald_testkit::*;
use serde_json::json;

#[tokio::test]
async fn nodes_on_a_tls_only_redis_with_client_certificates_act_as_one_server() {
    let files = TlsFiles::make();
    let redis = Redis::start_tls(&files).await;
    let tls = [
        "--redis-ca-file",
        &files.path("ca.pem"),
        "--redis-cert-file",
        &files.path("client.pem"),
        "--redis-key-file",
        &files.path("client.key"),
    ];
    let n1 = Node::spawn(&redis, "tls-1", &tls).await;
    let n2 = Node::spawn(&redis, "tls-2", &tls).await;
    let mut a = connect(n1.addr).await;
    let mut b = connect(n2.addr).await;
    a.subscribe("news").await;
    b.join("presence-room", "bob", json!({"name": "Bob"})).await;
    let mut watcher = connect(n1.addr).await;
    let joined = watcher.join("presence-room", "ada", json!({})).await;
    let data: serde_json::Value = serde_json::from_str(joined["data"].as_str().unwrap_or("{}")).unwrap();
    assert_eq!(data["presence"]["count"], 2, "presence is shared through the TLS Redis: {joined}");
    let (status, _) = Api::new(n2.addr).trigger(&["news"], "e", "over-tls").await;
    assert_eq!(status, 200);
    assert_eq!(a.next().await["data"], "over-tls");
    assert_eq!(n1.ready().await, 200);
    assert_eq!(n2.ready().await, 200);
}

#[tokio::test]
async fn a_node_with_the_wrong_ca_refuses_to_start_and_says_why() {
    let files = TlsFiles::make();
    let redis = Redis::start_tls(&files).await;
    let output = tokio::process::Command::new(server_binary())
        .args(["--bind", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--cluster", "redis"])
        .args(["--redis-url", &redis.url(), "--redis-ca-file", &files.path("wrong-ca.pem")])
        .args(["--redis-cert-file", &files.path("client.pem"), "--redis-key-file", &files.path("client.key")])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output).await.expect("exits").expect("runs");
    assert!(!output.status.success(), "started against a Redis whose certificate it cannot trust");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot join the Redis cluster at rediss://127.0.0.1"), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("certificate"),
        "the error names the certificate problem: {stderr}"
    );
}

#[tokio::test]
async fn tls_files_without_a_rediss_url_are_refused_at_load() {
    let output = tokio::process::Command::new(server_binary())
        .args([
            "--cluster",
            "redis",
            "--redis-url",
            "redis://127.0.0.1:6379/0",
            "--redis-ca-file",
            "/tmp/ca.pem",
        ])
        .output()
        .await
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("need a rediss:// URL"));
}
