//! Secrets never appear in logs, metrics or error messages: the server binary runs at the most
//! verbose log level while a client and the backend do everything that touches a secret —
//! signed subscriptions, forged ones, sign-in, API calls with right and wrong signatures,
//! webhooks — and its whole output, its /metrics and every error body are searched.

use std::process::Stdio;
use std::time::Duration;

use herald_testkit::nodes::server_binary;
use herald_testkit::{channel_auth, connect_key, now, signed_query_as, Receiver};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

const SECRET: &str = "s3cr3t-never-in-logs-7f9a2c";

#[tokio::test]
async fn secrets_stay_out_of_logs_metrics_and_errors() {
    let hooks = Receiver::start(vec![500, 200]).await;
    let mut child = Command::new(server_binary())
        .args(["--bind", "127.0.0.1", "--port", "0", "--metrics-port", "0"])
        .args(["--app-id", "77", "--app-key", "k77", "--app-secret", SECRET, "--app-client-events"])
        .args(["--app-webhook-url", &hooks.url])
        .env("HERALD_LOG", "trace")
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn herald-server");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut banner = String::new();
    let mut buf = [0u8; 4096];
    while !banner.contains("/healthz") {
        let n = tokio::time::timeout(Duration::from_secs(10), stdout.read(&mut buf))
            .await
            .expect("banner")
            .expect("read");
        banner.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let port = |marker: &str| -> u16 {
        let rest = banner.split(marker).nth(1).expect("address");
        rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|p| p.parse().ok()).expect("port")
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", port("ws://127.0.0.1:")).parse().expect("addr");
    let ops = banner
        .split("http://127.0.0.1:")
        .find(|s| s.contains("/healthz"))
        .and_then(|s| s.split('/').next())
        .expect("ops")
        .to_owned();

    // Everything that touches the secret, right and wrong.
    let mut c = connect_key(addr, "k77").await;
    let sig = channel_auth(&c.socket_id, "private-x", None).replace(herald_testkit::KEY, "k77");
    c.send(json!({"event":"pusher:subscribe","data":{"channel":"private-x","auth": sig}})).await;
    let _ = c.next().await;
    let good = herald_server::signing::token(
        "k77",
        SECRET,
        &herald_server::signing::channel_string(&c.socket_id, "private-y", None),
    );
    c.send(json!({"event":"pusher:subscribe","data":{"channel":"private-y","auth": good}})).await;
    assert_eq!(c.next().await["event"], "pusher_internal:subscription_succeeded");
    let user = json!({"id":"u1"}).to_string();
    let user_sig = herald_server::signing::token(
        "k77",
        SECRET,
        &herald_server::signing::user_string(&c.socket_id, &user),
    );
    c.send(json!({"event":"pusher:signin","data":{"auth": user_sig, "user_data": user}})).await;
    let _ = c.next().await;

    let http = reqwest::Client::new();
    let mut bodies = String::new();
    for secret in [SECRET, "wrong-secret"] {
        let body = json!({"name":"e","channel":"private-y","data":"{}"}).to_string();
        let path = "/apps/77/events";
        let q = signed_query_as("k77", secret, "POST", path, &[], &body, now());
        let r = http
            .post(format!("http://{addr}{path}?{q}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        bodies.push_str(&r.text().await.unwrap_or_default());
    }
    let q = signed_query_as("k77", SECRET, "GET", "/apps/77/channels", &[], "", now() - 10_000);
    bodies.push_str(
        &http
            .get(format!("http://{addr}/apps/77/channels?{q}"))
            .send()
            .await
            .expect("get")
            .text()
            .await
            .unwrap_or_default(),
    );
    // A webhook (first delivery fails, then retried).
    drop(c);
    hooks.wait_for(Duration::from_secs(15), |events| !events.is_empty()).await;
    let metrics =
        http.get(format!("http://{ops}/metrics")).send().await.expect("metrics").text().await.expect("text");

    // Stop the server, gather everything it wrote.
    let _ = Command::new("kill").args(["-TERM", &child.id().expect("pid").to_string()]).status().await;
    let _ = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
    let mut out = banner;
    let _ = stdout.read_to_string(&mut out).await;
    let mut err = String::new();
    let _ = stderr.read_to_string(&mut err).await;
    assert!(err.len() > 1000, "trace logging was on (got {} bytes of log)", err.len());
    assert!(!err.contains("\x1b["), "no colour codes in a log that is not a terminal");
    for (what, text) in [("stdout", &out), ("log", &err), ("metrics", &metrics), ("error bodies", &bodies)] {
        assert!(!text.contains(SECRET), "the app secret appears in {what}");
    }
    assert!(bodies.contains("Invalid signature"), "the wrong signature was refused: {bodies}");
}

#[tokio::test]
async fn a_redis_password_stays_out_of_the_start_up_error() {
    let password = "r3dis-pw-never-printed-41c";
    let output = Command::new(server_binary())
        .args(["--bind", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--cluster", "redis"])
        // Nothing listens on port 1: the server cannot join and says so.
        .args(["--redis-url", &format!("redis://:{password}@127.0.0.1:1/0")])
        .env("HERALD_LOG", "trace")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output).await.expect("exits").expect("run");
    assert!(!output.status.success());
    let all =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(all.contains("cannot join the Redis cluster at redis://:***@127.0.0.1:1/0"), "{all}");
    assert!(!all.contains(password), "the password was printed:\n{all}");
}
