//! `fanout`: C channels × N subscribers; messages published through the signed HTTP API at a
//! fixed rate, or ramped step by step until the server stops keeping up. Every subscriber
//! records publish→deliver latency; lost and duplicated deliveries are counted per step.
//!
//! The ramp's verdict is one the machine's noise and the generator cannot decide alone: it
//! starts with an unreported warm-up step, a step fails when it loses a delivery or its p99
//! passes the bound, and saturation is [`Ramp::confirm`] failed steps in a row (one failed step
//! followed by a sustained one is noise). The generator's own CPU share is measured each step:
//! a step where the generator used ≥ [`GENERATOR_BOUND`] of its core is the generator's limit,
//! not the server's, and ends the ramp so.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{is_ping, pong, Connected, Publisher, Target};
use crate::report::Report;
use crate::scenarios::open_many;
use crate::stats::{now_us, padded_payload, parse_delivery, Latencies, Latency, Pids, Tally, TallySummary};

/// Options of the `fanout` scenario.
#[derive(Debug, Clone)]
pub struct Fanout {
    /// Channels.
    pub channels: usize,
    /// Subscribers of each channel.
    pub subscribers: usize,
    /// Messages per second over all channels (the first step's, when ramping).
    pub rate: u32,
    /// How long to publish (each step, when ramping).
    pub duration: Duration,
    /// Handshakes at once while connecting.
    pub concurrency: usize,
    /// The server's pids, for its CPU time.
    pub server: Pids,
    /// Ramp the rate instead of holding it.
    pub ramp: Option<Ramp>,
}

/// How a ramp climbs and when it stops.
#[derive(Debug, Clone, Copy)]
pub struct Ramp {
    /// Each step's rate is the previous one's times this.
    pub factor: f64,
    /// Steps at most.
    pub steps: usize,
    /// A step whose p99 exceeds this (ms) fails, as does one that loses a delivery.
    pub max_p99_ms: f64,
    /// Failed steps in a row that end the ramp (saturation).
    pub confirm: usize,
}

/// The generator's CPU share of its core at which a step measures the generator, not the
/// server.
pub const GENERATOR_BOUND: f64 = 0.9;

/// Why a ramp stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `confirm` steps in a row failed: the server's saturation.
    Server,
    /// The generator ran out of its core: the server's limit is above what was measured.
    Generator,
    /// Every step ran.
    None,
}

impl Limit {
    fn name(self) -> &'static str {
        match self {
            Limit::Server => "server",
            Limit::Generator => "generator",
            Limit::None => "none: the steps ran out",
        }
    }
}

/// The message rates of each step.
pub fn step_rates(rate: u32, ramp: Option<Ramp>) -> Vec<u32> {
    match ramp {
        None => vec![rate],
        Some(r) => {
            (0..r.steps.max(1)).map(|k| (f64::from(rate) * r.factor.powi(k as i32)).round() as u32).collect()
        }
    }
}

/// What one step measured.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Offered messages per second.
    pub rate: u32,
    /// Messages published.
    pub published: usize,
    /// Seconds the publishing took.
    pub publish_secs: f64,
    /// Deliveries, losses and duplicates of this step's messages.
    pub tally: TallySummary,
    /// Latency quantiles, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Server CPU seconds used during the step.
    pub cpu_secs: Option<f64>,
    /// Of those, the kernel's (system time: socket writes, loopback TCP).
    pub system_secs: Option<f64>,
    /// The generator's CPU seconds over the step's wall time (1.0 = its whole core).
    pub generator_share: Option<f64>,
}

impl Step {
    /// Deliveries per second of publishing time.
    pub fn deliveries_per_second(&self) -> f64 {
        self.tally.delivered as f64 / self.publish_secs.max(f64::EPSILON)
    }

    /// Whether the server kept up: nothing lost and the p99 within the bound.
    pub fn sustained(&self, max_p99_ms: f64) -> bool {
        self.tally.lost == 0 && self.p99_ms <= max_p99_ms
    }

    /// Whether the generator had no headroom left in this step.
    pub fn generator_bound(&self) -> bool {
        self.generator_share.is_some_and(|s| s >= GENERATOR_BOUND)
    }

