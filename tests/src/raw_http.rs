//! An HTTP/1.x client over `std::net::TcpStream` that sends exact bytes and
//! reads exactly one response at a time, framed by the rules of RFC 9112
//! §6.3 (no body for HEAD, 1xx, 204 and 304; then chunked; then
//! Content-Length; else until close), with read timeouts everywhere.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// Default read and write timeout of a [`RawConn`].
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// How a response body was delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body by the rules (HEAD, 1xx, 204, 304).
    NoBody,
    ContentLength(u64),
    Chunked,
    /// Read until the connection closed.
    Close,
}

/// A response: head fields as received (names as sent, in order) and the
/// decoded body.
#[derive(Clone, Debug)]
pub struct Response {
    /// e.g. `HTTP/1.1`
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub framing: Framing,
    /// The head's bytes exactly as received, final CRLFCRLF included.
    pub raw_head: Vec<u8>,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether the comma-separated header `name` lists `token`
    /// (case-insensitive), e.g. `has_token("connection", "close")`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Headers as `name: value` lines, for assertion messages.
    pub fn head_text(&self) -> String {
        String::from_utf8_lossy(&self.raw_head).into_owned()
    }
}

/// One client connection.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    /// Connects with [`IO_TIMEOUT`] for reads and writes; panics on failure.
    pub fn connect(addr: SocketAddr) -> RawConn {
        RawConn::try_connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<RawConn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(RawConn {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("set_read_timeout");
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes `bytes` exactly; panics on error.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).expect("send");
    }

    /// Writes `bytes` exactly (the peer may have closed: malformed tests
    /// expect that).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Copies everything from `reader` to the connection; returns the count.
    pub fn send_from(&mut self, reader: &mut impl Read) -> io::Result<u64> {
        io::copy(reader, &mut self.stream)
    }

    /// Copies `reader` as chunks of `chunk` bytes in chunked coding, then
    /// the last chunk.
    pub fn send_chunked_from(&mut self, reader: &mut impl Read, chunk: usize) -> io::Result<u64> {
        let mut buf = vec![0u8; chunk];
        let mut total = 0;
        loop {
            let n = read_full(reader, &mut buf)?;
            if n == 0 {
                break;
            }
            self.stream.write_all(format!("{n:x}\r\n").as_bytes())?;
            self.stream.write_all(&buf[..n])?;
            self.stream.write_all(b"\r\n")?;
            total += n as u64;
        }
        self.stream.write_all(b"0\r\n\r\n")?;
        Ok(total)
    }

    /// Half-closes the write side.
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads up to and including the next LF; `UnexpectedEof` at close.
    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(self.buf.drain(..=i).collect());
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed in a line; partial: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        }
    }

    fn read_exact_into(&mut self, mut n: u64, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        while n > 0 {
            if self.buf.is_empty() && self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed with {n} body bytes missing"),
                ));
            }
            let take = (self.buf.len() as u64).min(n) as usize;
            sink(&self.buf[..take]);
            self.buf.drain(..take);
            n -= take as u64;
        }
        Ok(())
    }

    /// Reads one response head (a 1xx included). `UnexpectedEof` when the
    /// connection closes before any byte.
    pub fn read_head(&mut self) -> io::Result<Response> {
        let mut raw = Vec::new();
        let status_line = self.read_line()?;
        raw.extend_from_slice(&status_line);
        let line = String::from_utf8_lossy(&status_line).trim_end().to_string();
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
        let reason = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let l = self.read_line()?;
            raw.extend_from_slice(&l);
            let text = String::from_utf8_lossy(&l)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            if text.is_empty() {
                break;
            }
            let (n, v) = text
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header line {text:?}")))?;
            headers.push((n.to_string(), v.trim().to_string()));
        }
        Ok(Response {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
            framing: Framing::NoBody,
            raw_head: raw,
        })
    }

    /// Reads the body of `head` (to a request with `method`) into `sink`.
    pub fn read_body_into(
        &mut self,
        head: &Response,
        method: &str,
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Framing> {
        let s = head.status;
        if method.eq_ignore_ascii_case("HEAD") || (100..200).contains(&s) || s == 204 || s == 304 {
            return Ok(Framing::NoBody);
        }
        if head.header("transfer-encoding").is_some() {
            if !head.has_token("transfer-encoding", "chunked") {
                return Err(bad("Transfer-Encoding without chunked".into()));
            }
            loop {
                let line = self.read_line()?;
                let text = String::from_utf8_lossy(&line);
                let size = text.trim_end().split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(size, 16)
                    .map_err(|_| bad(format!("bad chunk size line {text:?}")))?;
                if size == 0 {
                    // Trailers up to the empty line.
                    while self.read_line()? != b"\r\n" {}
                    return Ok(Framing::Chunked);
                }
                self.read_exact_into(size, sink)?;
                let crlf = self.read_line()?;
                if crlf != b"\r\n" {
                    return Err(bad(format!("no CRLF after chunk data: {crlf:?}")));
                }
            }
        }
        if let Some(cl) = head.header("content-length") {
            let n: u64 = cl
                .parse()
                .map_err(|_| bad(format!("bad Content-Length {cl:?}")))?;
            self.read_exact_into(n, sink)?;
            return Ok(Framing::ContentLength(n));
        }
        sink(&self.buf);
        self.buf.clear();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(Framing::Close);
            }
            sink(&chunk[..n]);
        }
    }

    /// Reads one whole response (a 1xx included) to a request with `method`.
    pub fn read_response_to(&mut self, method: &str) -> io::Result<Response> {
        let mut resp = self.read_head()?;
        let mut body = Vec::new();
        resp.framing = self.read_body_into(&resp, method, &mut |b| body.extend_from_slice(b))?;
        resp.body = body;
        Ok(resp)
    }

    /// Reads one whole response to a non-HEAD request; panics on error.
    pub fn read_response(&mut self) -> Response {
        self.read_response_to("GET").expect("read response")
    }

    /// Reads responses until a final one (skipping 1xx other than 101).
    pub fn read_final_response_to(&mut self, method: &str) -> io::Result<Response> {
        loop {
            let r = self.read_response_to(method)?;
            if r.status >= 200 || r.status == 101 {
                return Ok(r);
            }
        }
    }

    /// Reads a response whose body is only hashed (large downloads):
    /// returns the head (empty body), the body length and its SHA-1.
    pub fn read_response_sha1(&mut self, method: &str) -> io::Result<(Response, u64, String)> {
        let mut resp = self.read_head()?;
        let mut sha = sha1_smol::Sha1::new();
        let mut len = 0u64;
        resp.framing = self.read_body_into(&resp, method, &mut |b| {
            len += b.len() as u64;
            sha.update(b);
        })?;
        Ok((resp, len, sha.digest().to_string()))
    }

    /// Sends a request built from parts and reads the final response.
    /// `headers` are sent as given; `Host` and, for a body,
    /// `Content-Length` are added unless present.
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        host: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.send(&request_bytes(method, target, host, headers, body));
        self.read_final_response_to(method)
            .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
    }

    /// `Ok` when the peer closes (EOF or reset) within `timeout` without
    /// sending anything more; `Err` describing what happened instead.
    pub fn expect_closed(&mut self, timeout: Duration) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(format!(
                "unexpected bytes: {:?}",
                String::from_utf8_lossy(&self.buf)
            ));
        }
        self.set_read_timeout(timeout);
        let mut b = [0u8; 1024];
        match self.stream.read(&mut b) {
            Ok(0) => Ok(()),
            Ok(n) => Err(format!(
                "unexpected bytes instead of close: {:?}",
                String::from_utf8_lossy(&b[..n])
            )),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(format!("connection not closed within {timeout:?}: {e}")),
        }
    }

    /// Reads exactly `n` raw bytes (after a 101: frames).
    pub fn read_bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        self.read_exact_into(n as u64, &mut |b| out.extend_from_slice(b))?;
        Ok(out)
    }

    /// Bytes received but not consumed yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the bytes received but not consumed (e.g. after a 101).
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// Request bytes: `METHOD TARGET HTTP/1.1`, `Host` (unless in `headers`),
/// `headers`, `Content-Length` for a non-empty body (unless a
/// Content-Length or Transfer-Encoding is in `headers`), then `body`.
pub fn request_bytes(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let mut out = format!("{method} {target} HTTP/1.1\r\n");
    if !has("host") {
        out.push_str(&format!("Host: {host}\r\n"));
    }
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() && !has("content-length") && !has("transfer-encoding") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One `GET` on a new connection.
pub fn get(addr: SocketAddr, host: &str, target: &str) -> Response {
    RawConn::connect(addr).request("GET", target, host, &[], b"")
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let m = reader.read(&mut buf[n..])?;
        if m == 0 {
            break;
        }
        n += m;
    }
    Ok(n)
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

// ------------------------------------------- the origin side, for scripted origins

/// Where `needle` starts in `hay` at or after `from`.
pub fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Reads more bytes into `buf`; `None` at EOF or error.
fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut b = [0u8; 16 * 1024];
    match s.read(&mut b) {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&b[..n]);
            Some(())
        }
    }
}

