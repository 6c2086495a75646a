//! The scenarios. Each is bounded in count and time and returns a [`Report`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{is_ping, pong, Connected, Target};
use crate::report::Report;
use crate::stats::{Latency, Pids};

/// Opens the sockets of clients numbered `ids` (at most `concurrency` handshakes at once, each
/// with `recv_buffer` when given), each subscribed to the channel `channel_of(i)` when given.
/// Returns the sockets, each handshake's time and the failures.
pub(crate) async fn open_many(
    target: &Target,
    ids: std::ops::Range<usize>,
    concurrency: usize,
    recv_buffer: Option<u32>,
    channel_of: Option<&(dyn Fn(usize) -> String + Sync)>,
) -> (Vec<Connected>, Latency, u64) {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let n = ids.len();
    let mut tasks = Vec::with_capacity(n);
    for i in ids {
        let target = target.clone();
        let gate = gate.clone();
        let channel = channel_of.map(|f| f(i));
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let started = Instant::now();
            let mut c = target.connect(i, recv_buffer).await.ok()?;
            let took = started.elapsed();
            if let Some(ch) = channel {
                target.subscribe(&mut c, &ch, None).await.ok()?;
            }
            Some((c, took))
        }));
    }
    let (mut sockets, mut latency, mut errors) = (Vec::with_capacity(n), Latency::default(), 0);
    for t in tasks {
        match t.await.ok().flatten() {
            Some((c, took)) => {
                latency.record_us(took.as_micros() as u64);
                sockets.push(c);
            }
            None => errors += 1,
        }
    }
    (sockets, latency, errors)
}

/// `connect`: a storm of `n` connections, `concurrency` handshakes at a time.
pub async fn connect(target: &Target, n: usize, concurrency: usize) -> Report {
    let started = Instant::now();
    let (sockets, latency, errors) = open_many(target, 0..n, concurrency, None, None).await;
    let secs = started.elapsed().as_secs_f64();
    let mut r = Report::new("connect");
    r.add("connections", sockets.len() as u64)
        .add("errors", errors)
        .add("seconds", secs)
        .add("connections_per_second", sockets.len() as f64 / secs)
        .add("handshake_p50_ms", latency.quantile_ms(0.5))
        .add("handshake_p99_ms", latency.quantile_ms(0.99));
    r
}

/// `idle`: `n` subscribed sockets held open; the server's RSS before and after.
pub async fn idle(target: &Target, n: usize, concurrency: usize, server: &Pids) -> Report {
    let before = server.rss().unwrap_or(0);
    let channel = |i: usize| format!("idle-{}", i % 100);
    let (sockets, _, errors) = open_many(target, 0..n, concurrency, None, Some(&channel)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss().unwrap_or(0);
    let per = after.saturating_sub(before) as f64 / sockets.len().max(1) as f64;
    let mut r = Report::new("idle");
    r.add("connections", sockets.len() as u64)
        .add("errors", errors)
        .add("server_rss_before_bytes", before)
        .add("server_rss_after_bytes", after)
        .add("bytes_per_idle_connection", per);
    r
}

/// `presence`: `n` members join one presence channel (`concurrency` at a time); every member
/// counts the `member_added` frames it receives, until all N(N-1)/2 have arrived or `wait` has
/// passed since the joins ended.
pub async fn presence(
    target: &Target,
    n: usize,
    concurrency: usize,
    server: &Pids,
    wait: Duration,
) -> Report {
    // Each member connects when its turn to join comes: a socket opened minutes before its join
    // (a 10k storm takes minutes) would meet the server's activity timeout unread.
    let added = Arc::new(AtomicU64::new(0));
    let connect_errors = Arc::new(AtomicU64::new(0));
    let cpu_before = server.cpu();
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        let (target, added, gate, connect_errors) =
            (target.clone(), added.clone(), gate.clone(), connect_errors.clone());
        members.push(tokio::spawn(async move {
            let member = format!("{{\"user_id\":\"u{i}\",\"user_info\":{{\"n\":{i}}}}}");
            let mut c = {
                let _permit = gate.acquire().await.ok()?;
                let Ok(mut c) = target.connect(i, None).await else {
                    connect_errors.fetch_add(1, Ordering::Relaxed);
                    return None;
                };
                target.subscribe(&mut c, "presence-bench", Some(&member)).await.ok()?;
                c
            };
            Some(tokio::spawn(async move {
                while let Some(Ok(msg)) = c.ws.next().await {
                    if let Message::Text(t) = msg {
                        if t.contains("pusher_internal:member_added") {
                            added.fetch_add(1, Ordering::Relaxed);
                        } else if is_ping(&t) && c.ws.send(pong()).await.is_err() {
                            break;
                        }
                    }
                }
            }))
        }));
    }
    let mut readers = Vec::new();
    let mut join_errors = 0u64;
    for m in members {
        match m.await.ok().flatten() {
            Some(reader) => readers.push(reader),
            None => join_errors += 1,
        }
    }
    let joined_secs = started.elapsed().as_secs_f64();
    let joined = readers.len() as u64;
    let expected = joined * joined.saturating_sub(1) / 2;
    let until = Instant::now() + wait;
    while added.load(Ordering::Relaxed) < expected && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total_secs = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, server.cpu()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    readers.iter().for_each(|r| r.abort());
    let mut r = Report::new("presence");
    r.add("members", joined)
        .add("connect_errors", connect_errors.load(Ordering::Relaxed))
        .add("join_errors", join_errors)
        .add("join_seconds", joined_secs)
        .add("member_added_expected", expected)
        .add("member_added_received", added.load(Ordering::Relaxed))
        .add("seconds_until_all_delivered", total_secs);
    if let Some(cpu) = cpu {
        r.add("server_cpu_seconds", cpu);
        r.add("server_cpu_us_per_member_added", cpu * 1e6 / (added.load(Ordering::Relaxed).max(1) as f64));
    }
    r
}
