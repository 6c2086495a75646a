//! The debug console's endpoints: the page is served only when the console is on, every data
//! endpoint needs the app's secret (or the console token), the live log streams what happens
//! on the node, and the trigger form publishes through the HTTP API's rules.

use std::time::Duration;

use futures_util::StreamExt;
use herald_server::config::Config;
use herald_testkit::{connect, start_server, APP_ID, SECRET};
use serde_json::{json, Value};

fn console_config(token: Option<&str>) -> Config {
    let mut config = Config::for_tests();
    config.settings.console = true;
    config.settings.console_token = token.map(str::to_owned);
    config
}

async fn get(url: String, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("request");
    (res.status().as_u16(), res.text().await.unwrap_or_default())
}

#[tokio::test]
async fn the_console_is_off_unless_enabled() {
    let server = start_server(Config::for_tests()).await;
    let (status, _) = get(format!("http://{}/console", server.addr), None).await;
    assert_eq!(status, 404);
    let (status, _) =
        get(format!("http://{}/console/api/apps/{APP_ID}/state", server.addr), Some(SECRET)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn data_endpoints_need_the_app_secret_or_the_console_token() {
    let server = start_server(console_config(Some("ops-token"))).await;
    let (status, page) = get(format!("http://{}/console", server.addr), None).await;
    assert_eq!(status, 200);
    assert!(page.contains("Herald</span> debug console"), "the page is served");
    assert!(!page.contains("src=\"http"), "no external assets");
    let state = format!("http://{}/console/api/apps/{APP_ID}/state", server.addr);
    assert_eq!(get(state.clone(), None).await.0, 401);
    assert_eq!(get(state.clone(), Some("wrong")).await.0, 401);
    assert_eq!(get(state.clone(), Some(SECRET)).await.0, 200);
    assert_eq!(get(state, Some("ops-token")).await.0, 200);
    assert_eq!(
        get(format!("http://{}/console/api/apps/nope/state", server.addr), Some("ops-token")).await.0,
        404
    );
}

#[tokio::test]
async fn state_shows_connections_channels_and_presence_members() {
    let server = start_server(console_config(None)).await;
    let mut a = connect(server.addr).await;
    a.subscribe("news").await;
    a.join("presence-room", "ada", json!({ "name": "Ada" })).await;
    let (status, body) =
        get(format!("http://{}/console/api/apps/{APP_ID}/state", server.addr), Some(SECRET)).await;
    assert_eq!(status, 200);
    let state: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(state["connections"], 1);
    let channels = state["channels"].as_array().expect("channels");
    let room = channels.iter().find(|c| c["name"] == "presence-room").expect("presence channel listed");
    assert_eq!(room["members"], json!([{ "id": "ada", "info": { "name": "Ada" } }]));
    assert!(channels.iter().any(|c| c["name"] == "news" && c["subscriptions"] == 1));
}

#[tokio::test]
async fn the_log_streams_socket_activity_and_triggered_events() {
    let server = start_server(console_config(None)).await;
    let res = reqwest::Client::new()
        .get(format!("http://{}/console/api/apps/{APP_ID}/stream", server.addr))
        .bearer_auth(SECRET)
        .send()
        .await
        .expect("stream");
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();

    let mut client = connect(server.addr).await;
    client.subscribe("orders").await;
    let http = reqwest::Client::new();
    let trigger = |body: Value| {
        http.post(format!("http://{}/console/api/apps/{APP_ID}/trigger", server.addr))
            .bearer_auth(SECRET)
            .json(&body)
            .send()
    };
    let res = trigger(json!({ "channel": "orders", "event": "created", "data": "{\"id\":1}" }))
        .await
        .expect("trigger");
    assert_eq!(res.status(), 200);
    let got = client.next().await;
    assert_eq!((got["event"].as_str(), got["channel"].as_str()), (Some("created"), Some("orders")));

    // Refused the way the HTTP API refuses.
    let res =
        trigger(json!({ "channel": "bad channel!", "event": "x", "data": "{}" })).await.expect("trigger");
    assert_eq!(res.status(), 400);
    let res = http
        .post(format!("http://{}/console/api/apps/{APP_ID}/trigger", server.addr))
        .bearer_auth("wrong")
        .json(&json!({ "channel": "orders", "event": "x", "data": "{}" }))
        .send()
        .await
        .expect("trigger");
    assert_eq!(res.status(), 401);

    let mut text = String::new();
    let wanted = ["\"kind\":\"connected\"", "\"kind\":\"subscribed\"", "\"kind\":\"server_event\""];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !wanted.iter().all(|w| text.contains(w)) {
            let chunk = body.next().await.expect("stream open").expect("chunk");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("log entries missing; got: {text}"));
    assert!(text.contains("\"channel\":\"orders\"") && text.contains("\"event\":\"created\""), "{text}");
    assert!(!text.contains(SECRET), "the log never carries the secret");
}
