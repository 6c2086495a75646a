//! Test harness of herald-server's integration tests: a real server on 127.0.0.1:0, WebSocket
//! clients speaking real frames, a signed HTTP API client, a webhook receiver, and ([`nodes`])
//! a real redis-server with herald-server processes.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod nodes;
pub mod sentinel;
pub mod shards;
mod tls_files;

use futures_util::{SinkExt, StreamExt};
use herald_server::signing;
use herald_server::{Config, Server};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const KEY: &str = herald_server::config::DEV_APP_KEY;
pub const SECRET: &str = herald_server::config::DEV_APP_SECRET;
pub const APP_ID: &str = herald_server::config::DEV_APP_ID;

/// How long a test waits for a frame it expects.
pub const WAIT: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub addr: SocketAddr,
    pub ops: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// With `HERALD_TEST_REDIS_URL` set, every in-process server runs on the Redis backend (each
/// with its own key prefix), so the same behaviour tests cover both `Cluster` implementations —
/// and every way Redis runs: `HERALD_TEST_REDIS_MODE=sentinel` with
/// `HERALD_TEST_REDIS_SENTINEL_MASTER` (the URL lists the sentinels), `HERALD_TEST_REDIS_MODE=cluster`
/// (the URL lists a Redis Cluster's seed nodes), and
/// `HERALD_TEST_REDIS_CA_FILE` / `_CERT_FILE` / `_KEY_FILE` for a TLS-only Redis.
fn with_backend(mut config: Config) -> Config {
    use herald_server::config::{RedisMode, RedisTls};
    if let Ok(url) = std::env::var("HERALD_TEST_REDIS_URL") {
        let id = format!("{:08x}", rand::random::<u32>());
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mode = match (env("HERALD_TEST_REDIS_MODE").as_deref(), env("HERALD_TEST_REDIS_SENTINEL_MASTER"))
        {
            (Some("sentinel"), Some(master)) => RedisMode::Sentinel { master },
            (Some("cluster"), _) => RedisMode::Cluster,
            _ => RedisMode::Standalone,
        };
        let tls = RedisTls {
            ca_file: env("HERALD_TEST_REDIS_CA_FILE").map(Into::into),
            client: env("HERALD_TEST_REDIS_CERT_FILE")
                .zip(env("HERALD_TEST_REDIS_KEY_FILE"))
                .map(|(c, k)| (c.into(), k.into())),
        };
        config.settings.cluster =
            herald_server::config::ClusterMode::Redis(herald_server::cluster::RedisSettings {
                url,
                node_id: format!("test-{id}"),
                lease_ttl: Duration::from_secs(3),
                prefix: format!("herald-test-{id}"),
                tls,
                mode,
            });
    }
    config
}

/// Starts the server with `config` (use [`Config::for_tests`] and adjust).
pub async fn start_server(config: Config) -> TestServer {
    let server = Server::bind(&with_backend(config)).await.expect("bind");
    let addr = server.local_addr().unwrap();
    let ops = server.ops_addr().unwrap();
    let shutdown = server.shutdown_token();
    let task = tokio::spawn(server.run());
    TestServer { addr, ops, shutdown, task }
}

pub async fn start_default() -> TestServer {
    start_server(Config::for_tests()).await
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub socket_id: String,
}

/// Opens a raw WebSocket to `path` (e.g. `/app/key?protocol=7`).
pub async fn raw(addr: SocketAddr, path: &str) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
    let (ws, _) = connect_async(format!("ws://{addr}{path}")).await.expect("connect");
    ws
}

/// Connects as pusher-js does and reads `connection_established`.
pub async fn connect(addr: SocketAddr) -> Client {
    connect_key(addr, KEY).await
}

