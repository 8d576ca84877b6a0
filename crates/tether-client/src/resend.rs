//! The client's resend buffer: every line sent that the gateway has not
//! acknowledged yet.
//!
//! The native transport acknowledges client lines only in the answer to a
//! resume (`Session-Received: n`, SPEC 4): lines `1..=n` were delivered and
//! are dropped, the others are resent in order on the new connection. Without
//! resumes nothing is acknowledged, so the buffer is capped by
//! `max_unacked_bytes`.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::ClientError;

#[derive(Debug)]
pub(crate) struct ResendBuffer {
    lines: VecDeque<Bytes>,
    /// Lines the gateway has acknowledged (all of them dropped from `lines`).
    acked: u64,
    bytes: usize,
    max_bytes: usize,
}

impl ResendBuffer {
    pub(crate) fn new(max_bytes: usize) -> Self {
        ResendBuffer {
            lines: VecDeque::new(),
            acked: 0,
            bytes: 0,
            max_bytes,
        }
    }

    /// A buffer for a session taken over from another client: the gateway
    /// already delivered `n` lines that this client never held.
    pub(crate) fn after(max_bytes: usize, n: u64) -> Self {
        ResendBuffer {
            acked: n,
            ..ResendBuffer::new(max_bytes)
        }
    }

    /// Lines sent so far (acknowledged or not).
    pub(crate) fn sent(&self) -> u64 {
        self.acked + self.lines.len() as u64
    }

    /// Lines the gateway has acknowledged.
    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    /// Bytes of unacknowledged lines.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Keeps a line (LF included) that is about to be sent.
    pub(crate) fn push(&mut self, line: Bytes) -> Result<(), ClientError> {
        if self.bytes + line.len() > self.max_bytes {
            return Err(ClientError::ResendBufferFull {
                unacked: self.bytes,
                max: self.max_bytes,
            });
        }
        self.bytes += line.len();
        self.lines.push_back(line);
        Ok(())
    }

    /// The gateway delivered `n` lines: drop them. A count below an earlier
    /// one or above what was sent is a protocol error.
    pub(crate) fn ack(&mut self, n: u64) -> Result<(), ClientError> {
        if n < self.acked || n > self.sent() {
            return Err(ClientError::Protocol(format!(
                "gateway says it received {n} lines; {} were acknowledged and {} sent",
                self.acked,
                self.sent()
            )));
        }
        while self.acked < n {
            if let Some(line) = self.lines.pop_front() {
                self.bytes -= line.len();
            }
            self.acked += 1;
        }
        Ok(())
    }

    /// The unacknowledged lines, oldest first.
    pub(crate) fn unacked(&self) -> impl Iterator<Item = &Bytes> {
        self.lines.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_drop_and_bound() {
        let mut b = ResendBuffer::new(10);
        b.push(Bytes::from_static(b"ab\n")).unwrap();
        b.push(Bytes::from_static(b"cd\n")).unwrap();
        b.push(Bytes::from_static(b"ef\n")).unwrap();
        assert_eq!((b.sent(), b.bytes()), (3, 9));
        assert!(matches!(
            b.push(Bytes::from_static(b"gh\n")),
            Err(ClientError::ResendBufferFull {
                unacked: 9,
                max: 10
            })
        ));
        b.ack(2).unwrap();
        assert_eq!((b.acked(), b.bytes()), (2, 3));
        assert_eq!(
            b.unacked().collect::<Vec<_>>(),
            [&Bytes::from_static(b"ef\n")]
        );
        b.push(Bytes::from_static(b"gh\n")).unwrap();
        assert!(b.ack(1).is_err(), "counts never go back");
        assert!(b.ack(5).is_err(), "cannot ack unsent lines");
        b.ack(4).unwrap();
        assert!(b.is_empty());
        assert_eq!((b.sent(), b.bytes()), (4, 0));
    }
}
