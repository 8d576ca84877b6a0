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
//! A client chooses how long the lines it makes the worker write are, so
//! what a session holds must cost its bytes and nothing per line: one
//! `Bytes` handle per line (32 bytes, plus the read buffer it pins) made a
//! window of 1-byte lines cost dozens of times its configured size. Lines
//! are therefore copied into one byte ring per window, a [`LineQueue`], with
//! no index at all: a line is bytes up to and including its only LF
//! (SPEC 2), so the LFs are the index. Finding a line end is a scan, paid
//! once per line on the way out (and over the skipped lines on a resume).
//!
//! The ring grows by doubling up to the configured limit and past it only
//! when one line needs it (then by an eighth at a time), so a full window
//! costs its cap, not up to twice that. It is freed when the queue empties
//! and cut to twice its content once under a quarter full, so a burst does
//! not leave a large idle allocation and an idle session holds none. A
//! resume walks the window one line at a time
//! ([`ReplayWindow::start_replay`]) so that the lines owed to a client are
//! not copied out all at once.

use std::borrow::Cow;
use std::collections::VecDeque;

/// The first allocation of a queue: small, so that a session that buffered
/// a few short lines stays small.
const MIN_CAPACITY: usize = 64;
/// Smallest ring capacity worth shrinking from.
const MIN_SHRINK_CAPACITY: usize = 4 * 1024;

/// Whole lines, oldest first, stored back to back in one byte ring.
///
/// Each line pushed must be a line of SPEC 2: bytes up to and including an
/// LF, with no other LF (the queue finds lines by their LFs; anything else
/// would merge or split lines, and is caught by debug assertions). `limit`
/// is how far the ring grows by doubling: set it to the most the owner lets
/// the queue hold.
#[derive(Debug, Default)]
pub struct LineQueue {
    bytes: VecDeque<u8>,
    lines: usize,
    limit: usize,
}

impl LineQueue {
    /// An empty queue whose ring grows by doubling up to `limit` bytes. It
    /// allocates nothing until a line is pushed.
    pub fn new(limit: usize) -> LineQueue {
        LineQueue {
            bytes: VecDeque::new(),
            lines: 0,
            limit,
        }
    }

    /// The growth limit given to [`LineQueue::new`].
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Number of lines held.
    pub fn len(&self) -> usize {
        self.lines
    }

    /// Whether no line is held.
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// Bytes of the lines held (LFs included).
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Bytes allocated for the ring: what the queue costs beyond its own
    /// few words.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Appends `line` (LF included) after the newest line.
    pub fn push_back(&mut self, line: &[u8]) {
        debug_assert!(is_line(line), "not one LF-terminated line: {line:?}");
        self.reserve(line.len());
        self.bytes.extend(line);
        self.lines += 1;
    }

