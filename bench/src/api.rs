//! `api`: the HTTP API under load. `concurrency` backends send `POST /apps/{id}/events` (or,
//! with `batch` > 1, `POST /apps/{id}/batch_events` of `batch` events) back to back for a while
//! (each request waits for the previous answer, over keep-alive connections), to `channels`
//! channels in turn; reports requests and events per second, failures, latency and the server's
//! CPU per thousand events.

use std::time::{Duration, Instant};

use crate::client::{Publisher, Target};
use crate::report::Report;
use crate::stats::{Latency, Pids};

pub struct Api {
    /// Requests in flight at once (one per simulated backend).
    pub concurrency: usize,
    pub duration: Duration,
    /// Channels the events go to, in turn.
    pub channels: usize,
    /// Bytes of event data.
    pub size: usize,
    /// Events per request: 1 is `POST /events`, more is `POST /batch_events` (Pusher allows 10).
    pub batch: usize,
    pub server: Pids,
}

pub async fn api(target: &Target, o: &Api) -> Report {
    let publisher = Publisher::new(target);
    let data = "x".repeat(o.size);
    let cpu_before = o.server.cpu();
    let started = Instant::now();
    let deadline = started + o.duration;
    let workers: Vec<_> = (0..o.concurrency.max(1))
        .map(|w| {
            let (publisher, data, channels, batch) =
                (publisher.clone(), data.clone(), o.channels.max(1), o.batch.max(1));
            tokio::spawn(async move {
                let (mut latency, mut ok, mut failed) = (Latency::default(), 0u64, 0u64);
                let mut i = w;
                while Instant::now() < deadline {
                    let names: Vec<String> =
                        (i..i + batch).map(|c| format!("api-{}", c % channels)).collect();
                    i += batch;
                    let sent = match names.as_slice() {
                        [one] => publisher.trigger(one, "bench", &data).await,
                        many => publisher.trigger_batch(many, "bench", &data).await,
                    };
                    match sent {
                        Ok(took) => {
                            latency.record_us(took.as_micros() as u64);
                            ok += 1;
                        }
                        Err(_) => failed += 1,
                    }
                }
                (latency, ok, failed)
            })
        })
        .collect();
    let (mut latency, mut ok, mut failed) = (Latency::default(), 0u64, 0u64);
    for w in workers {
        if let Ok((l, o, f)) = w.await {
            latency.merge(&l);
            ok += o;
            failed += f;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let mut r = Report::new("api");
    let events = ok * o.batch.max(1) as u64;
    r.add("requests_ok", ok)
        .add("requests_failed", failed)
        .add("seconds", secs)
        .add("requests_per_second", ok as f64 / secs)
        .add("events_per_request", o.batch.max(1) as u64)
        .add("events_per_second", events as f64 / secs)
        .add("latency_p50_ms", latency.quantile_ms(0.5))
        .add("latency_p99_ms", latency.quantile_ms(0.99));
    if let (Some(before), Some(after)) = (cpu_before, o.server.cpu()) {
        r.add("server_cpu_seconds", after - before);
        if ok > 0 {
            r.add("server_cpu_ms_per_1k_requests", (after - before) * 1e6 / ok as f64);
            r.add("server_cpu_ms_per_1k_events", (after - before) * 1e6 / events as f64);
        }
    }
    r
}
