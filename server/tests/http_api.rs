//! The signed Pusher HTTP API over real HTTP: triggers, batches, queries, limits, and every
//! way a request can be refused.

use std::time::Duration;

use herald_testkit::*;
use serde_json::json;

#[tokio::test]
async fn trigger_excludes_the_given_socket_and_reports_info() {
    let s = start_default().await;
    let mut a = connect(s.addr).await;
    let mut b = connect(s.addr).await;
    a.join("presence-p", "a", json!({})).await;
    b.join("presence-p", "b", json!({})).await;
    a.next().await; // member_added for b
    let api = Api::new(s.addr);
    let (status, body) = api
        .post(
            &format!("/apps/{APP_ID}/events"),
            json!({"name":"e","data":"x","channels":["presence-p","other"],"socket_id":a.socket_id,"info":"user_count,subscription_count"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"channels":{"presence-p":{"user_count":2,"subscription_count":2},"other":{"subscription_count":0}}})
    );
    assert_eq!(b.next().await["event"], "e");
    a.assert_silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn batch_events_deliver_each_event_and_refuse_more_than_ten() {
    let s = start_default().await;
    let mut c = connect(s.addr).await;
    c.subscribe("a").await;
    c.subscribe("b").await;
    let api = Api::new(s.addr);
    let path = format!("/apps/{APP_ID}/batch_events");
    let (status, body) = api
        .post(&path, json!({"batch":[{"channel":"a","name":"one","data":"1"},{"channel":"b","name":"two","data":"2","info":"subscription_count"}]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"batch":[{},{"subscription_count":1}]}));
    assert_eq!(c.next().await["event"], "one");
    assert_eq!(c.next().await["event"], "two");
    let eleven: Vec<_> = (0..11).map(|i| json!({"channel":"a","name":"n","data":i.to_string()})).collect();
    let (status, body) = api.post(&path, json!({ "batch": eleven })).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("1 to 10 events"));
    c.assert_silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn channel_queries_answer_occupancy_counts_and_prefix_filters() {
    let s = start_default().await;
    let mut c = connect(s.addr).await;
    c.subscribe("public-1").await;
    c.join("presence-q", "u1", json!({})).await;
    let api = Api::new(s.addr);
    let (status, all) = api.get(&format!("/apps/{APP_ID}/channels"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(all, json!({"channels":{"public-1":{},"presence-q":{}}}));
    let (_, presence) = api
        .get(
            &format!("/apps/{APP_ID}/channels"),
            &[("filter_by_prefix", "presence-"), ("info", "user_count")],
        )
        .await;
    assert_eq!(presence, json!({"channels":{"presence-q":{"user_count":1}}}));
    let (status, _) = api.get(&format!("/apps/{APP_ID}/channels"), &[("info", "user_count")]).await;
    assert_eq!(status, 400, "user_count needs a presence prefix");
    let (_, one) =
        api.get(&format!("/apps/{APP_ID}/channels/public-1"), &[("info", "subscription_count")]).await;
    assert_eq!(one, json!({"occupied":true,"subscription_count":1}));
    let (_, empty) = api.get(&format!("/apps/{APP_ID}/channels/nobody-here"), &[]).await;
    assert_eq!(empty, json!({"occupied":false}));
    let (status, _) = api.get(&format!("/apps/{APP_ID}/channels/public-1"), &[("info", "user_count")]).await;
    assert_eq!(status, 400);
    let (status, _) = api.get(&format!("/apps/{APP_ID}/channels/public-1/users"), &[]).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn pusher_limits_are_enforced_with_the_documented_statuses() {
    let s = start_default().await;
    let api = Api::new(s.addr);
    let path = format!("/apps/{APP_ID}/events");
    let big = "x".repeat(10 * 1024 + 1);
    let (status, body) = api.trigger(&["a"], "e", &big).await;
    assert_eq!(status, 413, "{body}");
    let (status, _) = api.trigger(&["a"], "e", &"x".repeat(10 * 1024)).await;
    assert_eq!(status, 200, "exactly 10 KB is allowed");
    let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(api.trigger(&refs, "e", "d").await.0, 400);
    assert_eq!(api.trigger(&refs[..100], "e", "d").await.0, 200);
    assert_eq!(api.trigger(&["a"], &"n".repeat(201), "d").await.0, 400);
    assert_eq!(api.trigger(&["bad channel"], "e", "d").await.0, 400);
    assert_eq!(api.trigger(&[], "e", "d").await.0, 400);
    let (status, body) =
        api.post(&path, json!({"name":"e","data":"d","channel":"a","socket_id":"abc"})).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("socket_id"));
    let (status, body) = api.post(&path, json!({"data":"d","channel":"a"})).await;
    assert_eq!((status, body["error"].as_str().unwrap()), (400, "Missing name in the request body"));
    let (status, _) =
        api.send_post(&path, &signed_query("POST", &path, &[], "{nope", now(), SECRET), "{nope".into()).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn bad_signatures_old_timestamps_and_tampered_bodies_are_refused_and_deliver_nothing() {
    let s = start_default().await;
    let mut c = connect(s.addr).await;
    c.subscribe("a").await;
    let api = Api::new(s.addr);
    let path = format!("/apps/{APP_ID}/events");
    let body = json!({"name":"e","data":"d","channel":"a"}).to_string();

    let (status, err) = api.post_raw(&path, &body, now(), "not-the-secret").await;
    assert_eq!(status, 401);
    assert!(err["error"].as_str().unwrap().contains("Invalid signature"));
    let (status, err) = api.post_raw(&path, &body, now() - 601, SECRET).await;
    assert_eq!(status, 401);
    assert!(err["error"].as_str().unwrap().contains("Timestamp expired"));
    let (status, _) = api.post_raw(&path, &body, now() + 601, SECRET).await;
    assert_eq!(status, 401);
    let q = signed_query("POST", &path, &[], &body, now(), SECRET);
    let (status, err) = api.send_post(&path, &q, body.replace("\"d\"", "\"D\"")).await;
    assert_eq!(status, 401);
    assert!(err["error"].as_str().unwrap().contains("body_md5"));
    let unsigned = api.http.post(format!("http://{}{path}", s.addr)).body(body.clone()).send().await.unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    let wrong_key = q.replace(&format!("auth_key={KEY}"), "auth_key=other");
    assert_eq!(api.send_post(&path, &wrong_key, body.clone()).await.0, 401);
    let (status, _) = api.post_raw("/apps/999/events", &body, now(), SECRET).await;
    assert_eq!(status, 404);
    c.assert_silent(Duration::from_millis(200)).await;
    // Valid requests still work afterwards.
    assert_eq!(api.post_raw(&path, &body, now(), SECRET).await.0, 200);
    assert_eq!(c.next().await["event"], "e");
}

#[tokio::test]
async fn bodies_over_the_request_limit_get_413() {
    let mut config = herald_server::Config::for_tests();
    config.settings.max_request_size = 1024;
    let s = start_server(config).await;
    let body = json!({"name":"e","data":"x".repeat(2000),"channel":"a"}).to_string();
    let (status, err) =
        Api::new(s.addr).post_raw(&format!("/apps/{APP_ID}/events"), &body, now(), SECRET).await;
    assert_eq!(status, 413);
    assert!(err["error"].as_str().unwrap().contains("1024"));
}

#[tokio::test]
async fn unknown_routes_get_a_json_404() {
    let s = start_default().await;
    let r = reqwest::get(format!("http://{}/nothing/here", s.addr)).await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.text().await.unwrap(), r#"{"error":"Not found"}"#);
}

#[tokio::test]
async fn health_readiness_and_metrics_are_on_the_operations_port() {
    let s = start_default().await;
    let mut c = connect(s.addr).await;
    c.subscribe("m").await;
    Api::new(s.addr).trigger(&["m"], "e", "d").await;
    c.next().await;
    let ok = reqwest::get(format!("http://{}/healthz", s.ops)).await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let ready = reqwest::get(format!("http://{}/readyz", s.ops)).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let text = reqwest::get(format!("http://{}/metrics", s.ops)).await.unwrap().text().await.unwrap();
    for needle in [
        "herald_connected{app_id=\"1\"} 1",
        "herald_channels{app_id=\"1\"} 1",
        "herald_new_connections_total{app_id=\"1\"} 1",
        "herald_api_events_total{app_id=\"1\"} 1",
        "herald_http_calls_total{status=\"200\"} 1",
        "herald_ws_messages_sent_total{app_id=\"1\"}",
        "herald_ws_received_bytes_total{app_id=\"1\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    // The public port does not serve metrics.
    let public = reqwest::get(format!("http://{}/metrics", s.addr)).await.unwrap();
    assert_eq!(public.status().as_u16(), 404);
}

/// A server being replaced (a rolling update: its pod is already out of the Service) still gets
/// requests on the keep-alive connections clients hold to it. Each such request is answered —
/// with `Connection: close`, so the client opens its next connection elsewhere — and none is cut
/// off unanswered by the drain closing a connection the client was just sending on.
#[tokio::test]
async fn a_drain_answers_every_request_on_a_kept_alive_connection() {
    let s = start_default().await;
    let clients: Vec<_> = (0..20).map(|_| tokio::spawn(ask_until_told_to_close(s.addr))).collect();
    // A connection asked nothing more is closed idle soon after: it does not hold the exit up.
    let mut idle = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.shutdown.cancel();
    for client in clients {
        let answered = tokio::time::timeout(WAIT, client).await.expect("the drain ended the connection");
        let answered = answered.expect("client task").unwrap_or_else(|lost| panic!("{lost}"));
        assert!(answered > 0, "requests were answered before the drain");
    }
    tokio::time::timeout(WAIT, s.task).await.expect("server stops").unwrap().unwrap();
    let mut rest = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut idle, &mut rest);
    tokio::time::timeout(WAIT, read).await.expect("the idle connection was closed").ok();
    assert!(rest.is_empty(), "nothing was sent on the idle connection");
}

/// Signed `GET /channels` back to back on one connection until a response says
/// `Connection: close`: the number answered, or what happened to the one left unanswered.
async fn ask_until_told_to_close(addr: std::net::SocketAddr) -> Result<usize, String> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut stream = BufReader::new(stream);
    let path = format!("/apps/{APP_ID}/channels");
    for answered in 0.. {
        let query = signed_query("GET", &path, &[], "", now(), SECRET);
        let request = format!("GET {path}?{query} HTTP/1.1\r\nhost: herald\r\n\r\n");
        let unanswered = |e: String| format!("request {} sent, no answer: {e}", answered + 1);
        stream.get_mut().write_all(request.as_bytes()).await.map_err(|e| unanswered(e.to_string()))?;
        let (mut status, mut length, mut close) = (String::new(), 0, false);
        stream.read_line(&mut status).await.map_err(|e| unanswered(e.to_string()))?;
        if !status.starts_with("HTTP/1.1 200") {
            return Err(unanswered(format!("status line {status:?}")));
        }
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).await.map_err(|e| unanswered(e.to_string()))?;
            let line = line.trim_end().to_ascii_lowercase();
            if line.is_empty() {
                break;
            }
            if let Some(n) = line.strip_prefix("content-length:") {
                length = n.trim().parse().map_err(|_| unanswered(line.clone()))?;
            }
            close |= line == "connection: close";
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.map_err(|e| unanswered(e.to_string()))?;
        if close {
            return Ok(answered + 1);
        }
    }
    unreachable!("the loop returns")
}
