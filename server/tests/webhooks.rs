//! Webhooks against a real HTTP receiver: signatures, the 3 s vacate / remove delay and its
//! cancellation, batching, retries, filters.

use std::time::{Duration, Instant};

use herald_server::apps::{WebhookKind, WebhookTarget};
use herald_server::webhooks::WebhookSettings;
use herald_server::Config;
use herald_testkit::*;
use serde_json::json;

fn target(url: &str) -> WebhookTarget {
    WebhookTarget { url: url.to_owned(), event_types: vec![], channel_prefix: None, channel_suffix: None }
}

fn names(events: &[serde_json::Value]) -> Vec<String> {
    events.iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect()
}

async fn server_with_hooks(targets: Vec<WebhookTarget>, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = Config::for_tests();
    config.apps[0].webhooks = targets;
    tweak(&mut config);
    let settings = WebhookSettings { first_retry: Duration::from_millis(100), ..WebhookSettings::default() };
    start_server_with(config, settings).await
}

#[tokio::test]
async fn every_webhook_is_signed_with_the_app_secret_and_carries_the_key() {
    let rx = Receiver::start(vec![]).await;
    let s = server_with_hooks(vec![target(&rx.url)], |_| {}).await;
    let mut c = connect(s.addr).await;
    c.subscribe("signed").await;
    rx.wait_for(WAIT, |e| !e.is_empty()).await;
    for hook in rx.hooks() {
        assert_eq!(hook.key, KEY);
        assert_eq!(hook.signature, herald_server::signing::sign(SECRET, hook.body.as_bytes()));
        let body: serde_json::Value = serde_json::from_str(&hook.body).unwrap();
        assert!(body["time_ms"].as_u64().unwrap() > 1_600_000_000_000);
    }
    assert_eq!(rx.events()[0], json!({"name":"channel_occupied","channel":"signed"}));
}

#[tokio::test]
async fn vacated_and_member_removed_wait_three_seconds() {
    let rx = Receiver::start(vec![]).await;
    let s = server_with_hooks(vec![target(&rx.url)], |_| {}).await;
    let mut c = connect(s.addr).await;
    c.join("presence-w", "ann", json!({})).await;
    rx.wait_for(WAIT, |e| e.len() == 2).await;
    let left = Instant::now();
    drop(c);
    let events = rx.wait_for(Duration::from_secs(8), |e| e.len() == 4).await;
    let elapsed = left.elapsed();
    assert!(elapsed >= Duration::from_millis(2900), "sent after {elapsed:?}");
    let mut got = names(&events);
    got.sort();
    assert_eq!(got, ["channel_occupied", "channel_vacated", "member_added", "member_removed"]);
    assert!(events.contains(&json!({"name":"member_removed","channel":"presence-w","user_id":"ann"})));
}

#[tokio::test]
async fn leaving_and_coming_back_within_three_seconds_sends_nothing() {
    let rx = Receiver::start(vec![]).await;
    let s = server_with_hooks(vec![target(&rx.url)], |_| {}).await;
    let mut c = connect(s.addr).await;
    c.join("presence-b", "ann", json!({})).await;
    rx.wait_for(WAIT, |e| e.len() == 2).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut again = connect(s.addr).await;
    again.join("presence-b", "ann", json!({})).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(names(&rx.events()), ["channel_occupied", "member_added"], "no flap reaches the backend");
}

#[tokio::test]
async fn client_events_and_cache_misses_are_reported() {
    let rx = Receiver::start(vec![]).await;
    let s = server_with_hooks(vec![target(&rx.url)], |_| {}).await;
    let mut a = connect(s.addr).await;
    let mut b = connect(s.addr).await;
    a.join("presence-c", "ann", json!({})).await;
    b.join("presence-c", "ben", json!({})).await;
    a.send(json!({"event":"client-typing","channel":"presence-c","data":{"on":true}})).await;
    b.subscribe("cache-x").await;
    let events = rx
        .wait_for(WAIT, |e| {
            e.iter().any(|x| x["name"] == "client_event") && e.iter().any(|x| x["name"] == "cache_miss")
        })
        .await;
    let client = events.iter().find(|e| e["name"] == "client_event").unwrap();
    assert_eq!(
        client,
        &json!({"name":"client_event","channel":"presence-c","event":"client-typing","data":"{\"on\":true}","socket_id":a.socket_id,"user_id":"ann"})
    );
    assert!(events.contains(&json!({"name":"cache_miss","channel":"cache-x"})));
}

#[tokio::test]
async fn a_failing_receiver_gets_retries_until_it_accepts() {
    let rx = Receiver::start(vec![500, 503]).await;
    let s = server_with_hooks(vec![target(&rx.url)], |_| {}).await;
    let mut c = connect(s.addr).await;
    c.subscribe("retry-me").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while rx.hooks().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hooks = rx.hooks();
    assert_eq!(hooks.len(), 3, "two failures then one success");
    assert!(hooks.iter().all(|h| h.body == hooks[0].body), "the same request is retried");
    assert!(hooks[2].at - hooks[1].at > hooks[1].at - hooks[0].at, "backoff grows");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.hooks().len(), 3, "nothing after success");
    let metrics = reqwest::get(format!("http://{}/metrics", s.ops)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("herald_webhooks_failed_total{app_id=\"1\"} 2"), "{metrics}");
    assert!(metrics.contains("herald_webhooks_sent_total{app_id=\"1\"} 1"), "{metrics}");
}

