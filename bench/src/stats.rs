//! Measurement logic: latency histograms, delivery tallies (lost and duplicated messages), the
//! payload that carries a sequence number and a send time, and the server's RSS and CPU time.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Latencies in microseconds, 1 µs to 60 s, 3 significant digits.
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Latency {
    /// Records one latency (clamped into the histogram's range).
    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// The recorded samples as (µs, count) pairs: how a generator process hands its histogram
    /// to the one that merges them ([`Latency::from_recorded`]).
    pub fn recorded(&self) -> Vec<(u64, u64)> {
        self.0.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
    }

    /// A histogram of (µs, count) pairs from [`Latency::recorded`].
    pub fn from_recorded(pairs: &[(u64, u64)]) -> Latency {
        let mut l = Latency::default();
        for &(us, n) in pairs {
            l.0.saturating_record_n(us.max(1), n);
        }
        l
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at `q` (0.0..=1.0), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Latency histograms many reader tasks share: client `id` records into shard `id % shards`.
/// One histogram per socket would cost about 140 KB each (1 µs to 60 s at 3 digits): with tens
/// of thousands of sockets, allocating, zeroing and merging them kept a generator busy for
/// seconds, and it was the generator that got measured.
pub struct Latencies(Vec<std::sync::Mutex<Latency>>);

impl Latencies {
    /// `shards` histograms (at least one).
    pub fn new(shards: usize) -> Self {
        Latencies((0..shards.max(1)).map(|_| std::sync::Mutex::default()).collect())
    }

    /// Records a latency of client `id`.
    pub fn record_us(&self, id: usize, us: u64) {
        let shard = &self.0[id % self.0.len()];
        shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner).record_us(us);
    }

    /// Every shard's samples so far, each shard starting again empty.
    pub fn take(&self) -> Vec<Latency> {
        self.0
            .iter()
            .map(|s| std::mem::take(&mut *s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)))
            .collect()
    }

    /// [`Latencies::take`], merged into one.
    pub fn take_merged(&self) -> Latency {
        let mut all = Latency::default();
        for l in self.take() {
            all.merge(&l);
        }
        all
    }
}

/// How many times each published message arrived, against how many it should have.
pub struct Tally {
    seen: Vec<AtomicU32>,
    /// Deliveries due per message, by channel: message `seq` goes to channel `seq % len`.
    expected: Vec<u32>,
}

/// What a tally found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TallySummary {
    /// Deliveries counted.
    pub delivered: u64,
    /// Deliveries that should have happened and did not.
    pub lost: u64,
    /// Deliveries beyond the expected count.
    pub duplicated: u64,
}

impl Tally {
    /// A tally for `messages` messages, each due to `expected_per_message` subscribers.
    pub fn new(messages: usize, expected_per_message: u32) -> Self {
        Tally::by_channel(messages, vec![expected_per_message])
    }

    /// A tally for `messages` messages published round-robin over `expected.len()` channels,
    /// each due to `expected[channel]` subscribers (a generator process holding part of a
    /// channel's subscribers expects only its part).
    pub fn by_channel(messages: usize, expected: Vec<u32>) -> Self {
        let expected = if expected.is_empty() { vec![0] } else { expected };
        Tally { seen: (0..messages).map(|_| AtomicU32::new(0)).collect(), expected }
    }

