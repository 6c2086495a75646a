//! What the generator needs of a Pusher server: open sockets, subscribe (with channel auth
//! computed from the app secret), and publish through the signed HTTP API.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use herald_server::signing;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Loopback source addresses clients are spread over.
pub const SOURCES: u8 = 8;

/// The source address of client number `i`: 127.0.0.2 .. 127.0.0.(SOURCES+1).
pub fn source_address(i: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % usize::from(SOURCES)) as u8)
}

/// A client socket's read buffer: room for dozens of small frames per read, little to zero.
pub const READ_BUFFER: usize = 16 * 1024;

/// The server under test and the app's credentials.
#[derive(Debug, Clone)]
pub struct Target {
    /// WebSocket + HTTP API addresses; clients are spread over them (several nodes).
    pub nodes: Vec<SocketAddr>,
    /// App id.
    pub app_id: String,
    /// App key.
    pub key: String,
    /// App secret (for channel auth and API signatures).
    pub secret: String,
    /// Each client socket's WebSocket read buffer (tungstenite's default is 128 KiB, which it
    /// allocates per socket and zero-fills before every read: 128 KiB of `memset` per frame
    /// made the generator, not the server, the bound of a fan-out ramp; see [`READ_BUFFER`]).
    pub read_buffer: usize,
}

/// An open socket.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A connected socket with its id.
pub struct Connected {
    /// The stream.
    pub ws: Socket,
    /// The server-assigned socket id.
    pub socket_id: String,
    /// The client number it was opened as (which decides its node and source address).
    pub id: usize,
}

impl Target {
    /// The node for client number `i`.
    pub fn node(&self, i: usize) -> SocketAddr {
        self.nodes[i % self.nodes.len()]
    }

