//! A socket's outbound side as others see it: a bounded queue of pre-serialized frames and a
//! one-shot close signal. The registry holds an [`Outbox`] per subscription; the connection task
//! holds the receiving end, an [`Inbox`].
//!
//! The queue is a `VecDeque` behind a mutex rather than a tokio `mpsc` channel: an idle socket's
//! queue then costs nothing, where a channel allocates its first 32-slot block (~1 KB) and its
//! cache-padded state up front, for every socket (docs/benchmarks.md, idle memory).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

use crate::protocol::CloseReason;

/// Sender half of a socket: cheap to clone (one pointer: the registry holds one per
/// subscription), never blocks.
#[derive(Clone, Debug)]
pub struct Outbox(Arc<Shared>);

/// What the senders and the connection task share: one allocation per socket.
#[derive(Debug)]
struct Shared {
    socket_id: Arc<str>,
    /// The frames waiting for the socket.
    frames: Mutex<Frames>,
    /// Woken when a frame is queued (a permit is kept when the reader is not waiting).
    ready: Notify,
    capacity: usize,
    /// Why the socket is to be closed; the first reason wins.
    close: OnceLock<CloseReason>,
    /// Woken when a close is requested.
    closing: Notify,
}

#[derive(Debug, Default)]
struct Frames {
    queued: VecDeque<Utf8Bytes>,
    /// The connection task is gone: nothing more is queued.
    closed: bool,
}

impl Shared {
    fn frames(&self) -> std::sync::MutexGuard<'_, Frames> {
        // A panic while holding this lock leaves a plain VecDeque: still usable.
        self.frames.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Receiving half, held by the connection task.
#[derive(Debug)]
pub struct Inbox {
    shared: Arc<Shared>,
}

/// Capacity an emptied queue may keep; a burst's larger buffer is given back.
const KEEP_CAPACITY: usize = 16;

impl Inbox {
    /// The next frame, waiting for one if none is queued.
    pub async fn recv(&mut self) -> Option<Utf8Bytes> {
        loop {
            if let Some(frame) = self.try_recv() {
                return Some(frame);
            }
            self.shared.ready.notified().await;
        }
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<Utf8Bytes> {
        let mut frames = self.shared.frames();
        let frame = frames.queued.pop_front();
        if frame.is_none() && frames.queued.capacity() > KEEP_CAPACITY {
            frames.queued.shrink_to(KEEP_CAPACITY);
        }
        frame
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut frames = self.shared.frames();
        frames.closed = true;
        frames.queued = VecDeque::new();
    }
}

/// What became of a frame handed to [`Outbox::deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the socket.
    Queued,
    /// The queue was full: the socket is being closed with 4100 and the frame dropped.
    SlowConsumer,
    /// The socket is already gone.
    Closed,
}

impl Outbox {
    /// A new outbox with room for `capacity` frames, and the receiver for the connection task.
    pub fn new(socket_id: Arc<str>, capacity: usize) -> (Self, Inbox) {
        let shared = Arc::new(Shared {
            socket_id,
            frames: Mutex::new(Frames::default()),
            ready: Notify::new(),
            capacity: capacity.max(1),
            close: OnceLock::new(),
            closing: Notify::new(),
        });
        (Outbox(shared.clone()), Inbox { shared })
    }

    /// The socket id this outbox writes to.
    pub fn socket_id(&self) -> &Arc<str> {
        &self.0.socket_id
    }

    /// Queues a shared frame without waiting. A full queue means the client does not read fast
    /// enough: it is disconnected rather than allowed to grow server memory.
    pub fn deliver(&self, frame: &Utf8Bytes) -> Delivery {
        {
            let mut frames = self.0.frames();
            if frames.closed {
                return Delivery::Closed;
            }
            if frames.queued.len() >= self.0.capacity {
                drop(frames);
                self.close(CloseReason::OverCapacity);
                return Delivery::SlowConsumer;
            }
            frames.queued.push_back(frame.clone());
        }
        self.0.ready.notify_one();
        Delivery::Queued
    }

    /// Asks the connection task to close the socket with `reason` (terminate, app disabled,
    /// shutdown, a slow consumer); later requests are ignored.
    pub fn close(&self, reason: CloseReason) {
        if self.0.close.set(reason).is_ok() {
            // notify_one keeps a permit when the task is not waiting yet, so no request is lost.
            self.0.closing.notify_one();
        }
    }

    /// Resolves with the reason once a close was requested (for the connection task).
    pub async fn requested(&self) -> CloseReason {
        loop {
            if let Some(reason) = self.0.close.get() {
                return *reason;
            }
            self.0.closing.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_closes_the_socket_with_over_capacity() {
        let (outbox, mut rx) = Outbox::new("1.1".into(), 2);
        let frame = Utf8Bytes::from_static("x");
        assert_eq!(outbox.deliver(&frame), Delivery::Queued);
        assert_eq!(outbox.deliver(&frame), Delivery::Queued);
        assert_eq!(outbox.deliver(&frame), Delivery::SlowConsumer);
        assert_eq!(outbox.requested().await, CloseReason::OverCapacity);
        assert_eq!(rx.recv().await.as_deref(), Some("x"));
        drop(rx);
        assert_eq!(outbox.deliver(&frame), Delivery::Closed);
    }

    #[tokio::test]
    async fn frames_arrive_in_order_and_a_waiting_reader_is_woken() {
        let (outbox, mut rx) = Outbox::new("1.1".into(), 100);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 50 {
                got.push(rx.recv().await.expect("frame").to_string());
            }
            (got, rx.try_recv())
        });
        for i in 0..50 {
            assert_eq!(outbox.deliver(&Utf8Bytes::from(i.to_string())), Delivery::Queued);
            if i % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let (got, rest) = reader.await.expect("reader");
        assert_eq!(got, (0..50).map(|i| i.to_string()).collect::<Vec<_>>());
        assert_eq!(rest, None);
    }

    #[test]
    fn an_emptied_queue_gives_its_burst_buffer_back() {
        let (outbox, mut rx) = Outbox::new("1.1".into(), 1000);
        for _ in 0..500 {
            outbox.deliver(&Utf8Bytes::from_static("x"));
        }
        assert!(outbox.0.frames().queued.capacity() >= 500);
        while rx.try_recv().is_some() {}
        assert!(outbox.0.frames().queued.capacity() <= KEEP_CAPACITY);
    }

    #[tokio::test]
    async fn the_first_close_reason_wins() {
        let (outbox, _rx) = Outbox::new("1.1".into(), 1);
        outbox.close(CloseReason::Reconnect);
        outbox.close(CloseReason::Unauthorized);
        assert_eq!(outbox.requested().await, CloseReason::Reconnect);
    }
}