pub async fn connect_key(addr: SocketAddr, key: &str) -> Client {
    let mut ws = raw(addr, &format!("/app/{key}?protocol=7&client=js&version=8.6.0&flash=false")).await;
    let first = next_json(&mut ws).await;
    assert_eq!(first["event"], "pusher:connection_established", "{first}");
    let data: Value = serde_json::from_str(first["data"].as_str().expect("data is a string")).unwrap();
    let socket_id = data["socket_id"].as_str().unwrap().to_owned();
    Client { ws, socket_id }
}

/// The next text frame as JSON; panics on close or after [`WAIT`].
pub async fn next_json(ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.expect("timed out waiting for a frame");
        match msg {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("server sent JSON"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Reads until the server closes; returns the close code.
pub async fn close_code(ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("timed out waiting for close") {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// Asserts nothing arrives within `within`.
pub async fn assert_silent(ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>, within: Duration) {
    match tokio::time::timeout(within, ws.next()).await {
        Err(_) => {}
        Ok(msg) => panic!("expected silence, got {msg:?}"),
    }
}

impl Client {
    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::Text(v.to_string().into())).await.unwrap();
    }

    pub async fn send_text(&mut self, t: &str) {
        self.ws.send(Message::Text(t.to_owned().into())).await.unwrap();
    }

    pub async fn next(&mut self) -> Value {
        next_json(&mut self.ws).await
    }

    /// Subscribes and returns the server's answer.
    pub async fn subscribe(&mut self, channel: &str) -> Value {
        let auth = channel_auth(&self.socket_id, channel, None);
        self.send(serde_json::json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":auth}}))
            .await;
        self.next().await
    }

    /// Joins a presence channel as `user_id` and returns the answer.
    pub async fn join(&mut self, channel: &str, user_id: &str, info: Value) -> Value {
        let data = serde_json::json!({"user_id": user_id, "user_info": info}).to_string();
        let auth = channel_auth(&self.socket_id, channel, Some(&data));
        self.send(serde_json::json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":auth,"channel_data":data}}))
            .await;
        self.next().await
    }

    pub async fn close_code(&mut self) -> Option<u16> {
        close_code(&mut self.ws).await
    }

    pub async fn assert_silent(&mut self, within: Duration) {
        assert_silent(&mut self.ws, within).await
    }
}

/// What an auth endpoint using the server SDK would answer (public channels: empty).
pub fn channel_auth(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    if !channel.starts_with("private-") && !channel.starts_with("presence-") {
        return String::new();
    }
    signing::token(KEY, SECRET, &signing::channel_string(socket_id, channel, channel_data))
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The signed query string for a request, as the server SDKs build it.
pub fn signed_query(
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &str,
    timestamp: u64,
    secret: &str,
) -> String {
    signed_query_as(KEY, secret, method, path, extra, body, timestamp)
}

/// Like [`signed_query`], for an app with another key.
pub fn signed_query_as(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &str,
    timestamp: u64,
) -> String {
    let mut params: Vec<(String, String)> = vec![
        ("auth_key".into(), key.into()),
        ("auth_timestamp".into(), timestamp.to_string()),
        ("auth_version".into(), "1.0".into()),
    ];
    if !body.is_empty() {
        params.push(("body_md5".into(), signing::body_md5(body.as_bytes())));
    }
    params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let sig = signing::sign(secret, signing::api_string(method, path, &params).as_bytes());
    params.push(("auth_signature".into(), sig));
    serde_urlencoded::to_string(&params).unwrap()
}

pub struct Api {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Self {
        Api { addr, http: reqwest::Client::new() }
    }

    /// The ids of a presence channel's members (`GET …/users`), sorted.
    pub async fn user_ids(&self, channel: &str) -> Vec<String> {
        let (status, users) = self.get(&format!("/apps/{APP_ID}/channels/{channel}/users"), &[]).await;
        assert_eq!(status, 200, "users of {channel}: {users}");
        let mut ids: Vec<String> = users["users"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u["id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }

    pub async fn get(&self, path: &str, extra: &[(&str, &str)]) -> (u16, Value) {
        let q = signed_query("GET", path, extra, "", now(), SECRET);
        let r = self.http.get(format!("http://{}{path}?{q}", self.addr)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string(), now(), SECRET).await
    }

    pub async fn post_raw(&self, path: &str, body: &str, timestamp: u64, secret: &str) -> (u16, Value) {
        let q = signed_query("POST", path, &[], body, timestamp, secret);
        self.send_post(path, &q, body.to_owned()).await
    }

    pub async fn send_post(&self, path: &str, query: &str, body: String) -> (u16, Value) {
        let r = self
            .http
            .post(format!("http://{}{path}?{query}", self.addr))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null))
    }

    pub async fn trigger(&self, channels: &[&str], name: &str, data: &str) -> (u16, Value) {
        self.post(
            &format!("/apps/{APP_ID}/events"),
            serde_json::json!({"name": name, "channels": channels, "data": data}),
        )
        .await
    }
}

pub fn close(code: u16) -> CloseCode {
    CloseCode::from(code)
}

/// Signs in as pusher-js does after `authenticateUser`; returns the server's answer.
pub async fn sign_in(c: &mut Client, user_data: &Value) -> Value {
    let user_data = user_data.to_string();
    let auth = signing::token(KEY, SECRET, &signing::user_string(&c.socket_id, &user_data));
    c.send(serde_json::json!({"event":"pusher:signin","data":{"auth":auth,"user_data":user_data}})).await;
    c.next().await
}

/// One webhook request as received.
#[derive(Debug, Clone)]
pub struct Hook {
    /// `X-Herald-Webhook-Id`: the same on every retry of one request.
    pub id: String,
    pub key: String,
    pub signature: String,
    pub body: String,
    pub at: std::time::Instant,
}

impl Hook {
    pub fn events(&self) -> Vec<Value> {
        let v: Value = serde_json::from_str(&self.body).unwrap();
        v["events"].as_array().unwrap().clone()
    }
}

/// A webhook receiver on 127.0.0.1:0 that records every request and answers with the
/// statuses given in order (then 200).
pub struct Receiver {
    pub url: String,
    pub hooks: std::sync::Arc<std::sync::Mutex<Vec<Hook>>>,
}

impl Receiver {
    pub async fn start(mut statuses: Vec<u16>) -> Receiver {
        use axum::http::{HeaderMap, StatusCode};
        let hooks: std::sync::Arc<std::sync::Mutex<Vec<Hook>>> = Default::default();
        statuses.reverse();
        let statuses = std::sync::Arc::new(std::sync::Mutex::new(statuses));
        let recorded = hooks.clone();
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let recorded = recorded.clone();
                let statuses = statuses.clone();
                async move {
                    let h =
                        |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    recorded.lock().unwrap().push(Hook {
                        id: h("x-herald-webhook-id"),
                        key: h("x-pusher-key"),
                        signature: h("x-pusher-signature"),
                        body,
                        at: std::time::Instant::now(),
                    });
                    let status = statuses.lock().unwrap().pop().unwrap_or(200);
                    StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, hooks }
    }

    pub fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }

    /// Every event received so far, flattened.
    pub fn events(&self) -> Vec<Value> {
        self.hooks().iter().flat_map(Hook::events).collect()
    }

    /// Waits until `pred` holds for the received events (or panics after `within`).
    pub async fn wait_for(&self, within: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let events = self.events();
            if pred(&events) {
                return events;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("webhooks never matched; got {events:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Starts the server with webhook timings of the test's choosing.
pub async fn start_server_with(
    config: Config,
    hooks: herald_server::webhooks::WebhookSettings,
) -> TestServer {
    let server = Server::bind_with(&with_backend(config), hooks).await.expect("bind");
    let addr = server.local_addr().unwrap();
    let ops = server.ops_addr().unwrap();
    let shutdown = server.shutdown_token();
    let task = tokio::spawn(server.run());
    TestServer { addr, ops, shutdown, task }
}
