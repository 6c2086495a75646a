//! The baseline: the least work a Pusher fan-out can do on this machine. It accepts sockets,
//! answers the handshake, acknowledges subscriptions, and on a trigger serializes the frame once
//! and queues it for every subscriber. No auth, no signatures, no presence, no limits: the floor
//! Herald is measured against.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::SinkExt;
use tokio::sync::mpsc;

type Subscribers = Arc<Mutex<HashMap<String, Vec<mpsc::Sender<Utf8Bytes>>>>>;

/// Serves the baseline on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let subscribers: Subscribers = Arc::default();
    let app = Router::new()
        .route("/app/{key}", get(upgrade))
        .route("/apps/{id}/events", post(trigger))
        .route("/apps/{id}/batch_events", post(trigger_batch))
        .with_state(subscribers);
    axum::serve(listener, app).await
}

/// Binds `addr` and serves.
pub async fn run(addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("herald-baseline listening on ws://{}", listener.local_addr()?);
    serve(listener).await
}

async fn upgrade(State(subs): State<Subscribers>, ws: WebSocketUpgrade) -> Response {
    ws.read_buffer_size(4096).write_buffer_size(0).on_upgrade(move |socket| connection(socket, subs))
}

async fn connection(mut socket: WebSocket, subs: Subscribers) {
    let hello = "{\"event\":\"pusher:connection_established\",\"data\":\"{\\\"socket_id\\\":\\\"1.1\\\",\\\"activity_timeout\\\":120}\"}";
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(1024);
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(t))) => {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) else { continue };
                    if v["event"] == "pusher:subscribe" {
                        let channel = v["data"]["channel"].as_str().unwrap_or_default().to_owned();
                        let ok = format!("{{\"event\":\"pusher_internal:subscription_succeeded\",\"channel\":{},\"data\":\"{{}}\"}}", serde_json::Value::from(channel.clone()));
                        if let Ok(mut map) = subs.lock() {
                            map.entry(channel).or_default().push(tx.clone());
                        }
                        if socket.send(Message::Text(ok.into())).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            Some(frame) = rx.recv() => {
                if socket.feed(Message::Text(frame)).await.is_err() {
                    return;
                }
                while let Ok(more) = rx.try_recv() {
                    if socket.feed(Message::Text(more)).await.is_err() {
                        return;
                    }
                }
                if socket.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn trigger(
    State(subs): State<Subscribers>,
    Json(body): Json<serde_json::Value>,
) -> Json<serde_json::Value> {
    deliver(&subs, &body);
    Json(serde_json::json!({}))
}

async fn trigger_batch(
    State(subs): State<Subscribers>,
    Json(body): Json<serde_json::Value>,
) -> Json<serde_json::Value> {
    for event in body["batch"].as_array().into_iter().flatten() {
        deliver(&subs, event);
    }
    Json(serde_json::json!({ "batch": [] }))
}

/// Sends one event to its channel's subscribers.
fn deliver(subs: &Subscribers, event: &serde_json::Value) {
    let channel = event["channel"].as_str().unwrap_or_default();
    let frame =
        serde_json::json!({ "event": event["name"], "channel": channel, "data": event["data"] }).to_string();
    let frame = Utf8Bytes::from(frame);
    if let Ok(mut map) = subs.lock() {
        if let Some(list) = map.get_mut(channel) {
            list.retain(|tx| {
                !matches!(tx.try_send(frame.clone()), Err(mpsc::error::TrySendError::Closed(_)))
            });
        }
    }
}
