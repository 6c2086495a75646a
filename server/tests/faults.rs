//! Faults that once lost or falsified what clients and webhook receivers see, each reproduced
//! with real herald-server processes on a real Redis.

use std::time::Duration;

use herald_testkit::nodes::{Node, Redis};
use herald_testkit::*;
use serde_json::json;

#[tokio::test]
async fn two_live_nodes_with_one_node_id_still_deliver_to_each_other() {
    // Two hosts with the same name (or a restarted node whose old lease is still live): each
    // runs as its own incarnation; neither takes the other's messages for its own.
    let redis = Redis::start().await;
    let n1 = Node::spawn(&redis, "twin", &[]).await;
    let n2 = Node::spawn(&redis, "twin", &[]).await;
    let mut a = connect(n1.addr).await;
    let mut b = connect(n2.addr).await;
    a.subscribe("news").await;
    b.subscribe("news").await;
    let (status, _) = Api::new(n2.addr)
        .post(&format!("/apps/{APP_ID}/events"), json!({"name":"e","data":"from-2","channel":"news"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(a.next().await["data"], "from-2", "a node dropped its twin's event as its own");
    assert_eq!(b.next().await["data"], "from-2");
    let (status, _) = Api::new(n1.addr)
        .post(&format!("/apps/{APP_ID}/events"), json!({"name":"e","data":"from-1","channel":"news"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(b.next().await["data"], "from-1");
    assert_eq!(a.next().await["data"], "from-1");
    a.assert_silent(Duration::from_millis(300)).await;
    b.assert_silent(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn an_event_redis_did_not_take_is_answered_503_never_200() {
    let mut redis = Redis::start().await;
    let n1 = Node::spawn(&redis, "n1", &[]).await;
    let n2 = Node::spawn(&redis, "n2", &[]).await;
    let mut far = connect(n2.addr).await;
    far.subscribe("orders").await;
    let api = Api::new(n1.addr);
    assert_eq!(api.trigger(&["orders"], "placed", "1").await.0, 200);
    assert_eq!(far.next().await["data"], "1");

    // Redis dies; n1 has not noticed yet when the backend triggers through it.
    redis.kill().await;
    let (status, body) = api.trigger(&["orders"], "placed", "2").await;
    assert_eq!(status, 503, "an event the other node never got must not be acknowledged: {body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("retry")), "{body}");
    far.assert_silent(Duration::from_millis(300)).await;

    // Redis is back: the retry goes through and reaches the other node.
    redis.restart().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = api.trigger(&["orders"], "placed", "2").await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "refused clearly while Redis is back but not yet rejoined");
        assert!(std::time::Instant::now() < deadline, "the cluster accepts events again after Redis returns");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(far.next().await["data"], "2");
}
