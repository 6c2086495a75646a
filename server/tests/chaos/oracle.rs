//! The chaos run's oracle: from what the actors did (ground truth) and what sockets and the
//! webhook receiver got, everything that was lost, repeated, false or out of order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use herald_testkit::Hook;

/// The webhook window: a user or channel back within it sends no webhook.
const WINDOW: Duration = Duration::from_secs(3);

/// Something the fault schedule did.
#[derive(Debug, Clone)]
pub enum Fact {
    NodeKilled { at: Instant, node: usize, down_for: Duration },
    RedisRestarted { at: Instant, back: Instant },
    PubSubKilled { at: Instant },
    RedisStalled { at: Instant, for_: Duration },
}

/// A presence user's time on one socket (from its join to its close).
#[derive(Debug, Clone)]
pub struct Run {
    pub user: String,
    /// Whether the socket ended by itself (its node died) rather than by the user leaving.
    pub killed: bool,
    pub start: Instant,
    pub end: Instant,
}

/// One event the backend triggered and what the API answered (0: no answer).
#[derive(Debug, Clone)]
pub struct Triggered {
    pub seq: String,
    pub status: u16,
}

/// One client event the talking client sent.
#[derive(Debug, Clone)]
pub struct Said {
    pub data: String,
    pub at: Instant,
}

/// What one observer socket received, and whether it was closed before the end.
#[derive(Debug, Default)]
pub struct Observed {
    pub feed: Vec<String>,
    pub chat: Vec<String>,
    pub closed: bool,
}

pub struct Report {
    pub seed: u64,
    /// When the actors started: times in problems are seconds since.
    pub t0: Instant,
    pub facts: Vec<Fact>,
    pub runs: Vec<Run>,
    pub triggered: Vec<Triggered>,
    pub said: Vec<Said>,
    pub observed: Vec<Observed>,
    pub hooks: Vec<Hook>,
    /// What the HTTP API still showed after the run.
    pub ghosts: Vec<String>,
}

/// How late a webhook may arrive after the change it reports, and how far clocks of the
/// test and the nodes may disagree about when a socket opened or closed.
const SLACK: Duration = Duration::from_millis(600);

/// How late an arrival webhook may be: a join decided behind a stalled Redis (up to 1.5 s here).
const LATE: Duration = Duration::from_millis(2500);

/// How long the cluster may take to notice a socket whose node died: the lease (3 s), the
/// reaper's period (1 s), and a claim whose claimer died too (6 s), with room to spare.
const DEAD_NODE_BOUND: Duration = Duration::from_secs(12);

/// How soon after Redis is back (restarted or awake again) a node has noticed and decided what
/// waited on it: its retries back off to 1 s with the 3 s lease used here.
const SETTLE: Duration = Duration::from_secs(2);

