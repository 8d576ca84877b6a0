//! Incremental decoder for `Transfer-Encoding: chunked` bodies, the one
//! used by the gateway for requests and upstream answers and by the native
//! client for answers.
//!
//! Strict on purpose (SPEC 5 "bad chunk sizes"): a size is 1 to 16 hex
//! digits, optionally followed by extensions, and every line ends in CRLF.
//! A bare LF, a `0x` prefix, a sign or whitespace before the size is a bad
//! chunk (a request gets 400, an answer 502).

use bytes::{Buf, Bytes, BytesMut};

/// The longest chunk-size line we accept (size, extensions and CRLF).
const MAX_SIZE_LINE: usize = 4096;
/// The most trailer bytes we accept (the final CRLF included).
const MAX_TRAILERS: usize = 16 * 1024;

/// Why a chunked body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk(pub &'static str);

/// One decoded piece of the body.
#[derive(Debug)]
pub enum Piece {
    Data(Bytes),
    /// The trailer section: whole field lines, each ending in CRLF (the
    /// empty line that ends the body is not included); see
    /// [`trailer_fields`].
    Trailers(Bytes),
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// How far the front of the buffer has been searched for the end of a
    /// size line or of the trailers: a client that sends them a few bytes
    /// per read must not make every read search again from the start
    /// (quadratic: a 16 KiB trailer block sent a byte at a time was 128 M
    /// byte comparisons).
    scanned: usize,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            scanned: 0,
        }
    }

    /// Takes what it can from `buf`. `Ok(None)` means more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Piece>, BadChunk> {
        loop {
            match self.state {
                State::Size => {
                    let Some(line_end) = find_crlf(buf, &mut self.scanned, MAX_SIZE_LINE)? else {
                        return Ok(None);
                    };
                    self.scanned = 0;
                    let size = parse_size_line(&buf[..line_end])?;
                    buf.advance(line_end + 2);
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = left.min(buf.len() as u64) as usize;
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Some(Piece::Data(data)));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|&b| b != b'\r') {
                            return Err(BadChunk("chunk data not followed by CRLF"));
                        }
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BadChunk("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        self.state = State::Done;
                        return Ok(Some(Piece::End));
                    }
                    let Some(end) = find_trailers_end(buf, &mut self.scanned)? else {
                        return Ok(None);
                    };
                    self.scanned = 0;
                    // The block without the CRLF of its closing empty line.
                    let block = buf.split_to(end).freeze().slice(..end - 2);
                    trailer_fields(&block).try_for_each(|f| f.map(|_| ()))?;
                    self.state = State::Done;
                    return Ok(Some(Piece::Trailers(block)));
                }
                State::Done => return Ok(Some(Piece::End)),
            }
        }
    }
}

/// Position of the CR of the first CRLF; a bare LF is an error. The line
/// must fit in `limit` bytes with its CRLF whether it arrives in one read
/// or in many (found by fuzzing: a whole line in one read escaped it).
/// The search starts at `scanned`, bytes known to hold no LF, and leaves
/// it at the end of the buffer when there is none yet.
fn find_crlf(buf: &[u8], scanned: &mut usize, limit: usize) -> Result<Option<usize>, BadChunk> {
    let from = (*scanned).min(buf.len());
    let found = buf[from..].iter().position(|&b| b == b'\n');
    *scanned = buf.len();
    match found.map(|i| from + i) {
        Some(lf) if lf >= limit => Err(BadChunk("chunk size line too long")),
        Some(0) => Err(BadChunk("bare LF in chunked body")),
        Some(lf) if buf[lf - 1] == b'\r' => Ok(Some(lf - 1)),
        Some(_) => Err(BadChunk("bare LF in chunked body")),
        None if buf.len() >= limit => Err(BadChunk("chunk size line too long")),
        None => Ok(None),
    }
}

fn parse_size_line(line: &[u8]) -> Result<u64, BadChunk> {
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let digits = &line[..digits_end];
    if digits.is_empty() || digits.len() > 16 {
        return Err(BadChunk("bad chunk size"));
    }
    let rest = &line[digits_end..];
    // Only extensions may follow the size: `;name[=value]`, with optional
    // whitespace before the semicolon (RFC 9112 BWS).
    let rest_trimmed = rest
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .map_or(&rest[rest.len()..], |i| &rest[i..]);
    if !rest_trimmed.is_empty()
        && (rest_trimmed[0] != b';'
            || rest_trimmed
                .iter()
                .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f))
    {
        return Err(BadChunk("bad chunk size"));
    }
    let mut n: u64 = 0;
    for &d in digits {
        let v = (d as char).to_digit(16).unwrap_or(0) as u64;
        n = n.checked_mul(16).ok_or(BadChunk("chunk size overflows"))? + v;
    }
    if n > i64::MAX as u64 {
        return Err(BadChunk("chunk size overflows"));
    }
    Ok(n)
}