    /// The oldest line. Borrowed, except for the one line that may wrap
    /// around the end of the ring, which is copied.
    pub fn front(&self) -> Option<Cow<'_, [u8]>> {
        self.iter().next()
    }

    /// Drops the oldest line; its length, `None` when empty.
    pub fn pop_front(&mut self) -> Option<usize> {
        let len = self.pop_front_keep()?;
        self.release_spare();
        Some(len)
    }

    /// Hands the oldest line to `f`, then drops it: one scan for its end
    /// where [`front`](LineQueue::front) then
    /// [`pop_front`](LineQueue::pop_front) would take two.
    pub fn pop_front_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        if self.lines == 0 {
            return None;
        }
        let end = self.line_end(0);
        let r = f(&self.slice(0, end));
        self.bytes.drain(..end);
        self.lines -= 1;
        self.release_spare();
        Some(r)
    }

    /// The lines, oldest first.
    pub fn iter(&self) -> Lines<'_> {
        Lines {
            queue: self,
            pos: 0,
            left: self.lines,
        }
    }

    /// The lines after the `skip` oldest ones (none when `skip >= len`).
    pub fn iter_from(&self, skip: usize) -> Lines<'_> {
        let mut lines = self.iter();
        for _ in 0..skip.min(self.lines) {
            lines.pos = self.line_end(lines.pos);
            lines.left -= 1;
        }
        lines
    }

    /// Drops every line and gives the ring back.
    pub fn clear(&mut self) {
        self.bytes = VecDeque::new();
        self.lines = 0;
    }

    /// [`pop_front`](LineQueue::pop_front) without giving memory back, for
    /// callers that push again at once.
    fn pop_front_keep(&mut self) -> Option<usize> {
        if self.lines == 0 {
            return None;
        }
        let end = self.line_end(0);
        self.bytes.drain(..end);
        self.lines -= 1;
        Some(end)
    }

    /// Makes room for `n` more bytes: doubling (amortised O(1) per byte) up
    /// to `limit`, so that a queue kept at its limit costs its limit and
    /// not up to twice that; past it (one line over the limit), a
    /// growth of an eighth keeps a slow climb amortised too.
    fn reserve(&mut self, n: usize) {
        let (len, cap) = (self.bytes.len(), self.bytes.capacity());
        if cap - len >= n {
            return;
        }
        let need = len + n;
        let grown = if need <= self.limit {
            cap.saturating_mul(2).max(MIN_CAPACITY).min(self.limit)
        } else {
            cap + cap / 8
        };
        self.bytes.reserve_exact(grown.max(need) - len);
    }

    /// Frees the ring when empty; halves it to twice its length once it is
    /// under a quarter full (amortised O(1): at least `len` bytes leave
    /// between two shrinks of cost `len`).
    fn release_spare(&mut self) {
        let (len, cap) = (self.bytes.len(), self.bytes.capacity());
        if len == 0 {
            if cap != 0 {
                self.bytes = VecDeque::new();
            }
        } else if cap > MIN_SHRINK_CAPACITY && cap / 4 > len {
            self.bytes.shrink_to(len * 2);
        }
    }

    /// The position just past the LF of the line starting at `start`. The
    /// end of the ring if there is no LF, which only a broken push
    /// precondition can cause: lines then merge, but nothing panics.
    fn line_end(&self, start: usize) -> usize {
        let (a, b) = self.bytes.as_slices();
        if start < a.len() {
            if let Some(i) = find_lf(&a[start..]) {
                return start + i + 1;
            }
            return find_lf(b).map_or(self.bytes.len(), |i| a.len() + i + 1);
        }
        let off = start - a.len();
        find_lf(&b[off..]).map_or(self.bytes.len(), |i| start + i + 1)
    }

    /// Bytes `start..end` of the ring, copied only if they wrap.
    fn slice(&self, start: usize, end: usize) -> Cow<'_, [u8]> {
        let (a, b) = self.bytes.as_slices();
        let split = a.len();
        if end <= split {
            Cow::Borrowed(&a[start..end])
        } else if start >= split {
            Cow::Borrowed(&b[start - split..end - split])
        } else {
            let mut line = Vec::with_capacity(end - start);
            line.extend_from_slice(&a[start..]);
            line.extend_from_slice(&b[..end - split]);
            Cow::Owned(line)
        }
    }
}

/// The first LF in `bytes`. A scan per chunk without an early exit, which
/// the compiler vectorises (about four times the speed of a plain
/// `position` on long lines), then the exact place in the chunk that has it.
fn find_lf(bytes: &[u8]) -> Option<usize> {
    const CHUNK: usize = 32;
    let mut chunks = bytes.chunks_exact(CHUNK);
    let mut offset = 0;
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |seen, &b| seen | (b == b'\n')) {
            return chunk.iter().position(|&b| b == b'\n').map(|i| offset + i);
        }
        offset += CHUNK;
    }
    let rest = chunks.remainder();
    rest.iter().position(|&b| b == b'\n').map(|i| offset + i)
}

fn is_line(line: &[u8]) -> bool {
    find_lf(line) == Some(line.len().wrapping_sub(1))
}

