//! The rest of Pusher over real sockets: user sign-in, server-to-user events, terminate,
//! authorized connections, watchlists, cache channels, subscription counts and quotas.

use std::time::Duration;

use herald_server::Config;
use herald_testkit::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn data_of(frame: &Value) -> Value {
    match &frame["data"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        other => other.clone(),
    }
}

#[tokio::test]
async fn signin_succeeds_and_only_that_user_may_join_its_server_to_user_channel() {
    let s = start_default().await;
    let mut a = connect(s.addr).await;
    let mut a2 = connect(s.addr).await;
    let ok = sign_in(&mut a, &json!({"id":"42","user_info":{"name":"A"}})).await;
    assert_eq!(ok["event"], "pusher:signin_success");
    assert_eq!(data_of(&ok)["user_data"], json!({"id":"42","user_info":{"name":"A"}}).to_string());
    sign_in(&mut a2, &json!({"id":"42"})).await;
    assert_eq!(a.subscribe("#server-to-user-42").await["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(a2.subscribe("#server-to-user-42").await["event"], "pusher_internal:subscription_succeeded");
    let other = a.subscribe("#server-to-user-43").await;
    assert_eq!(other["event"], "pusher:subscription_error");
    let mut anonymous = connect(s.addr).await;
    assert_eq!(anonymous.subscribe("#server-to-user-42").await["data"]["status"], 403);

    let (status, _) = Api::new(s.addr).trigger(&["#server-to-user-42"], "private-note", "hi").await;
    assert_eq!(status, 200);
    assert_eq!(a.next().await["event"], "private-note");
    assert_eq!(a2.next().await["event"], "private-note");
    anonymous.assert_silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_failed_signin_closes_the_socket_with_4009() {
    let s = start_default().await;
    let mut forged = connect(s.addr).await;
    let user_data = json!({"id":"1"}).to_string();
    let auth =
        herald_server::signing::token(KEY, "wrong", &format!("{}::user::{user_data}", forged.socket_id));
    forged.send(json!({"event":"pusher:signin","data":{"auth":auth,"user_data":user_data}})).await;
    let err = forged.next().await;
    assert_eq!(err["data"]["code"], 4009);
    assert_eq!(forged.close_code().await, Some(4009));

    let mut no_id = connect(s.addr).await;
    let err = sign_in(&mut no_id, &json!({"name":"nobody"})).await;
    assert!(err["data"]["message"].as_str().unwrap().contains("user_data.id"));
    assert_eq!(no_id.close_code().await, Some(4009));

    let mut twice = connect(s.addr).await;
    sign_in(&mut twice, &json!({"id":"a"})).await;
    assert_eq!(sign_in(&mut twice, &json!({"id":"a"})).await["event"], "pusher:signin_success");
    let err = sign_in(&mut twice, &json!({"id":"b"})).await;
    assert!(err["data"]["message"].as_str().unwrap().contains("already signed in"));
    assert_eq!(twice.close_code().await, Some(4009));
}

#[tokio::test]
async fn terminate_connections_closes_every_socket_of_the_user_with_4009() {
    let s = start_default().await;
    let mut a1 = connect(s.addr).await;
    let mut a2 = connect(s.addr).await;
    let mut b = connect(s.addr).await;
    sign_in(&mut a1, &json!({"id":"alice"})).await;
    sign_in(&mut a2, &json!({"id":"alice"})).await;
    sign_in(&mut b, &json!({"id":"bob"})).await;
    let (status, body) =
        Api::new(s.addr).post(&format!("/apps/{APP_ID}/users/alice/terminate_connections"), json!({})).await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(a1.close_code().await, Some(4009));
    assert_eq!(a2.close_code().await, Some(4009));
    b.send(json!({"event":"pusher:ping"})).await;
    assert_eq!(b.next().await["event"], "pusher:pong");
    let (status, _) = Api::new(s.addr)
        .post(&format!("/apps/{APP_ID}/users/bad%20id/terminate_connections"), json!({}))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn authorized_connections_close_sockets_that_neither_sign_in_nor_join_a_private_channel() {
    let mut config = Config::for_tests();
    config.apps[0].user_authentication = true;
    config.apps[0].user_authentication_timeout = Duration::from_secs(1);
    let s = start_server(config).await;
    let mut idle = connect(s.addr).await;
    let mut public_only = connect(s.addr).await;
    let mut signed = connect(s.addr).await;
    let mut private = connect(s.addr).await;
    public_only.subscribe("news").await;
    sign_in(&mut signed, &json!({"id":"u"})).await;
    private.subscribe("private-x").await;
    assert_eq!(idle.close_code().await, Some(4009));
    assert_eq!(public_only.close_code().await, Some(4009));
    for c in [&mut signed, &mut private] {
        c.send(json!({"event":"pusher:ping"})).await;
        assert_eq!(c.next().await["event"], "pusher:pong");
    }
}

#[tokio::test]
async fn watchlists_get_the_current_state_then_every_change() {
    let mut config = Config::for_tests();
    config.apps[0].watchlist_events = true;
    config.apps[0].limits.max_watchlist_size = 3;
    let s = start_server(config).await;
    let mut bob = connect(s.addr).await;
    sign_in(&mut bob, &json!({"id":"bob"})).await;
    let mut alice = connect(s.addr).await;
    sign_in(&mut alice, &json!({"id":"alice","watchlist":["bob","carol"]})).await;
    let state = alice.next().await;
    assert_eq!(state["event"], "pusher_internal:watchlist_events");
    assert_eq!(
        data_of(&state)["events"],
        json!([{"name":"online","user_ids":["bob"]},{"name":"offline","user_ids":["carol"]}])
    );
    let mut carol = connect(s.addr).await;
    sign_in(&mut carol, &json!({"id":"carol"})).await;
    assert_eq!(data_of(&alice.next().await)["events"], json!([{"name":"online","user_ids":["carol"]}]));
    // A second socket of carol is not a change; the last one leaving is.
    let mut carol2 = connect(s.addr).await;
    sign_in(&mut carol2, &json!({"id":"carol"})).await;
    alice.assert_silent(Duration::from_millis(200)).await;
    drop(carol);
    alice.assert_silent(Duration::from_millis(200)).await;
    drop(carol2);
    assert_eq!(data_of(&alice.next().await)["events"], json!([{"name":"offline","user_ids":["carol"]}]));

    let mut greedy = connect(s.addr).await;
    let ok = sign_in(&mut greedy, &json!({"id":"g","watchlist":["a","b","c","d"]})).await;
    assert_eq!(ok["event"], "pusher:signin_success");
    let err = greedy.next().await;
    assert_eq!(err["data"]["code"], 4302);
    let state = greedy.next().await;
    assert_eq!(data_of(&state)["events"][0]["user_ids"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn cache_channels_replay_the_last_server_event_or_report_a_miss() {
    let mut config = Config::for_tests();
    config.apps[0].cache_ttl = Duration::from_secs(1);
    let s = start_server(config).await;
    let api = Api::new(s.addr);
    let mut first = connect(s.addr).await;
    assert_eq!(first.subscribe("cache-prices").await["event"], "pusher_internal:subscription_succeeded");
    let miss = first.next().await;
    assert_eq!(
        (miss["event"].as_str(), miss["channel"].as_str()),
        (Some("pusher:cache_miss"), Some("cache-prices"))
    );
    api.trigger(&["cache-prices"], "price", "1").await;
    api.trigger(&["cache-prices"], "price", "2").await;
    first.next().await;
    first.next().await;
    let mut late = connect(s.addr).await;
    late.subscribe("cache-prices").await;
    assert_eq!(late.next().await, json!({"event":"price","channel":"cache-prices","data":"2"}));
    // Client events are never cached.
    let mut a = connect(s.addr).await;
    a.subscribe("private-cache-room").await;
    a.next().await; // miss
    a.send(json!({"event":"client-x","channel":"private-cache-room","data":{}})).await;
    let mut b = connect(s.addr).await;
    b.subscribe("private-cache-room").await;
    assert_eq!(b.next().await["event"], "pusher:cache_miss");
    // After the TTL the cached event is gone.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut expired = connect(s.addr).await;
    expired.subscribe("cache-prices").await;
    assert_eq!(expired.next().await["event"], "pusher:cache_miss");
}

#[tokio::test]
async fn subscription_counts_are_sent_on_subscribe_and_unsubscribe_when_enabled() {
    let mut config = Config::for_tests();
    config.apps[0].subscription_count = true;
    let s = start_server(config).await;
    let mut a = connect(s.addr).await;
    a.subscribe("counted").await;
    let count = a.next().await;
    assert_eq!(count["event"], "pusher_internal:subscription_count");
    assert_eq!(data_of(&count), json!({"subscription_count":1}));
    let mut b = connect(s.addr).await;
    b.subscribe("counted").await;
    assert_eq!(data_of(&a.next().await)["subscription_count"], 2);
    assert_eq!(data_of(&b.next().await)["subscription_count"], 2);
    b.send(json!({"event":"pusher:unsubscribe","data":{"channel":"counted"}})).await;
    assert_eq!(data_of(&a.next().await)["subscription_count"], 1);
    // Presence channels never get subscription counts.
    a.join("presence-p", "u", json!({})).await;
    a.assert_silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn subscription_counts_are_off_by_default() {
    let s = start_default().await;
    let mut a = connect(s.addr).await;
    a.subscribe("quiet").await;
    a.assert_silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn backend_event_and_read_quotas_answer_429_then_refill() {
    let mut config = Config::for_tests();
    config.apps[0].limits.max_backend_events_per_second = Some(3);
    config.apps[0].limits.max_read_requests_per_second = Some(2);
    let s = start_server(config).await;
    let api = Api::new(s.addr);
    for _ in 0..3 {
        assert_eq!(api.trigger(&["q"], "e", "d").await.0, 200);
    }
    let (status, err) = api.trigger(&["q"], "e", "d").await;
    assert_eq!(status, 429);
    assert!(err["error"].as_str().unwrap().contains("backend_events_per_second"));
    let path = format!("/apps/{APP_ID}/channels");
    for _ in 0..2 {
        let (status, body) = api.get(&path, &[]).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(api.get(&path, &[]).await.0, 429);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(api.trigger(&["q"], "e", "d").await.0, 200, "the window refills");
    let metrics = reqwest::get(format!("http://{}/metrics", s.ops)).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("herald_limited_total{app_id=\"1\",limit=\"backend_events_per_second\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn websocket_origins_outside_the_allowed_list_are_refused_before_the_upgrade() {
    let mut config = Config::for_tests();
    config.apps[0].allowed_origins = vec!["https://chat.example.com".into()];
    let s = start_server(config).await;
    let url = format!("ws://{}/app/{KEY}?protocol=7", s.addr);
    let mut bad = url.clone().into_client_request().unwrap();
    bad.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(bad).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
    let mut good = url.into_client_request().unwrap();
    good.headers_mut().insert("origin", "https://chat.example.com".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(good).await.unwrap();
    assert_eq!(next_json(&mut ws).await["event"], "pusher:connection_established");
}

#[tokio::test]
async fn every_limit_refusal_is_counted_in_metrics() {
    let mut config = Config::for_tests();
    config.apps[0].limits.max_presence_members = 1;
    config.apps[0].limits.max_connections = Some(3);
    let s = start_server(config).await;
    let api = Api::new(s.addr);
    assert_eq!(api.trigger(&["x"], "e", &"x".repeat(10 * 1024 + 1)).await.0, 413);
    let mut a = connect(s.addr).await;
    let mut b = connect(s.addr).await;
    a.join("presence-full", "a", json!({})).await;
    assert_eq!(b.join("presence-full", "b", json!({})).await["data"]["type"], "LimitReached");
    a.subscribe("private-r").await;
    for _ in 0..11 {
        a.send(json!({"event":"client-x","channel":"private-r","data":{}})).await;
    }
    assert_eq!(a.next().await["data"]["code"], 4301);
    let _c = connect(s.addr).await;
    let mut refused = raw(s.addr, &format!("/app/{KEY}?protocol=7")).await;
    assert_eq!(close_code(&mut refused).await, Some(4004));
    let metrics = reqwest::get(format!("http://{}/metrics", s.ops)).await.unwrap().text().await.unwrap();
    for limit in
        ["max_event_data_size", "max_presence_members", "client_events_per_second", "max_connections"]
    {
        let line = format!("herald_limited_total{{app_id=\"1\",limit=\"{limit}\"}} 1");
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
}

#[tokio::test]
async fn terminate_without_the_app_prefix_resolves_the_app_from_auth_key() {
    let s = start_default().await;
    let mut u = connect(s.addr).await;
    sign_in(&mut u, &json!({"id":"py"})).await;
    let api = Api::new(s.addr);
    let path = "/users/py/terminate_connections";
    let (status, body) = api.post(path, json!({})).await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(u.close_code().await, Some(4009));
    let (status, _) = api.post_raw(path, "{}", now(), "not-the-secret").await;
    assert_eq!(status, 401, "still signature-checked");
}
