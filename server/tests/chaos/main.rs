//! A seeded chaos run: three `herald-server` processes on one persistent Redis, with presence
//! users joining, flapping and leaving, observers on every node, a backend triggering events and
//! a client sending client events — while a schedule drawn from the seed SIGKILLs and restarts
//! nodes, restarts Redis, kills the pub/sub connections and stalls Redis. An oracle then checks
//! what users and webhook receivers saw: no ghost member, channel, count or online user; every
//! real transition's webhook once (or repeated with its id), none for a flap, in order; every
//! event answered 200 at every socket that stayed connected. `HERALD_CHAOS_SEED=n` repeats a run.

mod oracle;
mod world;

use std::time::Duration;

use rand::{Rng, SeedableRng};

use world::{Fault, World};

/// How long faults are injected.
const CHAOS: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_chaos_run_loses_and_falsifies_nothing() {
    let seed: u64 = std::env::var("HERALD_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::random::<u64>() % 1_000_000);
    eprintln!("chaos seed {seed} (HERALD_CHAOS_SEED={seed} repeats this run)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let world = World::start(seed).await;
    let started = tokio::time::Instant::now();
    while started.elapsed() < CHAOS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(2500..5000))).await;
        let fault = match rng.random_range(0..10) {
            0..=3 => {
                Fault::KillNode(rng.random_range(1..3), Duration::from_millis(rng.random_range(500..4000)))
            }
            4..=5 => Fault::RestartRedis,
            6..=7 => Fault::KillPubSub,
            _ => Fault::StallRedis(Duration::from_millis(rng.random_range(300..1500))),
        };
        world.inject(fault).await;
    }
    let report = world.finish().await;
    eprintln!("{report}");
    let problems = report.problems();
    if !problems.is_empty() {
        eprintln!("webhooks received:\n{}", report.ledger());
    }
    assert!(
        problems.is_empty(),
        "chaos seed {seed}: {problems:#?}\n(HERALD_CHAOS_SEED={seed} repeats this run)"
    );
}
