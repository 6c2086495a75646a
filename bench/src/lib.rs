//! herald-bench: a load generator for any Pusher-compatible server (host, port and app
//! credentials as arguments), and `herald-baseline`, the least work a Pusher fan-out can do.
//!
//! # Layout
//!
//! | module | owns |
//! | --- | --- |
//! | [`api`] | `api`: the HTTP API under back-to-back triggers: requests/s, latency, CPU per request |
//! | [`stats`] | latency histograms, delivery tallies (lost / duplicated), payload parsing, server RSS and CPU |
//! | [`client`] | sockets, subscriptions with channel auth, the signed publisher |
//! | [`scenarios`] | `connect`, `idle`, `presence` |
//! | [`fanout`] | `fanout`: fixed rate or a ramp to saturation, per-step loss, latency and server CPU |
//! | [`scale`] | `scale`: one cluster holding more sockets than a process may open, from several generator processes (`hold`) |
//! | [`slow`] | `slow`: stalled readers under a busy publisher, with an RSS growth bound |
//! | [`report`] | the human table and the JSON line |
//! | [`baseline`] | the baseline fan-out server |

pub mod api;
pub mod baseline;
pub mod client;
pub mod fanout;
pub mod report;
pub mod scale;
pub mod scenarios;
pub mod slow;
pub mod stats;
