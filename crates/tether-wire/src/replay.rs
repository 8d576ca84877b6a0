//! The replay window: recent lines sent toward the client, kept for resume.
//!
//! # Why
//!
//! SPEC 4, *Replay window*: lines the gateway has "sent" may still sit in
//! socket buffers when the connection drops, so it keeps the most recent
//! lines sent toward the client, up to `replay_window` bytes (LFs included),
//! and replays those after the client's count on resume. The newest line is
//! always held, even when it alone exceeds the window, and the window never
//! blocks the worker: pushing only ever evicts.
//!
//! With `S` the lines sent ([`ReplayWindow::sent`]) and `o` the oldest line
//! held ([`ReplayWindow::oldest`], `S + 1` when none is), a resume with count
//! `c` succeeds if and only if `o - 1 <= c <= S`
//! ([`ReplayWindow::can_resume`]); otherwise the answer is `410` (WebSocket
//! 4410), never a silent gap. WebSocket acks ([`ReplayWindow::ack`]) let the
//! window drop lines the client has confirmed.
//!
//! The same structure serves the client library as its resend buffer for
//! lines it sent toward the gateway, resumed from the gateway's
//! `Session-Received` count.
//!
//! # Memory
//!
//! Lines are held as [`Bytes`], zero-copy. [`ReplayWindow::held_bytes`]
//! counts line bytes as the SPEC does; the real footprint adds one
//! `Bytes` handle per held line (32 bytes on 64-bit targets) in a `VecDeque`,
//! and lines split from a read buffer keep that buffer's allocation alive.
//! Because the window holds a contiguous run of recent lines, the allocations
//! it pins cover at most the window plus one read chunk at either end. The
//! deque's capacity is released when the window empties, and reduced when it
//! falls to a quarter, so a burst does not leave a large idle allocation.

use std::collections::VecDeque;

use bytes::Bytes;

/// Smallest deque capacity worth shrinking from.
const MIN_SHRINK_CAPACITY: usize = 64;

/// The most recent lines sent toward the peer, up to `cap` bytes (SPEC 4).
#[derive(Debug, Default)]
pub struct ReplayWindow {
    lines: VecDeque<Bytes>,
    cap: usize,
    held: usize,
    sent: u64,
}

impl ReplayWindow {
    /// An empty window of `cap` bytes (`replay_window`). It allocates nothing
    /// until a line is pushed.
    pub fn new(cap: usize) -> ReplayWindow {
        ReplayWindow {
            lines: VecDeque::new(),
            cap,
            held: 0,
            sent: 0,
        }
    }

    /// The byte cap given to [`ReplayWindow::new`].
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Records `line` (LF included) as sent: `S` grows by one, and the oldest
    /// lines are dropped while the window is over its cap, keeping at least
    /// this newest one. Amortised O(1); never blocks.
    pub fn push(&mut self, line: Bytes) {
        self.sent += 1;
        self.held += line.len();
        self.lines.push_back(line);
        while self.held > self.cap && self.lines.len() > 1 {
            self.pop_oldest();
        }
        self.release_spare();
    }

    /// `S`: lines sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// `o`: the number of the oldest line held; `S + 1` when none is.
    pub fn oldest(&self) -> u64 {
        self.sent + 1 - self.lines.len() as u64
    }

    /// Whether a peer that has received `c` lines can be resumed:
    /// `o - 1 <= c <= S`.
    pub fn can_resume(&self, c: u64) -> bool {
        self.oldest() - 1 <= c && c <= self.sent
    }