    /// Counts one delivery of message `seq` (unknown sequence numbers are ignored).
    pub fn record(&self, seq: u64) {
        if let Some(slot) = usize::try_from(seq).ok().and_then(|s| self.seen.get(s)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Subscribers each message is due to (on the first channel).
    pub fn expected_per_message(&self) -> u32 {
        self.expected[0]
    }

    /// Totals, counting only the first `published` messages (the rest were never sent).
    pub fn summary(&self, published: usize) -> TallySummary {
        self.summary_of(0..published)
    }

    /// Totals over the messages numbered `seqs`.
    pub fn summary_of(&self, seqs: std::ops::Range<usize>) -> TallySummary {
        let mut s = TallySummary { delivered: 0, lost: 0, duplicated: 0 };
        for (seq, slot) in self.seen.iter().enumerate().take(seqs.end).skip(seqs.start) {
            let n = slot.load(Ordering::Relaxed);
            let due = self.expected[seq % self.expected.len()];
            s.delivered += u64::from(n);
            s.lost += u64::from(due.saturating_sub(n));
            s.duplicated += u64::from(n.saturating_sub(due));
        }
        s
    }
}

/// Microseconds since the Unix epoch (publisher and subscribers share this machine's clock).
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The event data a publisher sends: sequence number and send time.
pub fn payload(seq: u64, sent_us: u64) -> String {
    format!("{{\"s\":{seq},\"t\":{sent_us}}}")
}

/// [`payload`] padded with a filler field to at least `size` bytes.
pub fn padded_payload(seq: u64, sent_us: u64, size: usize) -> String {
    let mut p = payload(seq, sent_us);
    let fill = size.saturating_sub(p.len() + 7);
    if fill > 0 {
        p.pop();
        p.push_str(",\"p\":\"");
        p.extend(std::iter::repeat_n('x', fill));
        p.push_str("\"}");
    }
    p
}

/// Finds the sequence number and send time in a delivered frame, without a JSON parse (the
/// generator must never be the bottleneck). The data is double-encoded, so the keys appear as
/// `\"s\":` and `\"t\":`.
pub fn parse_delivery(frame: &str) -> Option<(u64, u64)> {
    fn number_after(frame: &str, key: &str) -> Option<u64> {
        let start = frame.find(key)? + key.len();
        let digits: &str = &frame[start..];
        let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
        digits[..end].parse().ok()
    }
    Some((number_after(frame, "\\\"s\\\":")?, number_after(frame, "\\\"t\\\":")?))
}

/// The server's processes (several for a cluster): their RSS and CPU time are summed.
#[derive(Debug, Clone, Default)]
pub struct Pids(pub Vec<u32>);

impl Pids {
    /// Summed RSS in bytes; `None` without pids or when one cannot be read.
    pub fn rss(&self) -> Option<u64> {
        if self.0.is_empty() {
            return None;
        }
        self.0.iter().map(|p| rss_bytes(*p)).sum()
    }

    /// Summed CPU seconds; `None` without pids or when one cannot be read.
    pub fn cpu(&self) -> Option<f64> {
        self.cpu_split().map(|(user, system)| user + system)
    }

    /// Summed user and system CPU seconds.
    pub fn cpu_split(&self) -> Option<(f64, f64)> {
        if self.0.is_empty() {
            return None;
        }
        let split: Option<Vec<(f64, f64)>> = self.0.iter().map(|p| cpu_split(*p)).collect();
        split.map(|v| v.iter().fold((0.0, 0.0), |(u, s), (pu, ps)| (u + pu, s + ps)))
    }
}

/// Resident set size of a process in bytes (from `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User + system CPU seconds a process has used (from `/proc/PID/stat`).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_split(pid).map(|(user, system)| user + system)
}

/// User and system (kernel) CPU seconds a process has used, apart.
pub fn cpu_split(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let (user, system): (u64, u64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| (user as f64 / per_second as f64, system as f64 / per_second as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_recorded_latencies() {
        let mut l = Latency::default();
        for us in 1..=1000 {
            l.record_us(us * 1000);
        }
        assert_eq!(l.count(), 1000);
        assert!((l.quantile_ms(0.5) - 500.0).abs() < 1.0, "{}", l.quantile_ms(0.5));
        assert!((l.quantile_ms(0.99) - 990.0).abs() < 2.0, "{}", l.quantile_ms(0.99));
        let mut other = Latency::default();
        other.record_us(5_000_000);
        l.merge(&other);
        assert_eq!(l.count(), 1001);
        assert!(l.quantile_ms(1.0) >= 4990.0);
        assert_eq!(Latency::default().quantile_ms(0.99), 0.0);
        let copy = Latency::from_recorded(&l.recorded());
        assert_eq!(copy.count(), l.count());
        assert_eq!(copy.quantile_ms(0.99), l.quantile_ms(0.99));
        assert_eq!(copy.quantile_ms(1.0), l.quantile_ms(1.0));
    }

    #[test]
    fn shared_histograms_keep_each_clients_samples_in_its_shard_until_taken() {
        let l = Latencies::new(3);
        l.record_us(0, 1_000);
        l.record_us(3, 2_000);
        l.record_us(4, 9_000);
        let shards = l.take();
        assert_eq!(shards.iter().map(Latency::count).collect::<Vec<_>>(), [2, 1, 0]);
        assert_eq!(l.take_merged().count(), 0, "taken: empty again");
        l.record_us(5, 1_000);
        assert_eq!(l.take_merged().count(), 1);
    }

    #[test]
    fn a_tally_counts_lost_and_duplicated_deliveries() {
        let t = Tally::new(4, 2);
        for seq in [0, 0, 1, 2, 2, 2, 99] {
            t.record(seq);
        }
        // message 0: 2 (ok), 1: 1 (1 lost), 2: 3 (1 duplicate), 3: 0 (2 lost, but published?)
        assert_eq!(t.summary(4), TallySummary { delivered: 6, lost: 3, duplicated: 1 });
        assert_eq!(t.summary(3), TallySummary { delivered: 6, lost: 1, duplicated: 1 });
        assert_eq!(t.summary_of(2..4), TallySummary { delivered: 3, lost: 2, duplicated: 1 });
        // Two channels: even messages due to 2 subscribers, odd ones to 1.
        let t = Tally::by_channel(4, vec![2, 1]);
        for seq in [0, 0, 1, 1, 2, 3] {
            t.record(seq);
        }
        assert_eq!(t.summary(4), TallySummary { delivered: 6, lost: 1, duplicated: 1 });
    }

    #[test]
    fn deliveries_are_parsed_from_the_double_encoded_frame() {
        let frame = format!(
            "{{\"event\":\"bench\",\"channel\":\"c\",\"data\":{}}}",
            serde_json::to_string(&payload(42, 1_700_000_000_000_000)).unwrap()
        );
        assert_eq!(parse_delivery(&frame), Some((42, 1_700_000_000_000_000)));
        assert_eq!(parse_delivery("{\"event\":\"pusher:pong\"}"), None);
    }

    #[test]
    fn padded_payloads_have_the_size_asked_and_still_parse() {
        let p = padded_payload(7, 1_000, 2048);
        assert_eq!(p.len(), 2048);
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["s"], 7);
        let frame = format!("{{\"data\":{}}}", serde_json::to_string(&p).unwrap());
        assert_eq!(parse_delivery(&frame), Some((7, 1_000)));
        assert_eq!(padded_payload(7, 1_000, 3), payload(7, 1_000));
    }

    #[test]
    fn this_process_has_an_rss_and_cpu_time() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 1024 * 1024);
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        let (user, system) = cpu_split(me).unwrap();
        assert!(user >= 0.0 && system >= 0.0);
        let twice = Pids(vec![me, me]);
        assert!(twice.rss().unwrap() >= 2 * 1024 * 1024);
        assert_eq!(Pids::default().rss(), None);
        assert_eq!(Pids(vec![me, u32::MAX]).cpu(), None, "a pid that does not exist");
    }
}
