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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    use tokio::sync::oneshot;

    use super::*;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn end() -> (Command, oneshot::Receiver<()>) {
        let (reply, done) = oneshot::channel();
        (Command::End { reply }, done)
    }

    #[test]
    fn commands_come_in_order_and_wake_the_task() {
        let mailbox = Mailbox::default();
        let woken = Arc::new(Count::default());
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(mailbox.poll_recv(&mut cx).is_pending());
        assert!(mailbox.send(Command::Shutdown).is_ok());
        assert!(mailbox
            .send(Command::Fail(super::super::end::EndReason::Admin))
            .is_ok());
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            1,
            "woken once, by the first"
        );
        assert!(matches!(
            mailbox.poll_recv(&mut cx),
            Poll::Ready(Command::Shutdown)
        ));
        assert!(matches!(
            mailbox.poll_recv(&mut cx),
            Poll::Ready(Command::Fail(_))
        ));
        assert!(mailbox.poll_recv(&mut cx).is_pending());
    }

    #[test]
    fn a_flood_is_refused_and_a_closed_mailbox_drops_what_it_held() {
        let mailbox = Mailbox::default();
        let mut waiting = Vec::new();
        for _ in 0..MAX_QUEUED {
            let (cmd, done) = end();
            assert!(mailbox.send(cmd).is_ok());
            waiting.push(done);
        }
        assert!(mailbox.send(end().0).is_err(), "over MAX_QUEUED");
        assert!(!mailbox.is_closed());
        mailbox.close();
        assert!(mailbox.is_closed());
        assert!(mailbox.send(end().0).is_err(), "closed");
        for mut done in waiting {
            assert!(done.try_recv().is_err(), "the sender sees the session gone");
        }
    }
}
