//! `scale`: more subscribed sockets than one process may open (20,000 files here), held by
//! several generator processes (`herald-bench hold`, started by this one with the same target),
//! then a fixed-rate fan-out to all of them. Reports the connect rate, the server's RSS per
//! socket idle and under traffic, deliveries/s, publish→deliver latency and lost / duplicated
//! deliveries over every process.
//!
//! Socket `i` (numbered over all processes) goes to node `i % nodes`, from source address
//! `i % 8`, subscribed to channel `scale-{i % channels}`: every channel has subscribers on every
//! node. Messages go round-robin over the channels through the first node's HTTP API.
//!
//! A holder speaks one line at a time on stdout: the connect result once its sockets are
//! subscribed, then, asked `report N` on stdin, the tally of messages `0..N` and its latency
//! histogram as (µs, count) pairs. It exits when stdin closes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::watch;

use crate::client::{Publisher, Target};
use crate::fanout::{publish, spawn_readers};
use crate::report::Report;
use crate::scenarios::open_many;
use crate::stats::{Latencies, Latency, Pids, Tally, TallySummary};

/// Options of the `scale` scenario.
#[derive(Debug, Clone)]
pub struct Scale {
    /// Subscribed sockets over all generator processes.
    pub sockets: usize,
    /// Generator processes holding them.
    pub processes: usize,
    /// Channels the sockets are spread over.
    pub channels: usize,
    /// Messages per second over all channels.
    pub rate: u32,
    /// How long to publish.
    pub duration: Duration,
    /// Handshakes in flight at once over all processes.
    pub concurrency: usize,
    /// The servers' pids (nodes and Redis): RSS and CPU are summed.
    pub server: Pids,
    /// Wait between the last socket subscribed and the first message.
    pub settle: Duration,
}

/// One holder's share: sockets `first..first + count`.
#[derive(Debug, Clone)]
pub struct Hold {
    /// Its first socket's number.
    pub first: usize,
    /// Sockets it holds.
    pub count: usize,
    /// Channels over all processes.
    pub channels: usize,
    /// Messages the publisher will send (the tally's size).
    pub messages: usize,
    /// Handshakes in flight at once in this process.
    pub concurrency: usize,
}

fn channel(i: usize, channels: usize) -> String {
    format!("scale-{}", i % channels.max(1))
}

