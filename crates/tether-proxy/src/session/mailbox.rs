//! A session task's inbox: resumes, attaches, ends.
//!
//! Not a tokio `mpsc` channel: that allocates a block of 32 slots per
//! channel up front, about a kilobyte that every idle session would carry.
//! Commands are rare (one per request on the session's SessionID), so a
//! small queue behind an uncontended lock, never held across an await, is
//! enough and costs a few dozen bytes.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use super::task::Command;

/// Commands waiting at once beyond which senders are refused: every
/// command comes from a client request, and a flood of them for one
/// session is answered like a session that is gone.
const MAX_QUEUED: usize = 16;

#[derive(Default)]
pub(crate) struct Mailbox {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Command>,
    waker: Option<Waker>,
    closed: bool,
}

impl Mailbox {
    /// Queues a command for the task; gives it back when the session has
    /// ended or too many are waiting.
    pub(crate) fn send(&self, cmd: Command) -> Result<(), Command> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.closed || inner.queue.len() >= MAX_QUEUED {
            return Err(cmd);
        }
        inner.queue.push_back(cmd);
        let waker = inner.waker.take();
        drop(inner);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Command> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cmd) = inner.queue.pop_front() {
            if inner.queue.is_empty() {
                inner.queue = VecDeque::new();
            }
            return Poll::Ready(cmd);
        }
        if !inner
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            inner.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The session ended: later sends fail, and queued commands are
    /// dropped (their senders see the session as gone).
    pub(crate) fn close(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.closed = true;
        let queued = std::mem::take(&mut inner.queue);
        inner.waker = None;
        drop(inner);
        drop(queued);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed
    }
}