/// End of the trailer block, just past its empty line. The search starts
/// at `scanned` and leaves it at the last LF seen (the CRLF that would end
/// the block after it may not have arrived), else at the end of the buffer.
fn find_trailers_end(buf: &[u8], scanned: &mut usize) -> Result<Option<usize>, BadChunk> {
    let mut i = (*scanned).min(buf.len());
    *scanned = buf.len();
    while let Some(lf) = buf[i..].iter().position(|&b| b == b'\n') {
        let lf = i + lf;
        *scanned = lf;
        if lf == 0 || buf[lf - 1] != b'\r' {
            return Err(BadChunk("bare LF in trailers"));
        }
        if buf[lf + 1..].starts_with(b"\r\n") {
            // Whole or in pieces alike (see `find_crlf`).
            if lf + 3 > MAX_TRAILERS {
                return Err(BadChunk("trailers too large"));
            }
            return Ok(Some(lf + 3));
        }
        i = lf + 1;
    }
    if buf.len() >= MAX_TRAILERS {
        return Err(BadChunk("trailers too large"));
    }
    Ok(None)
}

/// The `name: value` fields of a trailer block (values trimmed); a line
/// without a colon or with an empty name is an error.
pub fn trailer_fields(block: &[u8]) -> impl Iterator<Item = Result<(&[u8], &[u8]), BadChunk>> + '_ {
    block
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty())
        .map(|line| {
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .filter(|&c| c > 0)
                .ok_or(BadChunk("bad trailer"))?;
            Ok((&line[..colon], super::trim(&line[colon + 1..])))
        })
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<Bytes>), BadChunk> {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut trailers = None;
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(p) = dec.decode(&mut buf)? {
                match p {
                    Piece::Data(d) => out.extend_from_slice(&d),
                    Piece::Trailers(t) => trailers = Some(t),
                    Piece::End => return Ok((out, trailers)),
                }
            }
        }
        Err(BadChunk("incomplete"))
    }

    #[test]
    fn decodes_in_any_step() {
        let body = b"5\r\nhello\r\na;ext=1\r\n0123456789\r\n0\r\n\r\n";
        for step in 1..body.len() {
            let (out, t) = decode_all(body, step).unwrap();
            assert_eq!(out, b"hello0123456789");
            assert!(t.is_none());
        }
    }

    #[test]
    fn trailers() {
        let (out, t) = decode_all(b"1\r\na\r\n0\r\nX-Sum: 1\r\n\r\n", 3).unwrap();
        assert_eq!(out, b"a");
        let t = t.unwrap();
        let fields: Vec<_> = trailer_fields(&t).collect::<Result<_, _>>().unwrap();
        assert_eq!(fields, [(&b"X-Sum"[..], &b"1"[..])]);
    }

    /// Fuzzing regression: the limits held only for lines that arrived in
    /// pieces; the same bytes in one read went through.
    #[test]
    fn limits_hold_whole_and_in_pieces() {
        let size_line = |len: usize| {
            let mut b = b"5;".to_vec();
            b.resize(len - 2, b'e');
            b.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
            b
        };
        let trailers = |len: usize| {
            let mut b = b"0\r\nX-T: ".to_vec();
            b.resize(3 + len - 4, b't');
            b.extend_from_slice(b"\r\n\r\n");
            b
        };
        for step in [1, 7, 100_000] {
            assert!(
                decode_all(&size_line(MAX_SIZE_LINE), step).is_ok(),
                "{step}"
            );
            assert!(
                decode_all(&size_line(MAX_SIZE_LINE + 1), step).is_err(),
                "{step}"
            );
            assert!(decode_all(&trailers(MAX_TRAILERS), step).is_ok(), "{step}");
            assert!(
                decode_all(&trailers(MAX_TRAILERS + 1), step).is_err(),
                "{step}"
            );
        }
    }

    #[test]
    fn bad_chunks() {
        for bad in [
            &b"zz\r\n"[..],
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"-5\r\n",
            b"+5\r\n",
            b" 5\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"11111111111111111\r\n",
            b"ffffffffffffffff\r\n",
            b"\r\n",
            b"5 x\r\n",
        ] {
            assert!(
                decode_all(bad, 64).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
