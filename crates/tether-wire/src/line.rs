//! Line framing: splitting a byte stream into lines.
//!
//! # Why
//!
//! Once a session is open, both directions of the channel carry **lines**:
//! "bytes up to and including LF, relayed byte-exact" (SPEC 2, *Lines*). The
//! gateway must count lines (SPEC 4), so it has to find line ends in whatever
//! chunks the socket hands it, enforce `max_line` ("a line longer than
//! `max_line` (LF included) ends the session with an error", SPEC 2), and
//! discard "bytes after the last LF at a client connection drop" (SPEC 2).
//! [`LineReader`] does exactly that and nothing else: it performs no I/O.
//!
//! # Shape
//!
//! The caller appends bytes ([`LineReader::buffer_mut`] for `read_buf`-style
//! reads straight into the buffer, or [`LineReader::push`]) and then calls
//! [`LineReader::next_line`] until it returns `Ok(None)`. Each line is split
//! off the buffer without copying (`BytesMut::split_to` + `freeze`), so it can
//! be queued for the worker or held in the [`ReplayWindow`] as is.
//!
//! The reader remembers how far it has already searched for an LF, so a long
//! line that trickles in byte by byte is scanned once, not once per chunk.
//!
//! # Memory
//!
//! An idle session must hold no buffer memory (DESIGN, *Lazy memory*). The
//! reader never frees capacity on its own, because doing so after every line
//! would turn each socket read into an allocation; the owner calls
//! [`LineReader::shrink`] when it is about to wait for more bytes, which gives
//! the allocation back if no partial line is pending. Lines that were split
//! off share the allocation they came from and keep it alive until they are
//! dropped (see [`crate::replay`] for what that means for the replay window).
//!
//! [`ReplayWindow`]: crate::replay::ReplayWindow

use std::fmt;

use bytes::{Bytes, BytesMut};

/// A line (LF included) exceeded `max_line` (SPEC 2, *Lines*).
///
/// It ends the session with reason `line_too_long`: the client connection is
/// closed (WebSocket: close 1009) and so is the worker's. After this error the
/// reader's content is unspecified; the owner drops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong {
    /// The configured limit that was exceeded, in bytes, LF included.
    pub max_line: usize,
}

impl fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line longer than {} bytes", self.max_line)
    }
}

impl std::error::Error for LineTooLong {}

/// Incremental splitter of a byte stream into lines of at most `max_line`
/// bytes (LF included).
#[derive(Debug)]
pub struct LineReader {
    buf: BytesMut,
    max_line: usize,
    /// Bytes at the front of `buf` already known to hold no LF.
    scanned: usize,
}

impl LineReader {
    /// A reader enforcing `max_line` bytes per line, LF included. It holds no
    /// memory until bytes are added.
    pub fn new(max_line: usize) -> LineReader {
        LineReader {
            buf: BytesMut::new(),
            max_line,
            scanned: 0,
        }
    }

    /// The limit given to [`LineReader::new`].
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// The buffer to read into (e.g. `AsyncReadExt::read_buf`).
    ///
    /// Only append to it: removing or rewriting bytes that are already there
    /// breaks the reader's bookkeeping (it stays memory-safe and never panics,
    /// but lines may be split wrongly).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends `data` to the buffer.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered: whole lines not yet taken plus the partial line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next whole line, LF included, split from the buffer without
    /// copying; `Ok(None)` when no whole line is buffered.
    ///
    /// Fails with [`LineTooLong`] when the next line is longer than
    /// `max_line`, or as soon as the partial line has `max_line` bytes and no
    /// LF yet (its LF would make it `max_line + 1`).
    pub fn next_line(&mut self) -> Result<Option<Bytes>, LineTooLong> {
        let start = self.scanned.min(self.buf.len());
        match find_lf(&self.buf[start..]) {
            Some(i) => {
                let len = start + i + 1;
                if len > self.max_line {
                    return Err(LineTooLong {
                        max_line: self.max_line,
                    });
                }
                self.scanned = 0;
                Ok(Some(self.buf.split_to(len).freeze()))
            }
            None => {
                self.scanned = self.buf.len();
                if !self.buf.is_empty() && self.buf.len() >= self.max_line {
                    return Err(LineTooLong {
                        max_line: self.max_line,
                    });
                }
                Ok(None)
            }
        }
    }

    /// Bytes after the last LF in the buffer: the partial line.
    pub fn pending_partial(&self) -> usize {
        self.buf.len() - complete_lines(&self.buf)
    }

    /// Drops the partial line (SPEC 2: bytes after the last LF at a
    /// connection drop are not a line: discarded, not counted). Whole lines
    /// still buffered are kept. Releases the allocation if nothing remains.
    pub fn discard_partial(&mut self) {
        let keep = complete_lines(&self.buf);
        self.buf.truncate(keep);
        self.scanned = self.scanned.min(keep);
        self.shrink();
    }

    /// Gives the allocation back if nothing is buffered, so that an idle
    /// session holds no buffer memory. Call it before waiting for more bytes.
    pub fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() != 0 {
            self.buf = BytesMut::new();
            self.scanned = 0;
        }
    }
}