/// Index just after the next CRLF at or after `from`.
fn line_end(s: &mut TcpStream, buf: &mut Vec<u8>, from: usize) -> Option<usize> {
    loop {
        if let Some(i) = find(buf, b"\r\n", from) {
            return Some(i + 2);
        }
        fill(s, buf)?;
    }
}

/// One whole request as a scripted origin reads it off its socket `s`
/// (framed by Content-Length or chunked, trailers included), taken off the
/// front of `buf`, with the length of its head; `None` at EOF or error.
pub fn read_raw_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(usize, Vec<u8>)> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n", 0) {
            break i + 4;
        }
        fill(s, buf)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    let mut end = head_end;
    if field("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let after = line_end(s, buf, end)?;
            let size_line = String::from_utf8_lossy(&buf[end..after - 2]).to_string();
            let hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(hex, 16).ok()?;
            end = after;
            if size == 0 {
                loop {
                    let after = line_end(s, buf, end)?;
                    let empty = after - end == 2;
                    end = after;
                    if empty {
                        break;
                    }
                }
                break;
            }
            while buf.len() < end + size + 2 {
                fill(s, buf)?;
            }
            end += size + 2;
        }
    } else if let Some(cl) = field("content-length") {
        end += cl.parse::<usize>().ok()?;
        while buf.len() < end {
            fill(s, buf)?;
        }
    }
    Some((head_end, buf.drain(..end).collect()))
}

/// The value of the Prometheus sample `series` (name with its labels, as
/// printed) on the admin listener's `/metrics`.
pub fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let mut conn = RawConn::try_connect(admin).ok()?;
    conn.set_read_timeout(crate::session::WAIT);
    conn.try_send(&request_bytes("GET", "/metrics", "admin", &[], b""))
        .ok()?;
    let r = conn.read_final_response_to("GET").ok()?;
    r.body_text().lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}
