//! The public listener's guards, below HTTP: at most `max_connections_per_ip` open TCP
//! connections from one address (a connection flood from one host cannot starve the others),
//! and a deadline for a new connection's first request head (a slowloris client that trickles
//! its headers, or opens a socket and sends nothing, is cut off).
//!
//! Behind a proxy every client shares the proxy's address: leave the per-IP limit off there
//! (the default) and limit at the proxy.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

use crate::metrics::RefusedLabels;

/// The guards' settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guards {
    /// Open connections allowed from one IP address; `None` is unlimited.
    pub max_connections_per_ip: Option<usize>,
    /// Time a new connection gets to send its first complete request head.
    pub handshake_timeout: Duration,
}

type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A `TcpListener` that applies [`Guards`] to every connection it accepts.
pub struct GuardedListener {
    inner: TcpListener,
    guards: Guards,
    counts: Counts,
    refused: Family<RefusedLabels, Counter>,
}

impl GuardedListener {
    /// Wraps `inner`; refusals are counted in `refused` (`herald_refused_connections_total`).
    pub fn new(inner: TcpListener, guards: Guards, refused: Family<RefusedLabels, Counter>) -> Self {
        GuardedListener { inner, guards, counts: Counts::default(), refused }
    }
}

/// Releases the connection's slot in the per-IP count when it closes.
struct Slot {
    ip: IpAddr,
    counts: Counts,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let ip = addr.ip();
            {
                let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
                let n = counts.entry(ip).or_insert(0);
                if self.guards.max_connections_per_ip.is_some_and(|max| *n >= max) {
                    drop(counts);
                    self.refused.get_or_create(&RefusedLabels { reason: "per_ip_limit" }).inc();
                    tracing::debug!(%ip, "connection refused: per-IP limit");
                    drop(stream);
                    continue;
                }
                *n += 1;
            }
            let slot = Slot { ip, counts: self.counts.clone() };
            let deadline = Box::pin(tokio::time::sleep(self.guards.handshake_timeout));
            let timed_out =
                self.refused.get_or_create(&RefusedLabels { reason: "handshake_timeout" }).clone();
            let io = GuardedStream {
                inner: stream,
                _slot: slot,
                head: HeadWatch::Waiting { deadline, tail: 0 },
                timed_out,
            };
            return (io, addr);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Whether the first request head has arrived.
enum HeadWatch {
    /// Not yet: the deadline runs; `tail` holds how many bytes of `\r\n\r\n` ended the last read.
    Waiting { deadline: Pin<Box<Sleep>>, tail: usize },
    /// Arrived (or the connection timed out and was failed once).
    Done,
}

/// How many bytes of the `\r\n\r\n` terminator are matched after `data`, given `tail` matched
/// before it; 4 means the head is complete.
fn scan_terminator(mut tail: usize, data: &[u8]) -> usize {
    const END: &[u8; 4] = b"\r\n\r\n";
    for &b in data {
        tail = if b == END[tail] {
            tail + 1
        } else if b == b'\r' {
            1
        } else {
            0
        };
        if tail == 4 {
            return 4;
        }
    }
    tail
}

/// An accepted connection under the guards.
pub struct GuardedStream {
    inner: TcpStream,
    _slot: Slot,
    head: HeadWatch,
    timed_out: Counter,
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let HeadWatch::Waiting { deadline, .. } = &mut this.head {
            if deadline.as_mut().poll(cx).is_ready() {
                this.head = HeadWatch::Done;
                this.timed_out.inc();
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no complete request head in time",
                )));
            }
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), HeadWatch::Waiting { tail, .. }) = (&result, &mut this.head) {
            if scan_terminator(*tail, &buf.filled()[before..]) == 4 {
                this.head = HeadWatch::Done;
            } else {
                *tail = scan_terminator(*tail, &buf.filled()[before..]);
            }
        }
        result
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::scan_terminator;

    #[test]
    fn the_head_terminator_is_found_across_reads() {
        assert_eq!(scan_terminator(0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 4);
        let t = scan_terminator(0, b"GET / HTTP/1.1\r\nHost: x\r\n");
        assert_eq!(t, 2);
        assert_eq!(scan_terminator(t, b"\r\n"), 4);
        assert_eq!(scan_terminator(0, b"\r\n\r"), 3);
        assert_eq!(scan_terminator(3, b"x"), 0);
        assert_eq!(scan_terminator(0, b"\r\r\n\r\n"), 4);
    }
}