/// Socket times `(start, end, ended by a node's death)` merged where they overlap or where the
/// gap between them is under `bridge`; a socket whose node died may have counted for up to
/// `dead` after it.
fn merged(runs: &[(Instant, Instant, bool)], dead: Duration, bridge: Duration) -> Vec<(Instant, Instant)> {
    let mut runs: Vec<(Instant, Instant)> =
        runs.iter().map(|(s, e, killed)| (*s, if *killed { *e + dead } else { *e })).collect();
    runs.sort_by_key(|r| r.0);
    let mut out: Vec<(Instant, Instant)> = Vec::new();
    for (start, end) in runs {
        match out.last_mut() {
            Some(last) if start <= last.1 + bridge => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// The gaps between merged stays, the last one open-ended.
fn gaps(stays: &[(Instant, Instant)]) -> Vec<(Instant, Option<Instant>)> {
    stays.iter().enumerate().map(|(i, (_, end))| (*end, stays.get(i + 1).map(|n| n.0))).collect()
}

/// Checks one channel's (or one member's) webhooks against its socket times:
/// - in order: arrival, departure, arrival, …, ending with a departure;
/// - nothing false: a departure at `w` means nobody was there during `[w − window, w]`, an
///   arrival means someone was;
/// - nothing lost: an absence longer than the window — counting a socket whose node died as
///   present for as long as the cluster may take to notice — has its departure and, if
///   someone came back, its arrival.
///
/// Nothing cluster-wide can be decided while Redis is away (`outages`): a stay that began and
/// ended then is known only to its node's sockets; a departure whose window ended then goes out
/// once Redis is back, which may be after the return it preceded (still before that return's
/// arrival). Such a departure is true if it was true when Redis went away, and due by the time
/// Redis is back and the nodes have settled — as is the arrival of a return made while Redis was
/// away (a Redis Cluster takes a moment more to be whole again).
fn check_key(
    key: &str,
    runs: &[(Instant, Instant, bool)],
    got: &[(Instant, bool)],
    outages: &[(Instant, Instant)],
    t: &dyn Fn(&Instant) -> String,
) -> Vec<String> {
    let problems = check_runs(key, runs, got, outages, t);
    // A stay that began while Redis was away and ended before the nodes had it back was never
    // known beyond its node: it may also have passed unseen, without webhooks and without
    // holding back a departure whose window it fell into.
    let unseen = |(s, e, _): &&(Instant, Instant, bool)| {
        outages.iter().any(|(away, back)| away <= s && s <= back && *e <= *back + SETTLE)
    };
    if problems.is_empty() || !runs.iter().any(|r| unseen(&r)) {
        return problems;
    }
    let seen: Vec<(Instant, Instant, bool)> = runs.iter().filter(|r| !unseen(r)).copied().collect();
    match check_runs(key, &seen, got, outages, t) {
        without if without.is_empty() => without,
        _ => problems,
    }
}

/// [`check_key`] for one account of the stays.
fn check_runs(
    key: &str,
    runs: &[(Instant, Instant, bool)],
    got: &[(Instant, bool)],
    outages: &[(Instant, Instant)],
    t: &dyn Fn(&Instant) -> String,
) -> Vec<String> {
    let mut problems = Vec::new();
    let sequence: String = got.iter().map(|(_, up)| if *up { '+' } else { '-' }).collect();
    let alternating = sequence.chars().enumerate().all(|(i, c)| c == if i % 2 == 0 { '+' } else { '-' });
    if !alternating || !sequence.ends_with('-') {
        problems.push(format!("{key}: webhooks out of order or unfinished: {sequence:?}"));
    }
    let present = |at: Instant| runs.iter().any(|(s, e, _)| *s <= at + SLACK && at <= *e + LATE);
    let absent_throughout =
        |from: Instant, to: Instant| !runs.iter().any(|(s, e, _)| *s + SLACK < to && from + SLACK < *e);
    for (at, up) in got {
        if *up && !present(*at) {
            problems.push(format!("{key}: an arrival webhook at {} while nobody was there", t(at)));
        }
        // Its window ended while Redis was away: at some moment `d` then, nobody was there
        // during `[d − window, d]` (`d` is the outage's start or a window's end within it).
        let held_by_outage = outages.iter().filter(|(away, back)| *away <= *at && *at <= *back + SETTLE).any(
            |(away, back)| {
                let ends = runs.iter().map(|(_, e, _)| *e + WINDOW);
                std::iter::once(*away)
                    .chain(ends)
                    .filter(|d| away <= d && d <= back)
                    .any(|d| absent_throughout(d - WINDOW, d))
            },
        );
        if !*up && !absent_throughout(*at - WINDOW, *at) && !held_by_outage {
            problems
                .push(format!("{key}: a departure webhook at {} for someone there within the window", t(at)));
        }
    }
    let certain = merged(runs, DEAD_NODE_BOUND, WINDOW + SLACK);
    for ((since, from), to) in certain.iter().zip(gaps(&certain)).map(|((s, _), (f, t))| ((*s, f), t)) {
        // The departure may come as soon as the last socket that counted went away: a socket
        // whose node died may have stopped counting any time within the bound.
        // Due `late` after the return, or once Redis is back and settled if it was away then.
        let due = |to: Instant, late: Duration| {
            let away_then = outages.iter().filter(|(away, back)| *away <= to && to <= *back);
            away_then.map(|(_, back)| *back + SETTLE).fold(to + late, Instant::max)
        };
        let departed =
            got.iter().any(|(at, up)| !*up && *at > since && to.is_none_or(|to| *at <= due(to, SLACK)));
        if !departed {
            problems.push(format!("{key}: no departure webhook for the absence from {}", t(&from)));
        }
        if let Some(to) = to {
            let arrived = got.iter().any(|(at, up)| *up && *at + SLACK >= to && *at <= due(to, LATE));
            if !arrived {
                problems.push(format!("{key}: no arrival webhook for the return at {}", t(&to)));
            }
        }
    }
    problems
}

impl Report {
    /// Webhook events in the order first received, each request once (a repeat carries the
    /// same id and body).
    fn webhook_events(&self, problems: &mut Vec<String>) -> Vec<(Instant, serde_json::Value)> {
        let mut bodies: HashMap<&str, &str> = HashMap::new();
        let mut events = Vec::new();
        for h in &self.hooks {
            match bodies.get(h.id.as_str()) {
                Some(body) if *body != h.body => {
                    problems.push(format!("webhook {} repeated with another body", h.id));
                }
                Some(_) => {}
                None => {
                    bodies.insert(&h.id, &h.body);
                    events.extend(h.events().into_iter().map(|e| (h.at, e)));
                }
            }
        }
        events
    }

    /// Per channel (and user): what the cluster announced against what the sockets did.
    fn check_webhooks(&self, problems: &mut Vec<String>) {
        let events = self.webhook_events(problems);
        let mut ledger: BTreeMap<String, Vec<(Instant, bool)>> = BTreeMap::new();
        for (at, e) in &events {
            let name = e["name"].as_str().unwrap_or_default();
            let channel = e["channel"].as_str().unwrap_or_default();
            let (key, up) = match name {
                "member_added" => (format!("{channel} {}", e["user_id"].as_str().unwrap_or_default()), true),
                "member_removed" => {
                    (format!("{channel} {}", e["user_id"].as_str().unwrap_or_default()), false)
                }
                "channel_occupied" => (channel.to_owned(), true),
                "channel_vacated" => (channel.to_owned(), false),
                _ => continue,
            };
            ledger.entry(key).or_default().push((*at, up));
        }
        let mut truth: BTreeMap<String, Vec<(Instant, Instant, bool)>> = BTreeMap::new();
        for r in &self.runs {
            for key in
                [format!("presence-lobby {}", r.user), format!("room-{}", r.user), "presence-lobby".into()]
            {
                truth.entry(key).or_default().push((r.start, r.end, r.killed));
            }
        }
        let t = |i: &Instant| format!("{:.1}s", i.saturating_duration_since(self.t0).as_secs_f64());
        let outages = self.redis_away();
        for (key, runs) in truth {
            let got = ledger.remove(&key).unwrap_or_default();
            let found = check_key(&key, &runs, &got, &outages, &t);
            if !found.is_empty() {
                let sockets: Vec<String> = runs
                    .iter()
                    .map(|(s, e, killed)| {
                        format!("{}–{}{}", t(s), t(e), if *killed { " (node died)" } else { "" })
                    })
                    .collect();
                let hooks: Vec<String> =
                    got.iter().map(|(at, up)| format!("{}{}", if *up { '+' } else { '-' }, t(at))).collect();
                problems.extend(found);
                problems.push(format!("  {key}: sockets {sockets:?}, webhooks {hooks:?}"));
            }
        }
        for (key, got) in ledger {
            if !key.starts_with("feed") && !key.starts_with("private-chat") {
                problems.push(format!("{key}: {} webhooks for a channel nobody used", got.len()));
            }
        }
    }

    /// Every event answered 200 reached every observer that stayed connected, once.
    fn check_events(&self, problems: &mut Vec<String>) {
        let accepted: Vec<&str> =
            self.triggered.iter().filter(|t| t.status == 200).map(|t| t.seq.as_str()).collect();
        for (i, o) in self.observed.iter().enumerate().filter(|(_, o)| !o.closed) {
            let got: HashMap<&str, usize> = o.feed.iter().fold(HashMap::new(), |mut m, d| {
                *m.entry(d.as_str()).or_default() += 1;
                m
            });
            let lost: Vec<&&str> = accepted.iter().filter(|s| !got.contains_key(**s)).collect();
            let repeated = got.values().filter(|n| **n > 1).count();
            if !lost.is_empty() || repeated > 0 {
                problems.push(format!(
                    "observer {i}: {} of {} accepted events lost (e.g. {:?}), {repeated} repeated",
                    lost.len(),
                    accepted.len(),
                    lost.iter().take(5).collect::<Vec<_>>()
                ));
            }
        }
    }

    /// Times when Redis was away (killed until restarted, or stalled).
    fn redis_away(&self) -> Vec<(Instant, Instant)> {
        self.facts
            .iter()
            .filter_map(|f| match f {
                Fact::RedisRestarted { at, back } => Some((*at, *back)),
                Fact::RedisStalled { at, for_ } => Some((*at, *at + *for_)),
                _ => None,
            })
            .collect()
    }

    /// Times when Redis could not take a publish at once (restarting, stalled), with room for
    /// the node to notice and rejoin: a client event sent then may reach only its own node.
    fn redis_trouble(&self) -> Vec<(Instant, Instant)> {
        self.redis_away().into_iter().map(|(away, back)| (away, back + Duration::from_secs(6))).collect()
    }

    /// Client events reach every observer that stayed connected: on the sender's node always,
    /// on the others whenever Redis was there to take them.
    fn check_client_events(&self, problems: &mut Vec<String>) {
        let trouble = self.redis_trouble();
        let expected: Vec<&str> = self
            .said
            .iter()
            .filter(|s| !trouble.iter().any(|(from, to)| s.at >= *from && s.at <= *to))
            .map(|s| s.data.as_str())
            .collect();
        let sent_at: HashMap<&str, Instant> = self.said.iter().map(|s| (s.data.as_str(), s.at)).collect();
        for (i, o) in self.observed.iter().enumerate().filter(|(_, o)| !o.closed) {
            let got: HashSet<&str> = o.chat.iter().map(String::as_str).collect();
            let lost: Vec<String> = expected
                .iter()
                .filter(|d| !got.contains(**d))
                .map(|d| {
                    let at = sent_at.get(d).map(|t| t.saturating_duration_since(self.t0).as_secs_f64());
                    format!("{d} sent at {:.2}s", at.unwrap_or_default())
                })
                .collect();
            let repeated = o.chat.len() - got.len();
            if !lost.is_empty() || repeated > 0 {
                problems.push(format!(
                    "observer {i}: {} client events lost ({:?}), {repeated} repeated",
                    lost.len(),
                    lost.iter().take(5).collect::<Vec<_>>()
                ));
            }
        }
    }

    /// Every webhook event received, one line each, for reading a failed run.
    pub fn ledger(&self) -> String {
        let mut out = String::new();
        for h in &self.hooks {
            for e in h.events() {
                out.push_str(&format!(
                    "{:6.2}s {} {} {} {}\n",
                    h.at.saturating_duration_since(self.t0).as_secs_f64(),
                    h.id,
                    e["name"].as_str().unwrap_or_default(),
                    e["channel"].as_str().unwrap_or_default(),
                    e["user_id"].as_str().unwrap_or_default()
                ));
            }
        }
        out
    }

    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.ghosts.clone();
        self.check_events(&mut problems);
        self.check_client_events(&mut problems);
        self.check_webhooks(&mut problems);
        problems
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = |code: u16| self.triggered.iter().filter(|t| t.status == code).count();
        writeln!(f, "chaos seed {}:", self.seed)?;
        for fact in &self.facts {
            let t = |i: &Instant| i.saturating_duration_since(self.t0).as_secs_f64();
            match fact {
                Fact::NodeKilled { at, node, down_for } => {
                    writeln!(f, "  {:6.1}s node {node} SIGKILLed, restarted after {down_for:?}", t(at))?
                }
                Fact::RedisRestarted { at, back } => writeln!(
                    f,
                    "  {:6.1}s Redis SIGKILLed and restarted on its data ({:.1}s)",
                    t(at),
                    t(back)
                )?,
                Fact::PubSubKilled { at } => writeln!(f, "  {:6.1}s CLIENT KILL TYPE pubsub", t(at))?,
                Fact::RedisStalled { at, for_ } => writeln!(f, "  {:6.1}s DEBUG SLEEP {for_:?}", t(at))?,
            }
        }
        writeln!(
            f,
            "  {} events triggered: {} accepted (200), {} refused (503), {} unanswered",
            self.triggered.len(),
            status(200),
            status(503),
            status(0)
        )?;
        writeln!(f, "  {} client events sent", self.said.len())?;
        writeln!(f, "  {} presence stays by {} users", self.runs.len(), {
            self.runs.iter().map(|r| &r.user).collect::<HashSet<_>>().len()
        })?;
        let open = self.observed.iter().filter(|o| !o.closed).count();
        writeln!(f, "  {open} of {} observers connected throughout", self.observed.len())?;
        write!(f, "  {} webhook requests received", self.hooks.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stays and webhooks as the runs that met each case logged them (seconds from the start).
    fn check(stays: &[(f64, f64)], hooks: &[(f64, bool)], outages: &[(f64, f64)]) -> Vec<String> {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let runs: Vec<_> = stays.iter().map(|(s, e)| (at(*s), at(*e), false)).collect();
        let got: Vec<_> = hooks.iter().map(|(s, up)| (at(*s), *up)).collect();
        let outages: Vec<_> = outages.iter().map(|(a, b)| (at(*a), at(*b))).collect();
        check_key("k", &runs, &got, &outages, &|i| format!("{:?}", i.duration_since(t0)))
    }

    #[test]
    fn a_departure_held_up_by_redis_may_follow_the_return_it_precedes() {
        // Redis Cluster, seed 3226514341: the window of the absence from 13.2 s ended while
        // Redis was away again (18.3–20.5 s); the departure went out when it came back.
        let stays = [(9.2, 13.2), (19.8, 22.2)];
        let hooks = [(9.2, true), (20.6, false), (20.6, true), (25.2, false)];
        assert_eq!(check(&stays, &hooks, &[(12.5, 14.6), (18.3, 20.5)]), Vec::<String>::new());
        assert!(!check(&stays, &hooks, &[]).is_empty(), "late and false, had Redis been there");
        // Out of order stays wrong whatever Redis did.
        let swapped = [(9.2, true), (20.6, true), (20.6, false), (25.2, false)];
        assert!(!check(&stays, &swapped, &[(12.5, 14.6), (18.3, 20.5)]).is_empty());
    }

    #[test]
    fn the_arrival_of_a_return_while_redis_was_away_is_due_once_it_is_back() {
        // Redis Cluster, seed 1: back at 8.2 s while Redis was away (7.9–10.1 s); the cluster
        // was whole again, and the arrival sent, at 11.0 s.
        let stays = [(0.0, 1.3), (8.2, 11.1)];
        let hooks = [(0.0, true), (4.3, false), (11.0, true), (14.1, false)];
        assert_eq!(check(&stays, &hooks, &[(7.9, 10.1)]), Vec::<String>::new());
        assert!(!check(&stays, &hooks, &[]).is_empty(), "late, had Redis been there");
        let later = [(0.0, true), (4.3, false), (12.5, true), (15.6, false)];
        assert!(!check(&stays, &later, &[(7.9, 10.1)]).is_empty(), "past Redis back + 2 s");
    }

    #[test]
    fn a_stay_inside_a_redis_outage_may_pass_unseen_and_a_lost_one_outside_is_still_found() {
        // Redis Cluster, seed 694725173: 24.2–25.3 s while Redis was away (23.4–25.5 s).
        let stays = [(0.0, 2.9), (3.3, 6.8), (13.4, 16.9), (24.2, 25.3), (31.5, 34.8)];
        let hooks = [(0.0, true), (9.9, false), (13.4, true), (21.5, false), (31.5, true), (38.8, false)];
        assert_eq!(check(&stays, &hooks, &[(23.4, 25.5)]), Vec::<String>::new());
        assert!(!check(&stays, &hooks, &[]).is_empty(), "lost, had Redis been there");
        // Seen, its webhooks are right too.
        let seen = [(0.0, true), (9.9, false), (13.4, true), (21.5, false), (25.6, true), (28.4, false)];
        let seen: Vec<_> = seen.into_iter().chain([(31.5, true), (38.8, false)]).collect();
        assert_eq!(check(&stays, &seen, &[(23.4, 25.5)]), Vec::<String>::new());
        // A stay that began after Redis was back counts: its flap partner is no return.
        let flap = [(19.0, 22.3), (28.3, 29.5), (29.7, 32.6)];
        let hooks = [(19.0, true), (25.3, false), (28.4, true), (35.6, false)];
        assert_eq!(check(&flap, &hooks, &[(27.5, 27.9)]), Vec::<String>::new());
    }
}
