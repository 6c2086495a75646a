//! Bad input from clients: each case gets the protocol's answer, and a bystander on the same
//! server keeps receiving events.

use std::time::Duration;

use futures_util::SinkExt;
use herald_server::Config;
use herald_testkit::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// A subscribed bystander and a check that it still gets events.
struct Bystander {
    client: Client,
    api: Api,
    n: u32,
}

impl Bystander {
    async fn new(s: &TestServer) -> Self {
        let mut client = connect(s.addr).await;
        client.subscribe("bystander").await;
        Bystander { client, api: Api::new(s.addr), n: 0 }
    }

    async fn still_served(&mut self) {
        self.n += 1;
        let data = self.n.to_string();
        assert_eq!(self.api.trigger(&["bystander"], "tick", &data).await.0, 200);
        let ev = self.client.next().await;
        assert_eq!((ev["event"].as_str(), ev["data"].as_str()), (Some("tick"), Some(data.as_str())));
    }
}

#[tokio::test]
async fn malformed_frames_get_pusher_error_and_the_socket_stays_open() {
    let s = start_default().await;
    let mut by = Bystander::new(&s).await;
    let mut c = connect(s.addr).await;
    for frame in [
        "not json",
        "[1,2,3]",
        "{\"event\": 42}",
        "{\"no_event\":true}",
        "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":7}}",
        "{\"event\":\"pusher:subscribe\",\"data\":\"{broken\"}",
        "{\"event\":\"pusher:subscribe\"}",
        "{\"event\":\"client-x\"}",
        "{\"event\":\"pusher:bogus\",\"data\":{}}",
        "{\"event\":\"not-a-client-event\",\"channel\":\"private-a\",\"data\":{}}",
        "",
    ] {
        c.send_text(frame).await;
        let err = c.next().await;
        assert_eq!(err["event"], "pusher:error", "{frame:?} -> {err}");
        assert!(err["data"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{frame:?}");
        by.still_served().await;
    }
    c.send(json!({"event":"pusher:ping"})).await;
    assert_eq!(c.next().await["event"], "pusher:pong");
}

#[tokio::test]
async fn deeply_nested_json_is_refused_without_harm() {
    let s = start_default().await;
    let mut by = Bystander::new(&s).await;
    let mut c = connect(s.addr).await;
    let nested = format!(
        "{{\"event\":\"client-x\",\"channel\":\"private-a\",\"data\":{}1{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    c.send_text(&nested).await;
    assert_eq!(c.next().await["event"], "pusher:error");
    by.still_served().await;
}

#[tokio::test]
async fn binary_frames_are_refused_with_a_pusher_error() {
    let s = start_default().await;
    let mut by = Bystander::new(&s).await;
    let mut c = connect(s.addr).await;
    c.ws.send(Message::Binary(vec![0, 159, 146, 150].into())).await.unwrap();
    let err = c.next().await;
    assert!(err["data"]["message"].as_str().unwrap().contains("Binary"));
    by.still_served().await;
}

#[tokio::test]
async fn a_frame_over_the_size_limit_closes_that_socket_with_1009_only() {
    let mut config = Config::for_tests();
    config.settings.max_message_size = 16 * 1024;
    let s = start_server(config).await;
    let mut by = Bystander::new(&s).await;
    let mut c = connect(s.addr).await;
    let huge = format!(
        "{{\"event\":\"client-x\",\"channel\":\"private-a\",\"data\":\"{}\"}}",
        "x".repeat(64 * 1024)
    );
    let _ = c.ws.send(Message::Text(huge.into())).await;
    assert_eq!(c.close_code().await, Some(1009));
    by.still_served().await;
}

#[tokio::test]
async fn oversized_client_event_data_is_refused() {
    let s = start_default().await;
    let mut a = connect(s.addr).await;
    let mut b = connect(s.addr).await;
    a.subscribe("private-big").await;
    b.subscribe("private-big").await;
    a.send(json!({"event":"client-big","channel":"private-big","data":"x".repeat(11 * 1024)})).await;
    let err = a.next().await;
    assert!(err["data"]["message"].as_str().unwrap().contains("larger than"));
    b.assert_silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn presence_channel_data_that_is_missing_or_malformed_is_refused() {
    let s = start_default().await;
    let mut c = connect(s.addr).await;
    for data in [
        None,
        Some("not json"),
        Some(r#"{"user_info":{}}"#),
        Some(r#"{"user_id":""}"#),
        Some(r#"{"user_id":{"a":1}}"#),
    ] {
        let auth = channel_auth(&c.socket_id, "presence-z", data);
        let mut sub = json!({"event":"pusher:subscribe","data":{"channel":"presence-z","auth":auth}});
        if let Some(d) = data {
            sub["data"]["channel_data"] = json!(d);
        }
        c.send(sub).await;
        let r = c.next().await;
        assert_eq!(r["event"], "pusher:subscription_error", "{data:?}: {r}");
    }
    // channel_data tampered after signing: the signature no longer matches.
    let signed = r#"{"user_id":"alice"}"#;
    let auth = channel_auth(&c.socket_id, "presence-z", Some(signed));
    c.send(json!({"event":"pusher:subscribe","data":{"channel":"presence-z","auth":auth,"channel_data":r#"{"user_id":"admin"}"#}})).await;
    let r = c.next().await;
    assert_eq!(r["data"]["type"], "AuthError");
}

#[tokio::test]
async fn a_socket_may_not_grow_past_its_subscription_limit() {
    let mut config = Config::for_tests();
    config.apps[0].limits.max_subscriptions_per_connection = 50;
    let s = start_server(config).await;
    let mut c = connect(s.addr).await;
    for i in 0..50 {
        assert_eq!(c.subscribe(&format!("ch-{i}")).await["event"], "pusher_internal:subscription_succeeded");
    }
    let r = c.subscribe("one-too-many").await;
    assert_eq!(r["data"]["type"], "LimitReached");
    // Re-subscribing to a channel it already has is fine.
    assert_eq!(c.subscribe("ch-0").await["event"], "pusher_internal:subscription_succeeded");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_and_others_keep_receiving() {
    let mut config = Config::for_tests();
    config.settings.max_queued_messages = 32;
    let s = start_server(config).await;
    let mut by = Bystander::new(&s).await;
    let mut stalled = connect(s.addr).await;
    stalled.subscribe("busy").await;
    let mut reader = connect(s.addr).await;
    reader.subscribe("busy").await;
    let api = Api::new(s.addr);
    let payload = "y".repeat(10 * 1024);
    let metrics_url = format!("http://{}/metrics", s.ops);
    let mut kicked = false;
    // The stalled client never reads: once the kernel buffers and its queue of 32 are full,
    // the server must drop it. Bounded: at most 400 batches of 10 events (about 40 MB).
    for round in 0..400 {
        let batch: Vec<_> = (0..10).map(|_| json!({"channel":"busy","name":"load","data":payload})).collect();
        assert_eq!(api.post(&format!("/apps/{APP_ID}/batch_events"), json!({ "batch": batch })).await.0, 200);
        for _ in 0..10 {
            assert_eq!(reader.next().await["event"], "load");
        }
        if round % 10 == 9 {
            let text = reqwest::get(&metrics_url).await.unwrap().text().await.unwrap();
            if text.contains("reason=\"over_capacity\"") {
                kicked = true;
                break;
            }
        }
    }
    assert!(kicked, "the stalled client was never disconnected");
    by.still_served().await;
    // The stalled client, reading at last, finds its socket closed.
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            use futures_util::StreamExt;
            match stalled.ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("stalled socket ends");
    assert!(matches!(drained, Some(4100) | None), "{drained:?}");
}

#[tokio::test]
async fn a_text_frame_with_invalid_utf8_closes_that_socket_only() {
    use tokio_tungstenite::tungstenite::protocol::frame::{coding::Data, coding::OpCode, Frame};
    let s = start_default().await;
    let mut by = Bystander::new(&s).await;
    let mut c = connect(s.addr).await;
    // A raw text frame whose payload is not UTF-8 (the client library would refuse to build one).
    let frame = Frame::message(vec![0x7b, 0xff, 0xfe, 0x7d], OpCode::Data(Data::Text), true);
    c.ws.send(Message::Frame(frame)).await.expect("send raw frame");
    let code = c.close_code().await;
    assert_eq!(code, Some(1007), "invalid UTF-8 ends that socket with 1007 (invalid frame payload data)");
    by.still_served().await;
}

#[tokio::test]
async fn ten_thousand_subscriptions_on_one_socket_stop_at_the_limit_and_harm_nobody() {
    let s = start_default().await;
    let mut by = Bystander::new(&s).await;
    let mut c = connect(s.addr).await;
    // A subscribe storm: 10,000 frames written without waiting for answers.
    for i in 0..10_000 {
        let frame = json!({"event":"pusher:subscribe","data":{"channel": format!("storm-{i}")}}).to_string();
        c.ws.feed(Message::Text(frame.into())).await.expect("feed");
    }
    c.ws.flush().await.expect("flush");
    let (mut ok, mut limited) = (0, 0);
    while ok + limited < 10_000 {
        let answer = c.next().await;
        match answer["event"].as_str() {
            Some("pusher_internal:subscription_succeeded") => ok += 1,
            Some("pusher:subscription_error") if answer["data"]["type"] == "LimitReached" => limited += 1,
            other => panic!("unexpected answer {other:?}: {answer}"),
        }
    }
    assert_eq!((ok, limited), (1000, 9000), "the default max_subscriptions_per_connection is 1000");
    by.still_served().await;
    let (status, body) =
        Api::new(s.addr).get(&format!("/apps/{APP_ID}/channels"), &[("filter_by_prefix", "storm-")]).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["channels"].as_object().map(|m| m.len()),
        Some(1000),
        "refused channels were never created"
    );
}

#[tokio::test]
async fn a_subscribe_unsubscribe_churn_is_refused_past_the_burst_and_recovers() {
    let mut config = Config::for_tests();
    config.apps[0].limits.max_subscriptions_per_connection = 10;
    config.apps[0].limits.subscription_changes_per_second = 5;
    let s = start_server(config).await;
    let mut by = Bystander::new(&s).await;
    let mut c = connect(s.addr).await;
    // Each cycle costs the cluster a join and a leave (scripts, maybe webhooks).
    let mut refused = None;
    for i in 0..40 {
        c.send(json!({"event":"pusher:subscribe","data":{"channel":"churn"}})).await;
        let answer = c.next().await;
        if answer["event"] == "pusher:subscription_error" {
            refused = Some((i, answer));
            break;
        }
        assert_eq!(answer["event"], "pusher_internal:subscription_succeeded", "{answer}");
        c.send(json!({"event":"pusher:unsubscribe","data":{"channel":"churn"}})).await;
    }
    let (at, answer) = refused.expect("a churning socket is refused at some point");
    assert!((4..=10).contains(&at), "the burst (10 changes) then the rate: refused at cycle {at}");
    assert_eq!(answer["data"]["type"], "LimitReached", "{answer}");
    assert!(
        answer["data"]["error"].as_str().unwrap_or_default().contains("at most 5 per second"),
        "{answer}"
    );
    by.still_served().await;
    // The bucket refills: a second later the socket subscribes again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(c.subscribe("churn").await["event"], "pusher_internal:subscription_succeeded");
}
