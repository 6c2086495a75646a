//! A socket's outbound side as others see it: a bounded queue of pre-serialized frames and a
//! one-shot close signal. The registry holds an [`Outbox`] per subscription; the connection task
//! holds the receiving end.

use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, Notify};

use crate::protocol::CloseReason;

/// Sender half of a socket: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct Outbox {
    socket_id: Arc<str>,
    tx: mpsc::Sender<Utf8Bytes>,
    control: Arc<Control>,
}

/// Asks a connection task to close its socket with a reason. The first reason wins.
#[derive(Debug, Default)]
pub struct Control {
    reason: OnceLock<CloseReason>,
    notify: Notify,
}

impl Control {
    /// Requests a close; later requests are ignored.
    pub fn close(&self, reason: CloseReason) {
        if self.reason.set(reason).is_ok() {
            // notify_one keeps a permit when the task is not waiting yet, so no request is lost.
            self.notify.notify_one();
        }
    }

    /// Resolves with the reason once a close was requested.
    pub async fn requested(&self) -> CloseReason {
        loop {
            if let Some(reason) = self.reason.get() {
                return *reason;
            }
            self.notify.notified().await;
        }
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
    pub fn new(socket_id: Arc<str>, capacity: usize) -> (Self, mpsc::Receiver<Utf8Bytes>, Arc<Control>) {
        let (tx, rx) = mpsc::channel(capacity);
        let control = Arc::new(Control::default());
        (Outbox { socket_id, tx, control: control.clone() }, rx, control)
    }

    /// The socket id this outbox writes to.
    pub fn socket_id(&self) -> &Arc<str> {
        &self.socket_id
    }

    /// Queues a shared frame without waiting. A full queue means the client does not read fast
    /// enough: it is disconnected rather than allowed to grow server memory.
    pub fn deliver(&self, frame: &Utf8Bytes) -> Delivery {
        match self.tx.try_send(frame.clone()) {
            Ok(()) => Delivery::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.control.close(CloseReason::OverCapacity);
                Delivery::SlowConsumer
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Closed,
        }
    }

    /// Closes the socket with `reason` (terminate, app disabled, shutdown).
    pub fn close(&self, reason: CloseReason) {
        self.control.close(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_closes_the_socket_with_over_capacity() {
        let (outbox, mut rx, control) = Outbox::new("1.1".into(), 2);
        let frame = Utf8Bytes::from_static("x");
        assert_eq!(outbox.deliver(&frame), Delivery::Queued);
        assert_eq!(outbox.deliver(&frame), Delivery::Queued);
        assert_eq!(outbox.deliver(&frame), Delivery::SlowConsumer);
        assert_eq!(control.requested().await, CloseReason::OverCapacity);
        assert_eq!(rx.recv().await.as_deref(), Some("x"));
        drop(rx);
        assert_eq!(outbox.deliver(&frame), Delivery::Closed);
    }

    #[tokio::test]
    async fn the_first_close_reason_wins() {
        let (outbox, _rx, control) = Outbox::new("1.1".into(), 1);
        outbox.close(CloseReason::Reconnect);
        outbox.close(CloseReason::Unauthorized);
        assert_eq!(control.requested().await, CloseReason::Reconnect);
    }
}