    fn json(&self) -> serde_json::Value {
        let mut v = json!({
            "offered_rate": self.rate,
            "published": self.published,
            "deliveries": self.tally.delivered,
            "deliveries_per_second": self.deliveries_per_second(),
            "lost": self.tally.lost,
            "duplicated": self.tally.duplicated,
            "latency_p50_ms": self.p50_ms,
            "latency_p99_ms": self.p99_ms,
            "latency_p999_ms": self.p999_ms,
        });
        if let Some(cpu) = self.cpu_secs {
            v["server_cpu_seconds_per_million_deliveries"] =
                (cpu / (self.tally.delivered.max(1) as f64 / 1e6)).into();
            if let Some(system) = self.system_secs {
                v["server_system_cpu_share"] = (system / cpu.max(f64::EPSILON)).into();
            }
        }
        if let Some(share) = self.generator_share {
            v["generator_cpu_share"] = share.into();
        }
        v
    }
}

/// Why a ramp's steps stop (or [`Limit::None`]: go on) and the index of the highest sustained
/// step before the stop: saturation needs `confirm` failed steps in a row, a generator-bound
/// step stops the ramp at once.
pub fn verdict(steps: &[Step], ramp: Ramp) -> (Limit, Option<usize>) {
    let confirm = ramp.confirm.max(1);
    let mut failed_in_a_row = 0;
    let mut best = None;
    for (i, s) in steps.iter().enumerate() {
        if s.generator_bound() {
            // A sustained step whose generator was at its bound still counts as sustained.
            if s.sustained(ramp.max_p99_ms) {
                best = Some(i);
            }
            return (Limit::Generator, best);
        }
        if s.sustained(ramp.max_p99_ms) {
            failed_in_a_row = 0;
            best = Some(i);
        } else {
            failed_in_a_row += 1;
            if failed_in_a_row >= confirm {
                // The best step is the last sustained one before this run of failures.
                let first_failed = i + 1 - failed_in_a_row;
                let best = steps[..first_failed].iter().rposition(|s| s.sustained(ramp.max_p99_ms));
                return (Limit::Server, best);
            }
        }
    }
    (Limit::None, best)
}

/// Runs the subscribers' reading side: every delivery goes into the tally and the client's
/// shard of `latencies`; pings are answered. Ends when `stop` changes or the socket closes.
pub(crate) fn spawn_readers(
    sockets: Vec<Connected>,
    tally: &Arc<Tally>,
    latencies: &Arc<Latencies>,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    sockets
        .into_iter()
        .map(|mut c| {
            let (tally, latencies, mut stop) = (tally.clone(), latencies.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        msg = c.ws.next() => match msg {
                            Some(Ok(Message::Text(t))) => {
                                if let Some((seq, sent)) = parse_delivery(&t) {
                                    latencies.record_us(c.id, now_us().saturating_sub(sent));
                                    tally.record(seq);
                                } else if is_ping(&t) && c.ws.send(pong()).await.is_err() {
                                    break;
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => break,
                        },
                    }
                }
            })
        })
        .collect()
}

