//! Pusher protocol 7 over real sockets: handshake, close codes, heartbeats, subscriptions,
//! presence, client events, graceful shutdown.

use std::time::Duration;

use herald_server::apps::{App, QuotaCode};
use herald_server::Config;
use herald_testkit::*;
use serde_json::{json, Value};

fn data_of(frame: &Value) -> Value {
    match &frame["data"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        other => other.clone(),
    }
}

#[tokio::test]
async fn first_frame_is_connection_established_with_socket_id_and_activity_timeout() {
    let s = start_default().await;
    let mut ws = raw(s.addr, &format!("/app/{KEY}?protocol=7&client=js&version=8.6.0")).await;
    let f = next_json(&mut ws).await;
    assert_eq!(f["event"], "pusher:connection_established");
    assert!(f["data"].is_string(), "data must be a JSON string");
    let d = data_of(&f);
    assert!(herald_server::protocol::is_socket_id(d["socket_id"].as_str().unwrap()));
    assert_eq!(d["activity_timeout"], 120);
}

#[tokio::test]
async fn connect_errors_close_with_the_protocol_codes() {
    let mut config = Config::for_tests();
    let mut disabled = App::new("2", "disabled-key", "s");
    disabled.enabled = false;
    config.apps.push(disabled);
    let s = start_server(config).await;
    for (path, code) in [
        ("/app/nope?protocol=7".to_owned(), 4001),
        ("/app/disabled-key?protocol=7".to_owned(), 4003),
        (format!("/app/{KEY}"), 4008),
        (format!("/app/{KEY}?protocol=3"), 4007),
        (format!("/app/{KEY}?protocol=abc"), 4007),
    ] {
        let mut ws = raw(s.addr, &path).await;
        let err = next_json(&mut ws).await;
        assert_eq!(err["event"], "pusher:error", "{path}");
        assert_eq!(err["data"]["code"], code, "{path}");
        assert_eq!(close_code(&mut ws).await, Some(code), "{path}");
    }
}

#[tokio::test]
async fn connections_over_the_app_quota_are_closed_with_4004_or_4100() {
    let mut config = Config::for_tests();
    config.apps[0].limits.max_connections = Some(1);
    let mut soketi_style = App::new("2", "k2", "s2");
    soketi_style.limits.max_connections = Some(0);
    soketi_style.limits.connection_quota_code = QuotaCode::Capacity4100;
    config.apps.push(soketi_style);
    let s = start_server(config).await;
    let _first = connect(s.addr).await;
    let mut ws = raw(s.addr, &format!("/app/{KEY}?protocol=7")).await;
    assert_eq!(next_json(&mut ws).await["data"]["code"], 4004);
    assert_eq!(close_code(&mut ws).await, Some(4004));
    let mut ws = raw(s.addr, "/app/k2?protocol=7").await;
    assert_eq!(next_json(&mut ws).await["data"]["code"], 4100);
}

#[tokio::test]
async fn pusher_ping_is_answered_with_pong() {
    let s = start_default().await;
    let mut c = connect(s.addr).await;
    c.send(json!({"event":"pusher:ping","data":{}})).await;
    assert_eq!(c.next().await["event"], "pusher:pong");
}

#[tokio::test]
async fn a_silent_client_is_pinged_then_closed_with_4201() {
    let mut config = Config::for_tests();
    config.settings.activity_timeout = Duration::from_secs(1);
    config.settings.pong_timeout = Duration::from_secs(1);
    let s = start_server(config).await;
    let mut silent = connect(s.addr).await;
    let mut answering = connect(s.addr).await;
    assert_eq!(silent.next().await["event"], "pusher:ping");
    assert_eq!(answering.next().await["event"], "pusher:ping");
    answering.send(json!({"event":"pusher:pong","data":{}})).await;
    assert_eq!(silent.close_code().await, Some(4201));
    // The client that answered is pinged again rather than closed.
    assert_eq!(answering.next().await["event"], "pusher:ping");
}