    /// Lines `c + 1 ..= S`, in order, to be sent again on resume.
    ///
    /// Only meaningful when [`can_resume`](ReplayWindow::can_resume)`(c)`;
    /// otherwise it yields nothing (and panics in debug builds): check first,
    /// or use [`try_replay_after`](ReplayWindow::try_replay_after).
    pub fn replay_after(&self, c: u64) -> impl ExactSizeIterator<Item = &Bytes> + '_ {
        debug_assert!(self.can_resume(c), "replay_after({c}) outside the window");
        let start = if self.can_resume(c) {
            (c - (self.oldest() - 1)) as usize
        } else {
            self.lines.len()
        };
        self.lines.range(start..)
    }

    /// Lines `c + 1 ..= S` if a peer at count `c` can be resumed; `None`
    /// when it cannot (answer `410` / 4410).
    pub fn try_replay_after(&self, c: u64) -> Option<impl ExactSizeIterator<Item = &Bytes> + '_> {
        self.can_resume(c).then(|| self.replay_after(c))
    }

    /// The peer has received lines up to `n`: drops them. An `n` beyond `S`
    /// drops everything held (the caller may treat it as a protocol error).
    pub fn ack(&mut self, n: u64) {
        while !self.lines.is_empty() && self.oldest() <= n {
            self.pop_oldest();
        }
        self.release_spare();
    }

    /// Bytes of the lines held (LFs included).
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// Number of lines held.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether no line is held.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    fn pop_oldest(&mut self) {
        if let Some(line) = self.lines.pop_front() {
            self.held -= line.len();
        }
    }

    /// Frees the deque when empty; halves it to twice its length once it is
    /// under a quarter full (amortised O(1): at least `len/2` pops happen
    /// between two shrinks of cost `len`).
    fn release_spare(&mut self) {
        let (len, capacity) = (self.lines.len(), self.lines.capacity());
        if len == 0 {
            if capacity != 0 {
                self.lines = VecDeque::new();
            }
        } else if capacity > MIN_SHRINK_CAPACITY && capacity / 4 > len {
            self.lines.shrink_to(len * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn replay(w: &ReplayWindow, c: u64) -> Vec<Bytes> {
        w.replay_after(c).cloned().collect()
    }

    #[test]
    fn empty_window() {
        let w = ReplayWindow::new(10);
        assert_eq!(w.sent(), 0);
        assert_eq!(w.oldest(), 1);
        assert!(w.can_resume(0));
        assert!(!w.can_resume(1));
        assert_eq!(w.replay_after(0).len(), 0);
        assert!(w.try_replay_after(1).is_none());
        assert_eq!(w.held_bytes(), 0);
    }

    #[test]
    fn holds_up_to_cap_bytes() {
        let mut w = ReplayWindow::new(6);
        w.push(line("a\n"));
        w.push(line("b\n"));
        w.push(line("c\n"));
        assert_eq!((w.sent(), w.oldest(), w.held_bytes()), (3, 1, 6));
        w.push(line("d\n"));
        assert_eq!((w.sent(), w.oldest(), w.held_bytes()), (4, 2, 6));
        assert!(!w.can_resume(0));
        assert!(w.can_resume(1));
        assert!(w.can_resume(4));
        assert!(!w.can_resume(5));
        assert_eq!(replay(&w, 1), vec![line("b\n"), line("c\n"), line("d\n")]);
        assert_eq!(replay(&w, 3), vec![line("d\n")]);
        assert_eq!(replay(&w, 4), Vec::<Bytes>::new());
    }

    #[test]
    fn newest_line_always_held() {
        let mut w = ReplayWindow::new(3);
        w.push(line("a\n"));
        w.push(line("toolong\n"));
        assert_eq!(
            (w.sent(), w.oldest(), w.held_bytes(), w.len()),
            (2, 2, 8, 1)
        );
        assert!(w.can_resume(1));
        assert_eq!(replay(&w, 1), vec![line("toolong\n")]);
        w.push(line("b\n"));
        assert_eq!((w.oldest(), w.held_bytes()), (3, 2));
        assert!(!w.can_resume(1));

        let mut w = ReplayWindow::new(0);
        w.push(line("x\n"));
        assert_eq!(w.len(), 1);
        w.push(line("y\n"));
        assert_eq!(replay(&w, 1), vec![line("y\n")]);
    }

    #[test]
    fn ack_drops_and_releases() {
        let mut w = ReplayWindow::new(100);
        for s in ["a\n", "b\n", "c\n"] {
            w.push(line(s));
        }
        w.ack(0);
        assert_eq!(w.oldest(), 1);
        w.ack(2);
        assert_eq!((w.oldest(), w.len(), w.held_bytes()), (3, 1, 2));
        assert!(!w.can_resume(1));
        assert!(w.can_resume(2));
        w.ack(1);
        assert_eq!(w.oldest(), 3);
        w.ack(3);
        assert!(w.is_empty());
        assert_eq!((w.oldest(), w.held_bytes()), (4, 0));
        assert_eq!(w.lines.capacity(), 0);
        assert!(w.can_resume(3));
        w.push(line("d\n"));
        w.ack(99);
        assert_eq!((w.sent(), w.oldest()), (4, 5));
    }

    #[test]
    fn capacity_shrinks_after_burst() {
        let mut w = ReplayWindow::new(10_000);
        for _ in 0..5_000 {
            w.push(line("\n"));
        }
        assert!(w.lines.capacity() >= 5_000);
        w.ack(4_990);
        assert!(w.lines.capacity() <= MIN_SHRINK_CAPACITY.max(40));
        assert_eq!(replay(&w, 4_990).len(), 10);
    }
}