/// The lines of a [`LineQueue`] (or a [`ReplayWindow`]), oldest first.
#[derive(Debug, Clone)]
pub struct Lines<'a> {
    queue: &'a LineQueue,
    pos: usize,
    left: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = Cow<'a, [u8]>;

    fn next(&mut self) -> Option<Cow<'a, [u8]>> {
        if self.left == 0 {
            return None;
        }
        let end = self.queue.line_end(self.pos);
        let line = self.queue.slice(self.pos, end);
        self.pos = end;
        self.left -= 1;
        Some(line)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Lines<'_> {}

/// `bytes` cut into its LF-terminated lines; `None` if it does not end
/// with one.
pub fn split_lines(bytes: &[u8]) -> Option<impl Iterator<Item = &[u8]>> {
    if !bytes.is_empty() && bytes.last() != Some(&b'\n') {
        return None;
    }
    Some(bytes.split_inclusive(|&b| b == b'\n'))
}

/// The most recent lines sent toward the peer, up to `cap` bytes (SPEC 4).
#[derive(Debug, Default)]
pub struct ReplayWindow {
    lines: LineQueue,
    sent: u64,
    /// A replay under way ([`ReplayWindow::start_replay`]).
    resend: Option<Resend>,
}

/// Where a replay stands: the next line to send again, the last one, and
/// where the next one starts in the ring (kept up to date as lines leave
/// the front, so that each step costs one line, not a scan from the start).
#[derive(Debug, Clone, Copy)]
struct Resend {
    next: u64,
    last: u64,
    offset: usize,
}

impl ReplayWindow {
    /// An empty window of `cap` bytes (`replay_window`). It allocates nothing
    /// until a line is pushed.
    pub fn new(cap: usize) -> ReplayWindow {
        ReplayWindow {
            lines: LineQueue::new(cap),
            sent: 0,
            resend: None,
        }
    }

    /// The byte cap given to [`ReplayWindow::new`].
    pub fn cap(&self) -> usize {
        self.lines.limit()
    }

    /// Records `line` (LF included, no other LF) as sent: `S` grows by
    /// one, and the oldest lines are dropped while the window is over its
    /// cap, keeping at least this newest one. Amortised O(1) per byte;
    /// never blocks.
    pub fn push(&mut self, line: impl AsRef<[u8]>) {
        let line = line.as_ref();
        self.sent += 1;
        // Evicting first keeps the ring within the cap (or the one line).
        while !self.lines.is_empty() && self.lines.bytes() + line.len() > self.cap() {
            self.pop_oldest();
        }
        self.lines.push_back(line);
        self.lines.release_spare();
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
    pub fn replay_after(&self, c: u64) -> Lines<'_> {
        debug_assert!(self.can_resume(c), "replay_after({c}) outside the window");
        let skip = if self.can_resume(c) {
            (c - (self.oldest() - 1)) as usize
        } else {
            self.lines.len()
        };
        self.lines.iter_from(skip)
    }