/// A holder's side: opens and subscribes its sockets, says so, reads deliveries until asked
/// for its report.
pub async fn hold(target: &Target, h: &Hold) -> anyhow::Result<()> {
    let channels = h.channels.max(1);
    let started = Instant::now();
    let of = move |i: usize| channel(i, channels);
    let (sockets, handshakes, errors) =
        open_many(target, h.first..h.first + h.count, h.concurrency, None, Some(&of)).await;
    let mut due = vec![0u32; channels];
    for c in &sockets {
        due[c.id % channels] += 1;
    }
    let connected = json!({
        "connected": sockets.len(),
        "errors": errors,
        "seconds": started.elapsed().as_secs_f64(),
        "handshake_p99_ms": handshakes.quantile_ms(0.99),
    });
    println!("{connected}");
    let tally = Arc::new(Tally::by_channel(h.messages, due));
    // One histogram per node the sockets are on (socket `i` is on node `i % nodes`).
    let latencies = Arc::new(Latencies::new(target.nodes.len()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks = spawn_readers(sockets, &tally, &latencies, &stop_rx);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let Some(published) = line.strip_prefix("report ").and_then(|n| n.trim().parse::<usize>().ok())
        else {
            continue;
        };
        let published = published.min(h.messages);
        let drain_until = Instant::now() + Duration::from_secs(5);
        while tally.summary(published).lost > 0 && Instant::now() < drain_until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let s = tally.summary(published);
        let by_node: Vec<Vec<(u64, u64)>> = latencies.take().iter().map(Latency::recorded).collect();
        let report = json!({
            "delivered": s.delivered,
            "lost": s.lost,
            "duplicated": s.duplicated,
            "latency_by_node": by_node,
        });
        println!("{report}");
        break;
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// A running holder.
struct Holder {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Holder {
    async fn next(&mut self, what: &str) -> anyhow::Result<Value> {
        let line = self.lines.next_line().await?.with_context(|| format!("a holder exited before {what}"))?;
        serde_json::from_str(&line).with_context(|| format!("a holder's {what}: {line}"))
    }
}

fn spawn_holder(target: &Target, h: &Hold) -> anyhow::Result<Holder> {
    let mut cmd = Command::new(std::env::current_exe()?);
    for node in &target.nodes {
        cmd.arg("--target").arg(node.to_string());
    }
    cmd.args(["--app-id", &target.app_id, "--key", &target.key, "--secret", &target.secret])
        .args(["--concurrency", &h.concurrency.to_string(), "hold"])
        .args(["--first", &h.first.to_string(), "--count", &h.count.to_string()])
        .args(["--channels", &h.channels.to_string(), "--messages", &h.messages.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("starting a holder process")?;
    let stdin = child.stdin.take().context("a holder's stdin")?;
    let stdout = child.stdout.take().context("a holder's stdout")?;
    Ok(Holder { child, stdin, lines: BufReader::new(stdout).lines() })
}

/// The shares of `sockets` over `processes` holders: (first, count), as even as they go.
pub fn shares(sockets: usize, processes: usize) -> Vec<(usize, usize)> {
    let k = processes.max(1);
    let mut first = 0;
    (0..k)
        .map(|p| {
            let count = sockets / k + usize::from(p < sockets % k);
            let share = (first, count);
            first += count;
            share
        })
        .collect()
}

/// Runs the scenario.
pub async fn scale(target: &Target, o: &Scale) -> anyhow::Result<Report> {
    let channels = o.channels.max(1);
    let messages = (f64::from(o.rate) * o.duration.as_secs_f64()).ceil() as usize;
    let per_process = (o.concurrency / o.processes.max(1)).max(1);
    let rss_before = o.server.rss();
    let started = Instant::now();
    let mut holders = Vec::new();
    for (first, count) in shares(o.sockets, o.processes) {
        let hold = Hold { first, count, channels, messages, concurrency: per_process };
        holders.push(spawn_holder(target, &hold)?);
    }
    let (mut connected, mut connect_errors, mut handshake_p99) = (0, 0, 0.0f64);
    for h in &mut holders {
        let v = h.next("connecting").await?;
        connected += v["connected"].as_u64().unwrap_or(0);
        connect_errors += v["errors"].as_u64().unwrap_or(0);
        handshake_p99 = handshake_p99.max(v["handshake_p99_ms"].as_f64().unwrap_or(0.0));
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // The server settles (buffers shrink after the storm) before its idle RSS is read.
    tokio::time::sleep(o.settle).await;
    let rss_idle = o.server.rss();
    // The generator's processes: this one (the publisher) and the holders.
    let generator = Pids(
        std::iter::once(std::process::id()).chain(holders.iter().filter_map(|h| h.child.id())).collect(),
    );
    let (generator_before, traffic_started) = (generator.cpu(), Instant::now());
    let cpu_before = o.server.cpu_split();
    let publisher = Publisher::new(target);
    let names: Vec<String> = (0..channels).map(|c| channel(c, channels)).collect();
    let (publish_secs, publish_errors, api) = publish(&publisher, 0..messages, o.rate, &names, 0).await;
    let rss_traffic = o.server.rss();
    let server_share = match (cpu_before, o.server.cpu_split()) {
        (Some((u0, s0)), Some((u1, s1))) => Some((u1 - u0 + s1 - s0) / publish_secs.max(f64::EPSILON)),
        _ => None,
    };
    let generator_share = match (generator_before, generator.cpu()) {
        (Some(a), Some(b)) => Some((b - a) / traffic_started.elapsed().as_secs_f64().max(f64::EPSILON)),
        _ => None,
    };
    for h in &mut holders {
        h.stdin.write_all(format!("report {messages}\n").as_bytes()).await?;
    }
    let mut by_node: Vec<Latency> = target.nodes.iter().map(|_| Latency::default()).collect();
    let mut tally = TallySummary { delivered: 0, lost: 0, duplicated: 0 };
    for h in &mut holders {
        let v = h.next("reporting").await?;
        tally.delivered += v["delivered"].as_u64().unwrap_or(0);
        tally.lost += v["lost"].as_u64().unwrap_or(0);
        tally.duplicated += v["duplicated"].as_u64().unwrap_or(0);
        let nodes: Vec<Vec<(u64, u64)>> =
            serde_json::from_value(v["latency_by_node"].clone()).unwrap_or_default();
        for (all, pairs) in by_node.iter_mut().zip(&nodes) {
            all.merge(&Latency::from_recorded(pairs));
        }
    }
    let mut latency = Latency::default();
    for l in &by_node {
        latency.merge(l);
    }
    let cpu = match (cpu_before, o.server.cpu_split()) {
        (Some((u0, s0)), Some((u1, s1))) => Some((u1 - u0 + s1 - s0, s1 - s0)),
        _ => None,
    };
    drop(holders);

    let mut r = Report::new("scale");
    r.add("sockets", connected)
        .add("processes", o.processes.max(1) as u64)
        .add("nodes", target.nodes.len() as u64)
        .add("channels", channels as u64)
        .add("connect_errors", connect_errors)
        .add("connect_seconds", connect_secs)
        .add("connections_per_second", connected as f64 / connect_secs.max(f64::EPSILON))
        .add("handshake_p99_ms", handshake_p99);
    if let (Some(before), Some(idle)) = (rss_before, rss_idle) {
        r.add("server_rss_before_bytes", before)
            .add("server_rss_idle_bytes", idle)
            .add("rss_bytes_per_socket_idle", idle.saturating_sub(before) as f64 / connected.max(1) as f64);
        if let Some(traffic) = rss_traffic {
            r.add("server_rss_under_traffic_bytes", traffic).add(
                "rss_bytes_per_socket_under_traffic",
                traffic.saturating_sub(before) as f64 / connected.max(1) as f64,
            );
        }
    }
    r.add("messages_published", messages as u64)
        .add("publish_errors", publish_errors)
        .add("publish_seconds", publish_secs)
        .add("api_p50_ms", api.quantile_ms(0.5))
        .add("api_p99_ms", api.quantile_ms(0.99))
        .add("deliveries", tally.delivered)
        .add("deliveries_per_second", tally.delivered as f64 / publish_secs.max(f64::EPSILON))
        .add("lost", tally.lost)
        .add("duplicated", tally.duplicated)
        .add("latency_p50_ms", latency.quantile_ms(0.5))
        .add("latency_p99_ms", latency.quantile_ms(0.99))
        .add("latency_p999_ms", latency.quantile_ms(0.999));
    if by_node.len() > 1 {
        r.add("latency_p99_ms_by_node", by_node.iter().map(|l| l.quantile_ms(0.99)).collect::<Vec<_>>());
    }
    if let Some((cpu, system)) = cpu {
        r.add("server_cpu_seconds", cpu)
            .add("server_cpu_seconds_per_million_deliveries", cpu / (tally.delivered.max(1) as f64 / 1e6))
            .add("server_system_cpu_share", system / cpu.max(f64::EPSILON));
    }
    // Shares of one core while publishing: the servers have one core, the generator another.
    if let Some(share) = server_share {
        r.add("server_core_share", share);
    }
    if let Some(share) = generator_share {
        r.add("generator_core_share", share);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sockets_are_shared_evenly_and_each_once() {
        assert_eq!(shares(10, 3), vec![(0, 4), (4, 3), (7, 3)]);
        assert_eq!(shares(54_000, 4).iter().map(|s| s.1).sum::<usize>(), 54_000);
        assert_eq!(shares(5, 0), vec![(0, 5)]);
    }
}