#[tokio::test]
async fn public_subscribe_succeeds_and_receives_triggered_events() {
    let s = start_default().await;
    let mut c = connect(s.addr).await;
    let ok = c.subscribe("news").await;
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(ok["channel"], "news");
    let (status, body) = Api::new(s.addr).trigger(&["news"], "update", r#"{"n":1}"#).await;
    assert_eq!((status, body), (200, json!({})));
    let ev = c.next().await;
    assert_eq!(ev, json!({"event":"update","channel":"news","data":"{\"n\":1}"}));
}

#[tokio::test]
async fn private_subscribe_checks_the_signature_and_keeps_the_socket_open() {
    let s = start_default().await;
    let mut c = connect(s.addr).await;
    assert_eq!(c.subscribe("private-a").await["event"], "pusher_internal:subscription_succeeded");
    let forged = herald_server::signing::token(KEY, "wrong-secret", &format!("{}:private-b", c.socket_id));
    c.send(json!({"event":"pusher:subscribe","data":{"channel":"private-b","auth":forged}})).await;
    let err = c.next().await;
    assert_eq!(err["event"], "pusher:subscription_error");
    assert_eq!(err["channel"], "private-b");
    assert_eq!(err["data"]["type"], "AuthError");
    assert_eq!(err["data"]["status"], 401);
    assert!(err["data"]["error"].as_str().unwrap().contains("Invalid signature"));
    // A signature for another socket is refused too.
    let stolen = channel_auth("1.1", "private-b", None);
    c.send(json!({"event":"pusher:subscribe","data":{"channel":"private-b","auth":stolen}})).await;
    assert_eq!(c.next().await["event"], "pusher:subscription_error");
    c.send(json!({"event":"pusher:ping"})).await;
    assert_eq!(c.next().await["event"], "pusher:pong");
}

#[tokio::test]
async fn the_hosted_pusher_dialect_reports_subscription_errors_as_pusher_error() {
    let mut config = Config::for_tests();
    config.settings.error_dialect = herald_server::protocol::frames::ErrorDialect::Pusher;
    let s = start_server(config).await;
    let mut c = connect(s.addr).await;
    c.send(json!({"event":"pusher:subscribe","data":{"channel":"private-b","auth":format!("{KEY}:00")}}))
        .await;
    let err = c.next().await;
    assert_eq!(err["event"], "pusher:error");
    assert_eq!(err["data"]["code"], Value::Null);
}

#[tokio::test]
async fn invalid_channel_names_are_refused_and_200_characters_accepted() {
    let s = start_default().await;
    let mut c = connect(s.addr).await;
    for bad in ["has space", "#internal", &"a".repeat(201), "#server-to-user-someone"] {
        let r = c.subscribe(bad).await;
        assert_eq!(r["event"], "pusher:subscription_error", "{bad}");
    }
    assert_eq!(c.subscribe(&"a".repeat(200)).await["event"], "pusher_internal:subscription_succeeded");
}

#[tokio::test]
async fn presence_counts_a_user_with_two_sockets_once() {
    let s = start_default().await;
    let mut alice = connect(s.addr).await;
    let ok = alice.join("presence-room", "alice", json!({"name":"Alice"})).await;
    let p = &data_of(&ok)["presence"];
    assert_eq!(p["count"], 1);
    assert_eq!(p["ids"], json!(["alice"]));
    assert_eq!(p["hash"]["alice"]["name"], "Alice");

    let mut bob1 = connect(s.addr).await;
    let ok = bob1.join("presence-room", "bob", json!({"name":"Bob"})).await;
    assert_eq!(data_of(&ok)["presence"]["count"], 2);
    let added = alice.next().await;
    assert_eq!(added["event"], "pusher_internal:member_added");
    assert_eq!(data_of(&added), json!({"user_id":"bob","user_info":{"name":"Bob"}}));

    // Bob's second socket: no member_added, count stays 2.
    let mut bob2 = connect(s.addr).await;
    let ok = bob2.join("presence-room", "bob", json!({"name":"Bob"})).await;
    assert_eq!(data_of(&ok)["presence"]["count"], 2);
    alice.assert_silent(Duration::from_millis(300)).await;

    let api = Api::new(s.addr);
    let (_, users) = api.get(&format!("/apps/{APP_ID}/channels/presence-room/users"), &[]).await;
    let mut ids: Vec<String> =
        users["users"].as_array().unwrap().iter().map(|u| u["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    assert_eq!(ids, ["alice", "bob"]);

    drop(bob1);
    alice.assert_silent(Duration::from_millis(300)).await;
    bob2.send(json!({"event":"pusher:unsubscribe","data":{"channel":"presence-room"}})).await;
    let removed = alice.next().await;
    assert_eq!(removed["event"], "pusher_internal:member_removed");
    assert_eq!(data_of(&removed), json!({"user_id":"bob"}));
}

#[tokio::test]
async fn numeric_presence_user_ids_become_strings() {
    let s = start_default().await;
    let mut c = connect(s.addr).await;
    let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
    let auth = channel_auth(&c.socket_id, "presence-n", Some(data));
    c.send(
        json!({"event":"pusher:subscribe","data":{"channel":"presence-n","auth":auth,"channel_data":data}}),
    )
    .await;
    let ok = c.next().await;
    assert_eq!(data_of(&ok)["presence"]["ids"], json!(["10"]));
}

#[tokio::test]
async fn presence_limits_refuse_extra_members_and_oversized_user_info() {
    let mut config = Config::for_tests();
    config.apps[0].limits.max_presence_members = 2;
    let s = start_server(config).await;
    let mut a = connect(s.addr).await;
    let mut b = connect(s.addr).await;
    let mut c = connect(s.addr).await;
    a.join("presence-x", "a", json!({})).await;
    b.join("presence-x", "b", json!({})).await;
    let full = c.join("presence-x", "c", json!({})).await;
    assert_eq!(full["event"], "pusher:subscription_error");
    assert_eq!(full["data"]["type"], "LimitReached");
    let big = c.join("presence-y", "c", json!({"bio": "x".repeat(2000)})).await;
    assert_eq!(big["event"], "pusher:subscription_error");
    assert!(big["data"]["error"].as_str().unwrap().contains("user_info"));
    // A second socket of an existing member still gets in.
    let mut a2 = connect(s.addr).await;
    assert_eq!(
        a2.join("presence-x", "a", json!({})).await["event"],
        "pusher_internal:subscription_succeeded"
    );
}

#[tokio::test]
async fn large_presence_channels_work_when_the_limit_is_raised() {
    let mut config = Config::for_tests();
    config.apps[0].limits.max_presence_members = 100_000;
    let s = start_server(config).await;
    let mut members = Vec::new();
    for i in 0..300 {
        let mut c = connect(s.addr).await;
        let r = c.join("presence-big", &format!("user-{i}"), json!({"i": i})).await;
        assert_eq!(data_of(&r)["presence"]["count"], i + 1);
        members.push(c);
    }
    let (_, info) = Api::new(s.addr)
        .get(&format!("/apps/{APP_ID}/channels/presence-big"), &[("info", "user_count,subscription_count")])
        .await;
    assert_eq!(info, json!({"occupied":true,"user_count":300,"subscription_count":300}));
}

#[tokio::test]
async fn client_events_reach_others_but_not_the_sender_and_carry_user_id_on_presence() {
    let s = start_default().await;
    let mut a = connect(s.addr).await;
    let mut b = connect(s.addr).await;
    a.subscribe("private-chat").await;
    b.subscribe("private-chat").await;
    a.send(json!({"event":"client-typing","channel":"private-chat","data":{"who":"a"}})).await;
    assert_eq!(b.next().await, json!({"event":"client-typing","channel":"private-chat","data":{"who":"a"}}));
    a.assert_silent(Duration::from_millis(200)).await;

    a.join("presence-chat", "ann", json!({})).await;
    b.join("presence-chat", "ben", json!({})).await;
    assert_eq!(a.next().await["event"], "pusher_internal:member_added");
    a.send(json!({"event":"client-hi","channel":"presence-chat","data":{}})).await;
    let ev = b.next().await;
    assert_eq!(ev["user_id"], "ann");
}

#[tokio::test]
async fn client_events_are_refused_where_pusher_refuses_them() {
    let mut config = Config::for_tests();
    config.apps.push(App::new("2", "no-client-events", "s"));
    let s = start_server(config).await;
    let mut c = connect(s.addr).await;
    c.subscribe("public").await;
    c.subscribe("private-encrypted-x").await;
    for (channel, needle) in [
        ("public", "only allowed on private and presence"),
        ("private-encrypted-x", "only allowed on private and presence"),
        ("private-not-joined", "not subscribed"),
    ] {
        c.send(json!({"event":"client-x","channel":channel,"data":{}})).await;
        let err = c.next().await;
        assert_eq!(err["event"], "pusher:error", "{channel}");
        assert!(err["data"]["message"].as_str().unwrap().contains(needle), "{err}");
    }
    let mut off = connect_key(s.addr, "no-client-events").await;
    off.subscribe("private-x").await;
    off.send(json!({"event":"client-x","channel":"private-x","data":{}})).await;
    assert!(off.next().await["data"]["message"].as_str().unwrap().contains("enable"));
}

#[tokio::test]
async fn client_events_over_ten_per_second_get_4301_and_the_socket_stays() {
    let s = start_default().await;
    let mut a = connect(s.addr).await;
    let mut b = connect(s.addr).await;
    a.subscribe("private-r").await;
    b.subscribe("private-r").await;
    for i in 0..11 {
        a.send(json!({"event":"client-n","channel":"private-r","data":{"i":i}})).await;
    }
    let err = a.next().await;
    assert_eq!(err["event"], "pusher:error");
    assert_eq!(err["data"]["code"], 4301);
    for _ in 0..10 {
        assert_eq!(b.next().await["event"], "client-n");
    }
    b.assert_silent(Duration::from_millis(200)).await;
    a.send(json!({"event":"pusher:ping"})).await;
    assert_eq!(a.next().await["event"], "pusher:pong");
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_4200_and_the_server_returns() {
    let s = start_default().await;
    let mut a = connect(s.addr).await;
    let mut b = connect(s.addr).await;
    b.subscribe("x").await;
    s.shutdown.cancel();
    assert_eq!(a.close_code().await, Some(4200));
    assert_eq!(b.close_code().await, Some(4200));
    tokio::time::timeout(WAIT, s.task).await.expect("server stops").unwrap().unwrap();
}
