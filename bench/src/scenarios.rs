//! The scenarios. Each is bounded in count and time and returns a [`Report`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Connected, Publisher, Target};
use crate::report::Report;
use crate::stats::{cpu_seconds, now_us, parse_delivery, payload, rss_bytes, Latency, Tally};

/// Opens `n` sockets (at most `concurrency` handshakes at once), each subscribed to the channel
/// `channel_of(i)` when given. Returns the sockets and each handshake's time.
async fn open_many(
    target: &Target,
    n: usize,
    concurrency: usize,
    channel_of: Option<&(dyn Fn(usize) -> String + Sync)>,
) -> (Vec<Connected>, Latency, u64) {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let target = target.clone();
        let gate = gate.clone();
        let channel = channel_of.map(|f| f(i));
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let started = Instant::now();
            let mut c = target.connect(target.node(i)).await.ok()?;
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
    let (sockets, latency, errors) = open_many(target, n, concurrency, None).await;
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
pub async fn idle(target: &Target, n: usize, concurrency: usize, server_pid: u32) -> Report {
    let before = rss_bytes(server_pid).unwrap_or(0);
    let channel = |i: usize| format!("idle-{}", i % 100);
    let (sockets, _, errors) = open_many(target, n, concurrency, Some(&channel)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_bytes(server_pid).unwrap_or(0);
    let per = after.saturating_sub(before) as f64 / sockets.len().max(1) as f64;
    let mut r = Report::new("idle");
    r.add("connections", sockets.len() as u64)
        .add("errors", errors)
        .add("server_rss_before_bytes", before)
        .add("server_rss_after_bytes", after)
        .add("bytes_per_idle_connection", per);
    r
}

/// Options of the `fanout` scenario.
#[derive(Debug, Clone)]
pub struct Fanout {
    /// Channels.
    pub channels: usize,
    /// Subscribers of each channel.
    pub subscribers: usize,
    /// Messages per second, over all channels.
    pub rate: u32,
    /// How long to publish.
    pub duration: Duration,
    /// Handshakes at once while connecting.
    pub concurrency: usize,
    /// The server's pid, for its CPU time.
    pub server_pid: Option<u32>,
}

/// `fanout`: publishes at a fixed rate through the signed API; every subscriber records
/// publish→deliver latency; lost and duplicated deliveries are counted.
pub async fn fanout(target: &Target, o: &Fanout) -> Report {
    let per = o.subscribers.max(1);
    let channel = move |i: usize| format!("bench-{}", i / per);
    let (sockets, _, connect_errors) =
        open_many(target, o.channels * per, o.concurrency, Some(&channel)).await;
    let total = (f64::from(o.rate) * o.duration.as_secs_f64()).ceil() as usize;
    let tally = Arc::new(Tally::new(total, per as u32));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut readers = Vec::with_capacity(sockets.len());
    for mut c in sockets {
        let tally = tally.clone();
        let mut stop = stop_rx.clone();
        readers.push(tokio::spawn(async move {
            let mut latency = Latency::default();
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    msg = c.ws.next() => match msg {
                        Some(Ok(Message::Text(t))) => {
                            if let Some((seq, sent)) = parse_delivery(&t) {
                                latency.record_us(now_us().saturating_sub(sent));
                                tally.record(seq);
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                }
            }
            latency
        }));
    }
    let cpu_before = o.server_pid.and_then(cpu_seconds);
    let publisher = Publisher::new(target);
    let in_flight = Arc::new(Semaphore::new(256));
    let publish_errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(o.rate.max(1)));
    for seq in 0..total {
        tokio::time::sleep_until((started + interval * seq as u32).into()).await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
        let (publisher, errors) = (publisher.clone(), publish_errors.clone());
        let ch = format!("bench-{}", seq % o.channels.max(1));
        tokio::spawn(async move {
            if publisher.trigger(&ch, "bench", &payload(seq as u64, now_us())).await.is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    let _ = in_flight.acquire_many(256).await;
    let publish_secs = started.elapsed().as_secs_f64();
    let expected = (total * per) as u64;
    let drain_until = Instant::now() + Duration::from_secs(5);
    while tally.summary(total).delivered < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = match (cpu_before, o.server_pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let _ = stop_tx.send(true);
    let mut latency = Latency::default();
    for r in readers {
        if let Ok(l) = r.await {
            latency.merge(&l);
        }
    }
    let s = tally.summary(total);
    let mut r = Report::new("fanout");
    r.add("channels", o.channels as u64)
        .add("subscribers_per_channel", per as u64)
        .add("connect_errors", connect_errors)
        .add("messages_published", total as u64)
        .add("publish_errors", publish_errors.load(Ordering::Relaxed))
        .add("publish_seconds", publish_secs)
        .add("deliveries", s.delivered)
        .add("deliveries_per_second", s.delivered as f64 / publish_secs)
        .add("lost", s.lost)
        .add("duplicated", s.duplicated)
        .add("latency_p50_ms", latency.quantile_ms(0.5))
        .add("latency_p99_ms", latency.quantile_ms(0.99))
        .add("latency_p999_ms", latency.quantile_ms(0.999));
    if let Some(cpu) = cpu {
        r.add("server_cpu_seconds", cpu);
        r.add("server_cpu_seconds_per_million_deliveries", cpu / (s.delivered.max(1) as f64 / 1e6));
    }
    r
}

/// `presence`: `n` members join one presence channel (`concurrency` at a time); every member
/// counts the `member_added` frames it receives.
pub async fn presence(target: &Target, n: usize, concurrency: usize, server_pid: Option<u32>) -> Report {
    let (sockets, _, connect_errors) = open_many(target, n, concurrency, None).await;
    let added = Arc::new(AtomicU64::new(0));
    let cpu_before = server_pid.and_then(cpu_seconds);
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut members = Vec::with_capacity(sockets.len());
    for (i, mut c) in sockets.into_iter().enumerate() {
        let (target, added, gate) = (target.clone(), added.clone(), gate.clone());
        members.push(tokio::spawn(async move {
            let member = format!("{{\"user_id\":\"u{i}\",\"user_info\":{{\"n\":{i}}}}}");
            {
                let _permit = gate.acquire().await.ok()?;
                target.subscribe(&mut c, "presence-bench", Some(&member)).await.ok()?;
            }
            Some(tokio::spawn(async move {
                while let Some(Ok(msg)) = c.ws.next().await {
                    if let Message::Text(t) = msg {
                        if t.contains("pusher_internal:member_added") {
                            added.fetch_add(1, Ordering::Relaxed);
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
    let until = Instant::now() + Duration::from_secs(30);
    while added.load(Ordering::Relaxed) < expected && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total_secs = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, server_pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    readers.iter().for_each(|r| r.abort());
    let mut r = Report::new("presence");
    r.add("members", joined)
        .add("connect_errors", connect_errors)
        .add("join_errors", join_errors)
        .add("join_seconds", joined_secs)
        .add("member_added_expected", expected)
        .add("member_added_received", added.load(Ordering::Relaxed))
        .add("seconds_until_all_delivered", total_secs);
    if let Some(cpu) = cpu {
        r.add("server_cpu_seconds", cpu);
    }
    r
}
