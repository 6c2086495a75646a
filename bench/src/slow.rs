//! `slow`: slow consumers under a busy publisher. Some subscribers stop reading while the
//! channel is busy; the server must disconnect them (4100) once their bounded queue fills, keep
//! its memory flat, and keep delivering everything to the subscribers that do read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Connected, Publisher, Target};
use crate::fanout::{publish, spawn_readers};
use crate::report::Report;
use crate::scenarios::open_many;
use crate::stats::{Pids, Tally};

/// The channel every subscriber of the scenario is on.
const CHANNEL: &str = "slow-bench";

/// Options of the `slow` scenario.
#[derive(Debug, Clone)]
pub struct Slow {
    /// Subscribers that stop reading after subscribing.
    pub stalled: usize,
    /// Subscribers that read everything.
    pub readers: usize,
    /// Messages per second.
    pub rate: u32,
    /// Bytes of event data per message.
    pub size: usize,
    /// How long to publish.
    pub duration: Duration,
    /// Handshakes at once while connecting.
    pub concurrency: usize,
    /// The server's pids, for its RSS.
    pub server: Pids,
    /// Fail when the server's RSS grows by more than this many MiB.
    pub max_growth_mib: f64,
}

/// What became of the stalled subscribers, and of the server's memory.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcome {
    /// Stalled subscribers.
    pub stalled: u64,
    /// Stalled subscribers the server disconnected.
    pub disconnected: u64,
    /// Deliveries the reading subscribers missed.
    pub lost: u64,
    /// Peak RSS growth over the run, in MiB.
    pub growth_mib: f64,
}

impl Outcome {
    /// What went wrong, one line each; empty when the server behaved.
    pub fn failures(&self, max_growth_mib: f64) -> Vec<String> {
        let mut out = Vec::new();
        if self.disconnected < self.stalled {
            out.push(format!(
                "{} of {} stalled subscribers were not disconnected",
                self.stalled - self.disconnected,
                self.stalled
            ));
        }
        if self.lost > 0 {
            out.push(format!("the reading subscribers lost {} deliveries", self.lost));
        }
        if self.growth_mib > max_growth_mib {
            out.push(format!("server RSS grew {:.1} MiB (bound {max_growth_mib} MiB)", self.growth_mib));
        }
        out
    }
}

/// Samples the server's RSS every 100 ms until told to stop; returns the peak.
fn sample_peak(server: Pids, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = server.rss().unwrap_or(0);
        loop {
            tokio::select! {
                _ = stop.changed() => return peak,
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    peak = peak.max(server.rss().unwrap_or(0));
                }
            }
        }
    })
}

/// How a stalled socket ended, seen once its backlog is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// A close frame with 4100 (over capacity) got through.
    Closed4100,
    /// The server dropped the connection (its close frame could not get past the full buffers,
    /// or it closed with another code).
    Dropped,
    /// Still open 20 s after the publisher stopped.
    Open,
}

async fn ending(mut c: Connected) -> Ended {
    let read = async {
        while let Some(msg) = c.ws.next().await {
            match msg {
                Ok(Message::Close(Some(frame))) if frame.code == CloseCode::Library(4100) => {
                    return Ended::Closed4100
                }
                Ok(Message::Close(_)) | Err(_) => return Ended::Dropped,
                Ok(_) => {}
            }
        }
        Ended::Dropped
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.unwrap_or(Ended::Open)
}

/// Runs the scenario.
pub async fn slow(target: &Target, o: &Slow) -> Report {
    let channel = |_: usize| CHANNEL.to_owned();
    let (readers, _, _) = open_many(target, 0..o.readers, o.concurrency, None, Some(&channel)).await;
    // Stalled subscribers get a small receive buffer, so they fill sooner.
    let stalled_ids = o.readers..o.readers + o.stalled;
    let (stalled, _, _) = open_many(target, stalled_ids, o.concurrency, Some(4096), Some(&channel)).await;
    let total = (f64::from(o.rate) * o.duration.as_secs_f64()).ceil() as usize;
    let tally = Arc::new(Tally::new(total, readers.len() as u32));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Readers' latencies are not asked for.
    let latencies = Arc::new(crate::stats::Latencies::new(1));
    let reading = spawn_readers(readers, &tally, &latencies, &stop_rx);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = o.server.rss().unwrap_or(0);
    let peak = sample_peak(o.server.clone(), stop_rx.clone());

    let publisher = Publisher::new(target);
    let (_, publish_errors, _) = publish(&publisher, 0..total, o.rate, &[CHANNEL.to_owned()], o.size).await;
    let expected = total as u64 * tally_readers(&tally);
    let drain_until = Instant::now() + Duration::from_secs(10);
    while tally.summary(total).delivered < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stalled_count = stalled.len() as u64;
    let endings: Vec<_> = stalled.into_iter().map(|c| tokio::spawn(ending(c))).collect();
    let (mut disconnected, mut with_4100) = (0, 0);
    for e in endings {
        match e.await.unwrap_or(Ended::Open) {
            Ended::Closed4100 => (disconnected, with_4100) = (disconnected + 1, with_4100 + 1),
            Ended::Dropped => disconnected += 1,
            Ended::Open => {}
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = o.server.rss().unwrap_or(0);
    let _ = stop_tx.send(true);
    let peak = peak.await.unwrap_or(0).max(after);
    for r in reading {
        let _ = r.await;
    }
    let s = tally.summary(total);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let outcome = Outcome {
        stalled: stalled_count,
        disconnected,
        lost: s.lost,
        growth_mib: mib(peak.saturating_sub(before)),
    };
    let failures = outcome.failures(o.max_growth_mib);
    let mut r = Report::new("slow");
    r.add("stalled_subscribers", stalled_count)
        .add("stalled_disconnected", disconnected)
        .add("stalled_saw_close_4100", with_4100)
        .add("reading_subscribers", tally_readers(&tally))
        .add("messages_published", total as u64)
        .add("publish_errors", publish_errors)
        .add("message_bytes", o.size as u64)
        .add("published_mib_per_stalled_subscriber", mib(total as u64 * o.size as u64))
        .add("reader_deliveries", s.delivered)
        .add("reader_lost", s.lost)
        .add("server_rss_before_mib", mib(before))
        .add("server_rss_peak_mib", mib(peak))
        .add("server_rss_after_mib", mib(after))
        .add("server_rss_growth_peak_mib", outcome.growth_mib)
        .add("max_growth_mib", o.max_growth_mib)
        .add("verdict", if failures.is_empty() { "pass".to_owned() } else { failures.join("; ") });
    r.failed = !failures.is_empty();
    r
}

fn tally_readers(tally: &Tally) -> u64 {
    u64::from(tally.expected_per_message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_names_each_failure() {
        let ok = Outcome { stalled: 10, disconnected: 10, lost: 0, growth_mib: 12.0 };
        assert!(ok.failures(64.0).is_empty());
        let bad = Outcome { stalled: 10, disconnected: 7, lost: 3, growth_mib: 900.0 };
        let f = bad.failures(64.0);
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(f[0].starts_with("3 of 10 stalled"), "{f:?}");
        assert!(f[1].contains("lost 3"), "{f:?}");
        assert!(f[2].contains("900.0 MiB"), "{f:?}");
    }
}