    /// Opens client number `i`'s socket and waits for `connection_established`. Clients of a
    /// loopback server are spread over [`SOURCES`] source addresses (127.0.0.2, .3, ...) so that
    /// no one address runs out of ephemeral ports; `recv_buffer` shrinks the socket's receive
    /// buffer (a stalled reader then fills it sooner).
    pub async fn connect(&self, i: usize, recv_buffer: Option<u32>) -> anyhow::Result<Connected> {
        let addr = self.node(i);
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        if addr.ip().is_loopback() && addr.is_ipv4() {
            port_at_connect(&socket);
            socket.bind(SocketAddr::new(source_address(i).into(), 0))?;
        }
        let stream = socket.connect(addr).await.with_context(|| format!("TCP connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let url = format!("ws://{addr}/app/{}?protocol=7&client=herald-bench&version=0.1", self.key);
        let config = Some(WebSocketConfig::default().read_buffer_size(self.read_buffer));
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(url, MaybeTlsStream::Plain(stream), config)
                .await
                .context("WebSocket handshake")?;
        while let Some(msg) = ws.next().await {
            if let Message::Text(t) = msg? {
                let v: serde_json::Value = serde_json::from_str(&t)?;
                if v["event"] == "pusher:connection_established" {
                    let data: serde_json::Value = serde_json::from_str(v["data"].as_str().unwrap_or("{}"))?;
                    let socket_id = data["socket_id"].as_str().unwrap_or_default().to_owned();
                    return Ok(Connected { ws, socket_id, id: i });
                }
                bail!("expected connection_established, got {t}");
            }
        }
        bail!("closed before connection_established")
    }

    /// Subscribes and waits for the answer; `member` is the presence `channel_data`.
    pub async fn subscribe(
        &self,
        c: &mut Connected,
        channel: &str,
        member: Option<&str>,
    ) -> anyhow::Result<()> {
        let needs_auth = channel.starts_with("private-") || channel.starts_with("presence-");
        let auth = if needs_auth {
            signing::token(&self.key, &self.secret, &signing::channel_string(&c.socket_id, channel, member))
        } else {
            String::new()
        };
        let mut data = serde_json::json!({ "channel": channel, "auth": auth });
        if let Some(m) = member {
            data["channel_data"] = m.into();
        }
        let frame = serde_json::json!({ "event": "pusher:subscribe", "data": data });
        c.ws.send(Message::Text(frame.to_string().into())).await?;
        while let Some(msg) = c.ws.next().await {
            if let Message::Text(t) = msg? {
                if t.contains("pusher_internal:subscription_succeeded") {
                    return Ok(());
                }
                if t.contains("subscription_error") || t.contains("pusher:error") {
                    bail!("subscription refused: {t}");
                }
            }
        }
        bail!("closed while subscribing")
    }
}

/// Lets the kernel choose a bound socket's port at `connect`, for the whole 4-tuple
/// (`IP_BIND_ADDRESS_NO_PORT`), rather than at `bind`, where it must find a port free for every
/// destination: with tens of thousands of sockets per source address plus an earlier run's
/// TIME_WAIT ones, that search cut the connect rate by two thirds. Best effort: without it the
/// bind still works.
fn port_at_connect(socket: &TcpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: a valid socket descriptor, an int option and its size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                std::ptr::from_ref(&one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Whether a frame is the server's `pusher:ping` (a client must answer with `pusher:pong` or be
/// disconnected once the activity timeout passes — long runs would otherwise lose clients).
pub fn is_ping(frame: &str) -> bool {
    frame.len() < 100 && frame.contains("\"pusher:ping\"")
}

/// The `pusher:pong` answer.
pub fn pong() -> Message {
    Message::Text(r#"{"event":"pusher:pong","data":{}}"#.into())
}

/// Publishes through the signed HTTP API over one keep-alive client.
#[derive(Clone)]
pub struct Publisher {
    http: reqwest::Client,
    target: Target,
}

impl Publisher {
    /// A publisher for the target's first node.
    pub fn new(target: &Target) -> Self {
        Publisher { http: reqwest::Client::new(), target: target.clone() }
    }

    /// `POST /apps/{id}/events`; returns the round-trip time.
    pub async fn trigger(
        &self,
        channel: &str,
        name: &str,
        data: &str,
    ) -> anyhow::Result<std::time::Duration> {
        let body = serde_json::json!({ "name": name, "channel": channel, "data": data });
        self.post("events", body.to_string()).await
    }

    /// `POST /apps/{id}/batch_events`, one event per channel; returns the round-trip time.
    pub async fn trigger_batch(
        &self,
        channels: &[String],
        name: &str,
        data: &str,
    ) -> anyhow::Result<std::time::Duration> {
        let batch: Vec<_> = channels
            .iter()
            .map(|channel| serde_json::json!({ "name": name, "channel": channel, "data": data }))
            .collect();
        self.post("batch_events", serde_json::json!({ "batch": batch }).to_string()).await
    }

    /// A signed POST of `body` to `/apps/{id}/{resource}`.
    async fn post(&self, resource: &str, body: String) -> anyhow::Result<std::time::Duration> {
        let t = &self.target;
        let path = format!("/apps/{}/{resource}", t.app_id);
        let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let mut params = vec![
            ("auth_key".to_owned(), t.key.clone()),
            ("auth_timestamp".to_owned(), timestamp.to_string()),
            ("auth_version".to_owned(), "1.0".to_owned()),
            ("body_md5".to_owned(), signing::body_md5(body.as_bytes())),
        ];
        let signature = signing::sign(&t.secret, signing::api_string("POST", &path, &params).as_bytes());
        params.push(("auth_signature".to_owned(), signature));
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let started = Instant::now();
        let response = self
            .http
            .post(format!("http://{}{path}?{}", t.nodes[0], query.join("&")))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("{resource} answered {}: {}", response.status(), response.text().await.unwrap_or_default());
        }
        Ok(started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_ping_is_recognised_and_events_are_not() {
        assert!(is_ping(&herald_server::protocol::frames::ping()));
        assert!(is_ping(r#"{"event":"pusher:ping","data":"{}"}"#));
        assert!(!is_ping(r#"{"event":"pusher:pong","data":"{}"}"#));
        assert!(!is_ping(r#"{"event":"bench","channel":"c","data":"{\"pusher:ping\":1}"}"#));
    }
}