/// Publishes messages `seqs` at `rate` per second, round-robin over `channels`, each carrying
/// its sequence number and send time padded to `size` bytes. Returns the seconds it took, the
/// failed publishes and the HTTP API's round trips.
pub(crate) async fn publish(
    publisher: &Publisher,
    seqs: std::ops::Range<usize>,
    rate: u32,
    channels: &[String],
    size: usize,
) -> (f64, u64, Latency) {
    let in_flight = Arc::new(Semaphore::new(256));
    let errors = Arc::new(AtomicU64::new(0));
    let round_trips = Arc::new(std::sync::Mutex::new(Latency::default()));
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let first = seqs.start;
    for seq in seqs {
        tokio::time::sleep_until((started + interval.mul_f64((seq - first) as f64)).into()).await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
        let (publisher, errors, round_trips) = (publisher.clone(), errors.clone(), round_trips.clone());
        let ch = channels[seq % channels.len()].clone();
        tokio::spawn(async move {
            match publisher.trigger(&ch, "bench", &padded_payload(seq as u64, now_us(), size)).await {
                Ok(took) => {
                    if let Ok(mut l) = round_trips.lock() {
                        l.record_us(took.as_micros() as u64);
                    }
                }
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
    }
    let _ = in_flight.acquire_many(256).await;
    let round_trips = round_trips.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default();
    (started.elapsed().as_secs_f64(), errors.load(Ordering::Relaxed), round_trips)
}

/// Runs the scenario.
pub async fn fanout(target: &Target, o: &Fanout) -> Report {
    let per = o.subscribers.max(1);
    let channel = move |i: usize| format!("bench-{}", i / per);
    let rss_before = o.server.rss();
    let mut rss_peak = None;
    let (sockets, _, connect_errors) =
        open_many(target, 0..o.channels * per, o.concurrency, None, Some(&channel)).await;
    let readers = sockets.len();
    // A ramp starts with an unreported warm-up step at the first rate: the first seconds after a
    // connection storm are not what the server sustains.
    let mut rates = step_rates(o.rate, o.ramp);
    if o.ramp.is_some() {
        rates.insert(0, o.rate);
    }
    let counts: Vec<usize> =
        rates.iter().map(|r| (f64::from(*r) * o.duration.as_secs_f64()).ceil() as usize).collect();
    let tally = Arc::new(Tally::new(counts.iter().sum(), per as u32));
    let latencies = Arc::new(Latencies::new(16));
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks = spawn_readers(sockets, &tally, &latencies, &stop_rx);
    let publisher = Publisher::new(target);
    let channels: Vec<String> = (0..o.channels.max(1)).map(|c| format!("bench-{c}")).collect();
    let (mut steps, mut publish_errors, mut first) = (Vec::new(), 0, 0);
    for (k, (&rate, &count)) in rates.iter().zip(&counts).enumerate() {
        let seqs = first..first + count;
        first += count;
        let cpu_before = o.server.cpu_split();
        let (me, step_started) = (crate::stats::cpu_seconds(std::process::id()), Instant::now());
        let (publish_secs, errors, _) = publish(&publisher, seqs.clone(), rate, &channels, 0).await;
        publish_errors += errors;
        let expected = (count * per) as u64;
        let drain_until = Instant::now() + Duration::from_secs(5);
        while tally.summary_of(seqs.clone()).delivered < expected && Instant::now() < drain_until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Memory under traffic: the largest RSS seen at the end of a step.
        rss_peak = rss_peak.max(o.server.rss());
        let (cpu_secs, system_secs) = match (cpu_before, o.server.cpu_split()) {
            (Some((u0, s0)), Some((u1, s1))) => (Some(u1 - u0 + s1 - s0), Some(s1 - s0)),
            _ => (None, None),
        };
        let generator_share = match (me, crate::stats::cpu_seconds(std::process::id())) {
            (Some(a), Some(b)) => Some((b - a) / step_started.elapsed().as_secs_f64().max(f64::EPSILON)),
            _ => None,
        };
        let latency = latencies.take_merged();
        let step = Step {
            rate,
            published: count,
            publish_secs,
            tally: tally.summary_of(seqs),
            p50_ms: latency.quantile_ms(0.5),
            p99_ms: latency.quantile_ms(0.99),
            p999_ms: latency.quantile_ms(0.999),
            cpu_secs,
            system_secs,
            generator_share,
        };
        if o.ramp.is_some() {
            eprintln!("{}: {}", if k == 0 { "warm-up".to_owned() } else { format!("step {k}") }, step.json());
            if k == 0 {
                continue;
            }
        }
        steps.push(step);
        match o.ramp {
            Some(ramp) if verdict(&steps, ramp).0 != Limit::None => break,
            None => break,
            Some(_) => {}
        }
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let mut r = report(o, per, connect_errors, publish_errors, &steps);
    if let (Some(before), Some(peak)) = (rss_before, rss_peak) {
        r.add("server_rss_before_bytes", before).add("server_rss_under_traffic_bytes", peak).add(
            "rss_bytes_per_subscriber_under_traffic",
            peak.saturating_sub(before) as f64 / readers.max(1) as f64,
        );
    }
    r
}

fn report(o: &Fanout, per: usize, connect_errors: u64, publish_errors: u64, steps: &[Step]) -> Report {
    let mut r = Report::new("fanout");
    r.add("channels", o.channels as u64)
        .add("subscribers_per_channel", per as u64)
        .add("connect_errors", connect_errors)
        .add("publish_errors", publish_errors);
    let Some(ramp) = o.ramp else {
        let Some(s) = steps.first() else { return r };
        r.add("messages_published", s.published as u64)
            .add("publish_seconds", s.publish_secs)
            .add("deliveries", s.tally.delivered)
            .add("deliveries_per_second", s.deliveries_per_second())
            .add("lost", s.tally.lost)
            .add("duplicated", s.tally.duplicated)
            .add("latency_p50_ms", s.p50_ms)
            .add("latency_p99_ms", s.p99_ms)
            .add("latency_p999_ms", s.p999_ms);
        if let Some(cpu) = s.cpu_secs {
            r.add("server_cpu_seconds", cpu);
            r.add("server_cpu_seconds_per_million_deliveries", cpu / (s.tally.delivered.max(1) as f64 / 1e6));
            if let Some(system) = s.system_secs {
                r.add("server_system_cpu_share", system / cpu.max(f64::EPSILON));
            }
        }
        if let Some(share) = s.generator_share {
            r.add("generator_cpu_share", share);
        }
        return r;
    };
    let (limit, best) = verdict(steps, ramp);
    let best = best.and_then(|i| steps.get(i));
    r.add("steps_run", steps.len() as u64)
        .add("max_p99_ms", ramp.max_p99_ms)
        .add("confirm_steps", ramp.confirm as u64)
        .add("limit", limit.name())
        .add("max_sustained_offered_rate", best.map_or(0, |s| u64::from(s.rate)))
        .add("max_sustained_deliveries_per_second", best.map_or(0.0, Step::deliveries_per_second))
        .add("latency_p99_ms_at_max", best.map_or(0.0, |s| s.p99_ms));
    let at_max = best.map(Step::json).unwrap_or_default();
    for key in ["server_cpu_seconds_per_million_deliveries", "server_system_cpu_share", "generator_cpu_share"]
    {
        if let Some(v) = at_max.get(key) {
            r.add(&format!("{key}_at_max"), v.clone());
        }
    }
    let first_failed = best.map_or(0, |b| b.rate);
    match steps.iter().find(|s| s.rate > first_failed && !s.sustained(ramp.max_p99_ms)) {
        Some(s) if limit == Limit::Server => r.add("first_unsustained_offered_rate", u64::from(s.rate)),
        _ => r.add("first_unsustained_offered_rate", limit.name()),
    };
    r.add("steps", steps.iter().map(Step::json).collect::<Vec<_>>());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ramp_climbs_by_its_factor() {
        assert_eq!(step_rates(100, None), vec![100]);
        let ramp = Ramp { factor: 1.5, steps: 4, max_p99_ms: 100.0, confirm: 2 };
        assert_eq!(step_rates(100, Some(ramp)), vec![100, 150, 225, 338]);
    }

    fn step(rate: u32, lost: u64, p99_ms: f64, generator: f64) -> Step {
        Step {
            rate,
            published: 100,
            publish_secs: 1.0,
            tally: TallySummary { delivered: 1000 - lost, lost, duplicated: 0 },
            p50_ms: 1.0,
            p99_ms,
            p999_ms: p99_ms,
            cpu_secs: None,
            system_secs: None,
            generator_share: Some(generator),
        }
    }

    #[test]
    fn one_failed_step_is_noise_and_two_in_a_row_are_saturation() {
        let ramp = Ramp { factor: 1.4, steps: 10, max_p99_ms: 100.0, confirm: 2 };
        let ok = |rate| step(rate, 0, 50.0, 0.5);
        let slow = |rate| step(rate, 0, 150.0, 0.5);
        assert_eq!(verdict(&[ok(10), ok(14)], ramp), (Limit::None, Some(1)));
        // A p99 spike at 14, then 20 sustained: noise, the ramp goes on.
        assert_eq!(verdict(&[ok(10), slow(14), ok(20)], ramp), (Limit::None, Some(2)));
        // 27 and 38 both fail: saturation, 20 is the highest sustained step.
        let steps = [ok(10), slow(14), ok(20), slow(27), step(38, 3, 20.0, 0.5)];
        assert_eq!(verdict(&steps, ramp), (Limit::Server, Some(2)));
        assert_eq!(verdict(&steps[..4], ramp), (Limit::None, Some(2)));
        // Failing from the first step: nothing sustained.
        assert_eq!(verdict(&[slow(10), slow(14)], ramp), (Limit::Server, None));
        let once = Ramp { confirm: 1, ..ramp };
        assert_eq!(verdict(&[ok(10), slow(14)], once), (Limit::Server, Some(0)));
    }

    #[test]
    fn a_step_whose_generator_ran_out_of_core_ends_the_ramp_as_the_generators_limit() {
        let ramp = Ramp { factor: 1.4, steps: 10, max_p99_ms: 100.0, confirm: 2 };
        let steps = [step(10, 0, 50.0, 0.5), step(14, 0, 60.0, 0.95)];
        assert_eq!(verdict(&steps, ramp), (Limit::Generator, Some(1)));
        let steps = [step(10, 0, 50.0, 0.5), step(14, 0, 160.0, 0.97)];
        assert_eq!(verdict(&steps, ramp), (Limit::Generator, Some(0)));
    }

    #[test]
    fn a_step_is_sustained_only_without_loss_and_within_the_p99_bound() {
        assert!(step(100, 0, 99.0, 0.5).sustained(100.0));
        assert!(!step(100, 1, 5.0, 0.5).sustained(100.0));
        assert!(!step(100, 0, 101.0, 0.5).sustained(100.0));
        assert_eq!(step(100, 0, 5.0, 0.5).deliveries_per_second(), 1000.0);
        assert!(!step(100, 0, 5.0, 0.5).generator_bound());
        assert!(step(100, 0, 5.0, 0.9).generator_bound());
    }
}