/// Length of the prefix of `data` that ends at its last LF (0 if it has
/// none): the whole lines of `data`.
pub fn complete_lines(data: &[u8]) -> usize {
    data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

/// Index of the first LF in `data`.
///
/// Every byte of every line passes through here, so it looks at eight bytes
/// at a time (the "has a zero byte" word trick on `word ^ LF`) and only
/// scans byte by byte in the word that holds an LF, and in the tail.
fn find_lf(data: &[u8]) -> Option<usize> {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    const LF: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut offset = 0;
    for word in data.chunks_exact(8) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let x = u64::from_ne_bytes(bytes) ^ LF;
        if x.wrapping_sub(LO) & !x & HI != 0 {
            break;
        }
        offset += 8;
    }
    data[offset..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| offset + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(r: &mut LineReader) -> Result<Vec<Vec<u8>>, LineTooLong> {
        let mut out = Vec::new();
        while let Some(l) = r.next_line()? {
            out.push(l.to_vec());
        }
        Ok(out)
    }

    #[test]
    fn splits_lines_keeping_lf_and_cr() {
        let mut r = LineReader::new(64);
        r.push(b"a\r\n\nbc\n");
        assert_eq!(
            lines(&mut r).unwrap(),
            vec![b"a\r\n".to_vec(), b"\n".to_vec(), b"bc\n".to_vec()]
        );
        assert!(r.is_empty());
    }

    #[test]
    fn empty_line_is_a_line() {
        let mut r = LineReader::new(1);
        r.push(b"\n\n");
        assert_eq!(r.next_line().unwrap().as_deref(), Some(&b"\n"[..]));
        assert_eq!(r.next_line().unwrap().as_deref(), Some(&b"\n"[..]));
        assert_eq!(r.next_line().unwrap(), None);
    }

    #[test]
    fn partial_line_waits_for_lf() {
        let mut r = LineReader::new(64);
        r.push(b"hel");
        assert_eq!(r.next_line().unwrap(), None);
        assert_eq!(r.pending_partial(), 3);
        r.push(b"lo\nwor");
        assert_eq!(r.next_line().unwrap().as_deref(), Some(&b"hello\n"[..]));
        assert_eq!(r.next_line().unwrap(), None);
        assert_eq!(r.pending_partial(), 3);
        r.buffer_mut().extend_from_slice(b"ld\n");
        assert_eq!(r.next_line().unwrap().as_deref(), Some(&b"world\n"[..]));
    }

    #[test]
    fn max_line_boundary_exact() {
        // Exactly max_line bytes including the LF is fine.
        let mut r = LineReader::new(4);
        r.push(b"abc\n");
        assert_eq!(r.next_line().unwrap().as_deref(), Some(&b"abc\n"[..]));

        // max_line + 1 including the LF is too long.
        let mut r = LineReader::new(4);
        r.push(b"abcd\n");
        assert_eq!(r.next_line(), Err(LineTooLong { max_line: 4 }));

        // A partial of max_line - 1 bytes may still end in time.
        let mut r = LineReader::new(4);
        r.push(b"abc");
        assert_eq!(r.next_line(), Ok(None));
        r.push(b"\n");
        assert_eq!(r.next_line().unwrap().as_deref(), Some(&b"abc\n"[..]));

        // A partial of max_line bytes with no LF is already too long.
        let mut r = LineReader::new(4);
        r.push(b"abcd");
        assert_eq!(r.next_line(), Err(LineTooLong { max_line: 4 }));
    }

    #[test]
    fn long_line_after_good_lines_fails_only_when_reached() {
        let mut r = LineReader::new(3);
        r.push(b"ab\nabcdef");
        assert_eq!(r.next_line().unwrap().as_deref(), Some(&b"ab\n"[..]));
        assert!(r.next_line().is_err());
    }

    #[test]
    fn trickled_bytes_are_found() {
        let mut r = LineReader::new(100);
        for &b in b"xyz" {
            r.push(&[b]);
            assert_eq!(r.next_line().unwrap(), None);
        }
        r.push(b"\n");
        assert_eq!(r.next_line().unwrap().as_deref(), Some(&b"xyz\n"[..]));
    }

    #[test]
    fn discard_partial_keeps_whole_lines_and_frees_when_empty() {
        let mut r = LineReader::new(100);
        r.push(b"one\ntw");
        r.discard_partial();
        assert_eq!(r.pending_partial(), 0);
        assert_eq!(r.next_line().unwrap().as_deref(), Some(&b"one\n"[..]));
        r.push(b"partial");
        assert_eq!(r.next_line().unwrap(), None);
        r.discard_partial();
        assert!(r.is_empty());
        assert_eq!(r.buffer_mut().capacity(), 0);
        r.push(b"x\n");
        assert_eq!(r.next_line().unwrap().as_deref(), Some(&b"x\n"[..]));
    }

    #[test]
    fn shrink_releases_only_when_empty() {
        let mut r = LineReader::new(100);
        assert_eq!(r.buffer_mut().capacity(), 0);
        r.push(b"a\nb");
        r.next_line().unwrap();
        r.shrink();
        assert!(r.buffer_mut().capacity() > 0);
        r.push(b"\n");
        r.next_line().unwrap();
        r.shrink();
        assert_eq!(r.buffer_mut().capacity(), 0);
    }

    #[test]
    fn find_lf_at_every_position() {
        for len in 0..40 {
            for filler in [b'a', 0x0b, 0x09, 0x8a, 0x00, 0xff] {
                let mut data = vec![filler; len];
                assert_eq!(find_lf(&data), None);
                for at in 0..len {
                    data[at] = b'\n';
                    assert_eq!(find_lf(&data), Some(at), "len {len} at {at}");
                    if at + 3 < len {
                        data[at + 3] = b'\n';
                        assert_eq!(find_lf(&data), Some(at));
                        data[at + 3] = filler;
                    }
                    data[at] = filler;
                }
            }
        }
    }

    #[test]
    fn complete_lines_helper() {
        assert_eq!(complete_lines(b""), 0);
        assert_eq!(complete_lines(b"abc"), 0);
        assert_eq!(complete_lines(b"\n"), 1);
        assert_eq!(complete_lines(b"a\nb\nc"), 4);
        assert_eq!(complete_lines(b"a\nb\n"), 4);
    }
}