#[tokio::test]
async fn each_target_gets_only_the_kinds_and_channels_it_asked_for() {
    let all = Receiver::start(vec![]).await;
    let orders = Receiver::start(vec![]).await;
    let filtered = WebhookTarget {
        url: orders.url.clone(),
        event_types: vec![WebhookKind::ChannelOccupied],
        channel_prefix: Some("private-".into()),
        channel_suffix: Some("-orders".into()),
    };
    let s = server_with_hooks(vec![target(&all.url), filtered], |_| {}).await;
    let mut c = connect(s.addr).await;
    for ch in ["private-eu-orders", "private-eu-users", "public-orders"] {
        c.subscribe(ch).await;
    }
    all.wait_for(WAIT, |e| e.len() == 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(orders.events(), vec![json!({"name":"channel_occupied","channel":"private-eu-orders"})]);
}

#[tokio::test]
async fn events_within_the_batch_window_go_in_one_request() {
    let rx = Receiver::start(vec![]).await;
    let s = server_with_hooks(vec![target(&rx.url)], |c| {
        c.apps[0].webhook_batch_window = Duration::from_millis(300)
    })
    .await;
    let mut c = connect(s.addr).await;
    for ch in ["b1", "b2", "b3"] {
        c.subscribe(ch).await;
    }
    rx.wait_for(WAIT, |e| e.len() == 3).await;
    assert_eq!(rx.hooks().len(), 1, "one request for three events");
}

#[tokio::test]
async fn shutdown_sends_held_back_events_before_exiting() {
    let rx = Receiver::start(vec![]).await;
    let s = server_with_hooks(vec![target(&rx.url)], |_| {}).await;
    let mut c = connect(s.addr).await;
    c.subscribe("last-words").await;
    rx.wait_for(WAIT, |e| e.len() == 1).await;
    s.shutdown.cancel();
    tokio::time::timeout(WAIT, s.task).await.unwrap().unwrap().unwrap();
    assert_eq!(names(&rx.events()), ["channel_occupied", "channel_vacated"]);
}

#[tokio::test]
async fn pending_webhooks_are_bounded_by_the_config_and_the_excess_is_counted() {
    // A receiver that keeps failing: every delivery stays pending, waiting to retry.
    let rx = Receiver::start(vec![500; 1000]).await;
    let mut config = Config::for_tests();
    config.apps[0].webhooks = vec![target(&rx.url)];
    config.settings.max_pending_webhooks = 3;
    let s = start_server(config).await;
    let mut c = connect(s.addr).await;
    for i in 0..10 {
        c.subscribe(&format!("busy-{i}")).await;
    }
    let metrics_url = format!("http://{}/metrics", s.ops);
    let deadline = Instant::now() + Duration::from_secs(10);
    let dropped = loop {
        let text = reqwest::get(&metrics_url).await.unwrap().text().await.unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("herald_webhooks_dropped_total") && l.contains("too_many_pending"));
        if let Some(n) = line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse::<u64>().ok()) {
            if n >= 7 || Instant::now() > deadline {
                break n;
            }
        }
        assert!(Instant::now() < deadline, "no drop counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dropped, 7, "3 of 10 channel_occupied events pending, the rest dropped");
    let distinct = |events: &[serde_json::Value]| {
        events
            .iter()
            .map(|e| e["channel"].as_str().unwrap().to_owned())
            .collect::<std::collections::HashSet<_>>()
    };
    rx.wait_for(WAIT, |e| distinct(e).len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // past the first retry
    assert_eq!(
        distinct(&rx.events()).len(),
        3,
        "only the pending three reach the receiver (and are retried)"
    );
    // The socket that caused it is served as usual.
    assert_eq!(Api::new(s.addr).trigger(&["busy-0"], "tick", "1").await.0, 200);
    assert_eq!(c.next().await["event"], "tick");
}

#[tokio::test]
async fn every_retry_of_a_request_carries_the_same_webhook_id_and_another_request_another() {
    let rx = Receiver::start(vec![500]).await;
    let s = server_with_hooks(vec![target(&rx.url)], |_| {}).await;
    let mut c = connect(s.addr).await;
    c.subscribe("first").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while rx.hooks().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.subscribe("second").await;
    while rx.hooks().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hooks = rx.hooks();
    assert_eq!(hooks.len(), 3, "a failure, its retry, then the second channel's webhook");
    assert_eq!(hooks[0].id.len(), 32, "an id on every request: {:?}", hooks[0].id);
    assert_eq!(hooks[0].id, hooks[1].id, "a retry is the same request: a receiver can drop the repeat");
    assert_ne!(hooks[1].id, hooks[2].id, "another request, another id");
}