    /// Lines `c + 1 ..= S` if a peer at count `c` can be resumed; `None`
    /// when it cannot (answer `410` / 4410).
    pub fn try_replay_after(&self, c: u64) -> Option<Lines<'_>> {
        self.can_resume(c).then(|| self.replay_after(c))
    }

    /// The peer has received lines up to `n`: drops them. An `n` beyond `S`
    /// drops everything held (the caller may treat it as a protocol error).
    pub fn ack(&mut self, n: u64) {
        while !self.lines.is_empty() && self.oldest() <= n {
            self.pop_oldest();
        }
        self.lines.release_spare();
    }

    /// Starts replaying lines `c + 1 ..= S` one at a time with
    /// [`next_replay`](ReplayWindow::next_replay), so that the caller can
    /// send them as fast as the peer takes them instead of copying the
    /// whole window at once. `c` is taken into `o - 1 ..= S` (check
    /// [`can_resume`](ReplayWindow::can_resume) first). Lines pushed
    /// meanwhile are not part of the replay; lines acked or evicted
    /// meanwhile are skipped.
    pub fn start_replay(&mut self, c: u64) {
        let c = c.clamp(self.oldest() - 1, self.sent);
        self.resend = (c < self.sent).then(|| Resend {
            next: c + 1,
            last: self.sent,
            offset: self.lines.iter_from((c + 1 - self.oldest()) as usize).pos,
        });
    }

    /// The next line of the replay under way; `None` once it is over.
    pub fn next_replay(&mut self) -> Option<Cow<'_, [u8]>> {
        let r = self.resend?;
        let end = self.lines.line_end(r.offset);
        self.resend = (r.next < r.last).then_some(Resend {
            next: r.next + 1,
            offset: end,
            ..r
        });
        Some(self.lines.slice(r.offset, end))
    }

    /// Whether a replay is under way.
    pub fn is_replaying(&self) -> bool {
        self.resend.is_some()
    }

    /// Abandons the replay under way (its peer is gone).
    pub fn stop_replay(&mut self) {
        self.resend = None;
    }

    /// Drops the oldest line, moving a replay under way along.
    fn pop_oldest(&mut self) {
        let Some(len) = self.lines.pop_front_keep() else {
            return;
        };
        if let Some(r) = &mut self.resend {
            if r.offset >= len {
                r.offset -= len;
            } else if r.next < r.last {
                // The line it was at left (acked): the next one is now first.
                r.next += 1;
            } else {
                self.resend = None;
            }
        }
    }

    /// Where a replay under way stands: the count of lines the peer has
    /// (or is getting) before the next one it replays; `None` when no
    /// replay is under way. [`ReplayWindow::start_replay`] with it resumes
    /// the replay exactly there.
    pub fn replay_position(&self) -> Option<u64> {
        self.resend.map(|r| r.next - 1)
    }

    /// The lines held, oldest first, as one byte string (each ends in LF).
    pub fn held_lines(&self) -> Vec<u8> {
        self.lines.iter().flat_map(|l| l.into_owned()).collect()
    }

    /// A window of `cap` bytes that has sent `sent` lines and holds the
    /// last of them, `held` (whole LF-terminated lines back to back, as
    /// [`ReplayWindow::held_lines`] gives them): the same window in another
    /// process. `None` if `held` is not whole lines or has more lines than
    /// were sent.
    pub fn restore(cap: usize, sent: u64, held: &[u8]) -> Option<ReplayWindow> {
        let mut window = ReplayWindow::new(cap);
        for line in split_lines(held)? {
            window.lines.push_back(line);
        }
        if window.lines.len() as u64 > sent {
            return None;
        }
        window.sent = sent;
        Some(window)
    }

    /// Bytes of the lines held (LFs included).
    pub fn held_bytes(&self) -> usize {
        self.lines.bytes()
    }

    /// Bytes allocated to hold them.
    pub fn capacity(&self) -> usize {
        self.lines.capacity()
    }

    /// Number of lines held.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether no line is held.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn line(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn replay(w: &ReplayWindow, c: u64) -> Vec<Bytes> {
        w.replay_after(c)
            .map(|l| Bytes::copy_from_slice(&l))
            .collect()
    }

    fn all(q: &LineQueue) -> Vec<Vec<u8>> {
        q.iter().map(Cow::into_owned).collect()
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
        assert_eq!(w.capacity(), 0);
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
        assert!(w.capacity() <= 6);
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
        assert_eq!(w.capacity(), 0);
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
        assert!(w.capacity() >= 5_000);
        w.ack(4_990);
        assert!(w.capacity() <= MIN_SHRINK_CAPACITY);
        assert_eq!(replay(&w, 4_990).len(), 10);
    }

    fn replay_all(w: &mut ReplayWindow) -> Vec<Bytes> {
        std::iter::from_fn(|| w.next_replay().map(|l| Bytes::copy_from_slice(&l))).collect()
    }

    #[test]
    fn replay_one_line_at_a_time() {
        let mut w = ReplayWindow::new(12);
        for s in ["a\n", "bb\n", "ccc\n", "d\n"] {
            w.push(line(s));
        }
        w.start_replay(1);
        assert!(w.is_replaying());
        assert_eq!(
            w.next_replay().as_deref(),
            Some(&b"bb\n"[..]),
            "line 2 first"
        );
        // Pushed meanwhile: not part of it. Evicted or acked meanwhile:
        // skipped.
        w.push(line("e\n"));
        assert_eq!(w.oldest(), 2);
        w.ack(3);
        assert_eq!(replay_all(&mut w), vec![line("d\n")]);
        assert!(!w.is_replaying());

        w.start_replay(w.sent());
        assert!(!w.is_replaying(), "nothing after S");
        w.start_replay(0);
        assert_eq!(replay_all(&mut w), vec![line("d\n"), line("e\n")]);
        w.start_replay(3);
        w.ack(5);
        assert!(!w.is_replaying());
        assert_eq!(w.next_replay(), None);
        w.push(line("f\n"));
        w.start_replay(5);
        w.stop_replay();
        assert_eq!(w.next_replay(), None);
    }

    #[test]
    fn replay_matches_replay_after_across_the_ring_edge() {
        let mut w = ReplayWindow::new(100);
        for i in 0..300u32 {
            w.push(format!("{i}{}\n", "x".repeat((i % 7) as usize)));
            if i % 37 == 0 {
                w.ack(u64::from(i) / 2);
            }
            for c in w.oldest() - 1..=w.sent() {
                let want = replay(&w, c);
                w.start_replay(c);
                assert_eq!(replay_all(&mut w), want, "i {i} c {c}");
            }
        }
    }

    /// The defect this structure fixes: 1-byte lines used to cost ~100
    /// bytes each. A full window now costs its cap, whatever the lines.
    #[test]
    fn a_full_window_costs_its_cap_whatever_the_line_length() {
        for size in [1usize, 2, 7, 100, 4096] {
            let cap = 1 << 20;
            let mut w = ReplayWindow::new(cap);
            let mut l = vec![b'x'; size - 1];
            l.push(b'\n');
            for _ in 0..(3 * cap / size) {
                w.push(&l);
            }
            assert!(w.held_bytes() > cap - size, "size {size}");
            assert_eq!(w.capacity(), cap, "size {size}");
            assert_eq!(w.len(), w.held_bytes() / size);
        }
    }

    #[test]
    fn find_lf_at_every_position() {
        for len in 0..100 {
            assert_eq!(find_lf(&vec![b'a'; len]), None);
            for at in 0..len {
                let mut data = vec![0x8a; len];
                data[at] = b'\n';
                if at + 5 < len {
                    data[at + 5] = b'\n';
                }
                assert_eq!(find_lf(&data), Some(at), "len {len} at {at}");
            }
        }
    }

    #[test]
    fn lines_wrapping_the_ring_come_out_whole() {
        let mut q = LineQueue::new(64);
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        for i in 0..500u32 {
            let l = format!("{}{}\n", i, "y".repeat((i % 13) as usize)).into_bytes();
            while q.bytes() + l.len() > 64 {
                assert_eq!(q.pop_front(), model.pop_front().map(|m| m.len()));
            }
            q.push_back(&l);
            model.push_back(l);
            assert_eq!(all(&q), Vec::from(model.clone()));
            assert_eq!(q.front().as_deref(), model.front().map(Vec::as_slice));
            assert!(q.capacity() <= 64);
        }
        let skipped: Vec<_> = q.iter_from(2).map(Cow::into_owned).collect();
        assert_eq!(skipped, Vec::from(model.clone()).split_off(2));
        assert_eq!(q.iter_from(q.len() + 5).len(), 0);
        while let Some(got) = q.pop_front_with(<[u8]>::to_vec) {
            assert_eq!(Some(got), model.pop_front());
        }
        assert!(q.is_empty());
        assert_eq!((q.bytes(), q.capacity()), (0, 0));
        assert_eq!(q.pop_front(), None);
        assert!(q.front().is_none());
    }

    #[test]
    fn growth_stops_at_the_limit_unless_one_line_needs_more() {
        let mut q = LineQueue::new(1000);
        for _ in 0..1000 {
            q.push_back(b"\n");
        }
        assert_eq!(q.capacity(), 1000);
        // A backlog may pass its limit by one line: an eighth more at most.
        q.push_back(b"z\n");
        assert_eq!(q.capacity(), 1125);
        let mut l = vec![b'z'; 120];
        l.push(b'\n');
        q.push_back(&l);
        assert_eq!((q.bytes(), q.capacity()), (1123, 1125));
        q.push_back(&l);
        assert_eq!(q.capacity(), 1125 + 1125 / 8);
        q.clear();
        assert_eq!((q.len(), q.capacity()), (0, 0));

        // With no limit to speak of, growth still doubles (amortised O(1)).
        let mut q = LineQueue::new(0);
        for _ in 0..10_000 {
            q.push_back(b"ab\n");
        }
        assert!(q.capacity() < 2 * 30_000);
        assert_eq!(q.bytes(), 30_000);
    }

    proptest! {
        /// Any interleaving of pushes and pops behaves like a queue of
        /// owned lines, and the ring never outgrows the limit, or an
        /// eighth more than the most ever held when that was over it.
        #[test]
        fn behaves_like_a_queue_of_lines(
            ops in proptest::collection::vec((0usize..40, any::<bool>()), 0..300),
            limit in 0usize..200,
        ) {
            let mut q = LineQueue::new(limit);
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let mut most = 0;
            for (i, (size, pop)) in ops.into_iter().enumerate() {
                if pop {
                    prop_assert_eq!(q.pop_front(), model.pop_front().map(|m| m.len()));
                } else {
                    let mut l = vec![b'a' + (i % 26) as u8; size];
                    l.push(b'\n');
                    q.push_back(&l);
                    model.push_back(l);
                }
                let held: usize = model.iter().map(Vec::len).sum();
                prop_assert_eq!((q.len(), q.bytes()), (model.len(), held));
                prop_assert_eq!(all(&q), Vec::from(model.clone()));
                most = most.max(held);
                prop_assert!(q.capacity() <= limit.max(most + most / 8));
            }
        }
    }
}

