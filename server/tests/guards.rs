//! Guards below HTTP: a slowloris client (headers trickled, or nothing sent) is cut off after
//! `handshake_timeout` — on a keep-alive connection, each later request head too — while
//! established WebSockets idle as long as they like; one IP address
//! gets at most `max_connections_per_ip` sockets while other addresses are unaffected; a header
//! flood is refused. A bystander keeps receiving events throughout.

use std::time::Duration;

use herald_server::Config;
use herald_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn config(handshake_secs: u64, per_ip: Option<usize>) -> Config {
    let mut config = Config::for_tests();
    config.settings.handshake_timeout = Duration::from_secs(handshake_secs);
    config.settings.max_connections_per_ip = per_ip;
    config
}

/// Reads until the server closes the connection; returns what it sent. Panics after 10 s.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closed the connection");
    out
}

/// Writes a request line and then headers one at a time, 400 ms apart, never finishing the head;
/// stops when the server has closed the connection.
async fn trickle(stream: &mut TcpStream, request_line: &str) {
    for line in [request_line, "Host: x\r\n", "X-A: 1\r\n", "X-B: 2\r\n", "X-C: 3\r\n"] {
        if stream.write_all(line.as_bytes()).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

async fn refused(s: &TestServer, reason: &str) -> u64 {
    let text =
        reqwest::get(format!("http://{}/metrics", s.ops)).await.expect("metrics").text().await.expect("text");
    text.lines()
        .find(|l| {
            l.starts_with("herald_refused_connections_total") && l.contains(&format!("reason=\"{reason}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn slowloris_and_silent_connections_are_cut_off_but_idle_websockets_stay() {
    let s = start_server(config(1, None)).await;
    let mut bystander = connect(s.addr).await;
    bystander.subscribe("news").await;

    // Headers trickled one line at a time, never finished.
    let mut slow = TcpStream::connect(s.addr).await.expect("connect");
    trickle(&mut slow, "GET /app/herald-dev-key?protocol=7 HTTP/1.1\r\n").await;
    until_closed(&mut slow).await;

    // A socket that sends nothing at all.
    let mut silent = TcpStream::connect(s.addr).await.expect("connect");
    until_closed(&mut silent).await;
    assert!(refused(&s, "handshake_timeout").await >= 2);

    // The bystander's WebSocket has idled past the deadline several times over: still served.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(Api::new(s.addr).trigger(&["news"], "tick", "1").await.0, 200);
    assert_eq!(bystander.next().await["event"], "tick");
}

#[tokio::test]
async fn keep_alive_requests_after_the_first_have_the_same_head_deadline() {
    let s = start_server(config(1, None)).await;
    let mut bystander = connect(s.addr).await;
    bystander.subscribe("news").await;
    let first = "GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n";

    // One complete request, then the next one's headers trickled and never finished.
    let mut slow = TcpStream::connect(s.addr).await.expect("connect");
    slow.write_all(first.as_bytes()).await.expect("first request");
    let mut answer = [0u8; 12];
    slow.read_exact(&mut answer).await.expect("first answer");
    assert_eq!(&answer, b"HTTP/1.1 404", "the first request is served");
    trickle(&mut slow, "GET /nothing-here HTTP/1.1\r\n").await;
    let rest = String::from_utf8_lossy(&until_closed(&mut slow).await).into_owned();
    assert_eq!(rest.matches("HTTP/1.1 ").count(), 0, "the trickled request got no answer: {rest}");

    // One complete request, then nothing: the idle keep-alive connection is closed too.
    let mut idle = TcpStream::connect(s.addr).await.expect("connect");
    idle.write_all(first.as_bytes()).await.expect("first request");
    let served = String::from_utf8_lossy(&until_closed(&mut idle).await).into_owned();
    assert!(served.starts_with("HTTP/1.1 404"), "{served}");

    // A well-behaved keep-alive client sending requests back to back is served throughout.
    let mut steady = TcpStream::connect(s.addr).await.expect("connect");
    for _ in 0..4 {
        steady.write_all(first.as_bytes()).await.expect("request");
        let mut answer = [0u8; 12];
        steady.read_exact(&mut answer).await.expect("answer");
        assert_eq!(&answer, b"HTTP/1.1 404");
        let mut drain = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(100), steady.read(&mut drain)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(Api::new(s.addr).trigger(&["news"], "tick", "1").await.0, 200);
    assert_eq!(bystander.next().await["event"], "tick");
}

#[tokio::test]
async fn one_address_gets_at_most_its_share_and_others_are_unaffected() {
    let s = start_server(config(10, Some(3))).await;
    let mut bystander = connect(s.addr).await; // 127.0.0.1: one of three
    bystander.subscribe("news").await;
    let a = connect(s.addr).await;
    let _b = connect(s.addr).await;
    // The fourth socket from 127.0.0.1 is closed before HTTP.
    let mut fourth = TcpStream::connect(s.addr).await.expect("TCP accepted by the kernel");
    let _ = fourth.write_all(b"GET /app/herald-dev-key?protocol=7 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(until_closed(&mut fourth).await.is_empty(), "no HTTP answer for a socket over the per-IP limit");
    assert_eq!(refused(&s, "per_ip_limit").await, 1);

    // Another address is not affected.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.2:0".parse().expect("addr")).expect("127.0.0.2 is loopback on Linux");
    let stream = socket.connect(s.addr).await.expect("connect from 127.0.0.2");
    let (mut other, _) =
        tokio_tungstenite::client_async(format!("ws://{}/app/{KEY}?protocol=7", s.addr), stream)
            .await
            .expect("WebSocket from another address");
    use futures_util::StreamExt;
    let first = tokio::time::timeout(Duration::from_secs(5), other.next())
        .await
        .expect("a frame")
        .expect("open")
        .expect("ok");
    assert!(first.to_text().expect("text").contains("pusher:connection_established"), "{first:?}");

    // Closing one frees a slot.
    drop(a);
    let mut again = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(Ok((ws, _))) = tokio::time::timeout(
            Duration::from_secs(1),
            tokio_tungstenite::connect_async(format!("ws://{}/app/{KEY}?protocol=7", s.addr)),
        )
        .await
        {
            again = Some(ws);
            break;
        }
    }
    assert!(again.is_some(), "a freed slot can be used again");
    // 127.0.0.1 is at its limit again; the backend calls from another address.
    let http = reqwest::Client::builder().local_address("127.0.0.2".parse().ok()).build().expect("client");
    let api = Api { addr: s.addr, http };
    assert_eq!(api.trigger(&["news"], "tick", "1").await.0, 200);
    assert_eq!(bystander.next().await["event"], "tick");
}

#[tokio::test]
async fn a_header_flood_is_refused() {
    let s = start_server(config(10, None)).await;
    let mut bystander = connect(s.addr).await;
    bystander.subscribe("news").await;
    let mut flood = TcpStream::connect(s.addr).await.expect("connect");
    let mut head = String::from("GET /app/herald-dev-key?protocol=7 HTTP/1.1\r\nHost: x\r\n");
    for i in 0..20_000 {
        head.push_str(&format!("X-Flood-{i}: {}\r\n", "a".repeat(40)));
    }
    head.push_str("\r\n");
    let _ = flood.write_all(head.as_bytes()).await;
    let answer = String::from_utf8_lossy(&until_closed(&mut flood).await).into_owned();
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "refused: {answer:.80}");
    assert_eq!(Api::new(s.addr).trigger(&["news"], "tick", "1").await.0, 200);
    assert_eq!(bystander.next().await["event"], "tick");
}

#[tokio::test]
async fn a_request_body_trickled_past_the_deadline_is_answered_408_and_cut() {
    let s = start_server(config(1, None)).await;
    let mut stream = TcpStream::connect(s.addr).await.expect("connect");
    // The signature is checked once the body is in; it never is.
    let query = signed_query("POST", &format!("/apps/{APP_ID}/events"), &[], "", now(), SECRET);
    let head = format!(
        "POST /apps/{APP_ID}/events?{query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let started = std::time::Instant::now();
    let answer = String::from_utf8_lossy(&until_closed(&mut stream).await).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("Request body not received within 1 s"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "cut at the deadline, not later");
}