#[cfg(test)]
mod restore_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A window restored from what it holds replays and resumes as the
        /// original does, for every count a client may have, also in the
        /// middle of a replay.
        #[test]
        fn a_restored_window_is_the_same_window(
            lines in proptest::collection::vec("[a-z]{0,12}", 0..40),
            cap in 1usize..200,
            acked in 0u64..40,
            replaying in proptest::option::of(0u64..40),
            steps in 0usize..5,
        ) {
            let mut w = ReplayWindow::new(cap);
            for l in &lines {
                w.push(format!("{l}\n"));
            }
            w.ack(acked.min(w.sent()));
            if let Some(c) = replaying {
                if w.can_resume(c) {
                    w.start_replay(c);
                    for _ in 0..steps {
                        w.next_replay();
                    }
                }
            }
            let mut r = ReplayWindow::restore(cap, w.sent(), &w.held_lines()).unwrap();
            if let Some(c) = w.replay_position() {
                r.start_replay(c);
            }
            prop_assert_eq!(r.sent(), w.sent());
            prop_assert_eq!(r.oldest(), w.oldest());
            prop_assert_eq!(r.held_bytes(), w.held_bytes());
            let rest = |w: &mut ReplayWindow| {
                let mut out = Vec::new();
                while let Some(l) = w.next_replay() {
                    out.push(l.into_owned());
                }
                out
            };
            prop_assert_eq!(rest(&mut r), rest(&mut w));
            for c in 0..=w.sent() {
                prop_assert_eq!(r.can_resume(c), w.can_resume(c));
            }
        }
    }

    #[test]
    fn a_window_is_not_restored_from_what_no_window_holds() {
        assert!(ReplayWindow::restore(100, 5, b"no end").is_none());
        assert!(ReplayWindow::restore(100, 1, b"a\nb\n").is_none());
        assert!(ReplayWindow::restore(100, 2, b"a\nb\n").is_some());
        assert!(ReplayWindow::restore(100, 0, b"").is_some());
    }
}
