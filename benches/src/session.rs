//! Persistent sessions (SPEC 2 and 4, native HTTP/1.1 transport, stream
//! mode): a line-echo worker and the native clients the bench drives
//! through tether, written by hand so the bench controls every byte.
//!
//! - The **worker** runs on the bench's tokio runtime: for each connection
//!   the gateway opens (one per session), it reads the forwarded request
//!   head, answers `200` with `Connection-Type: Persistent` and no initial
//!   body, then echoes every byte it reads (so every line comes back as
//!   the same line). A connection holds no heap buffer once the head is
//!   read. The worker's memory is not what is measured.
//! - The **clients** are blocking std sockets: [`open`] a session and check
//!   the answer head; [`resume`] one with `SessionID` and
//!   `Session-Received`. A client reads in chunks and keeps what followed
//!   the head ([`Conn::pending`]): after a resume head come the replayed
//!   lines.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The request path: the bench's vhost has `paths = ["*.pphp"]`.
pub(crate) const PATH: &str = "/bench.pphp";

/// The worker's answer that opens a session (SPEC 2 step 6).
const OPEN: &[u8] = b"HTTP/1.1 200 OK\r\nConnection-Type: Persistent\r\nContent-Length: 0\r\n\r\n";

/// Starts the line-echo worker on a free 127.0.0.1 port, on `runtime`.
pub(crate) fn start_worker(runtime: &tokio::runtime::Runtime) -> std::io::Result<u16> {
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = serve(stream).await;
            });
        }
    });
    Ok(port)
}

/// One session's worker connection: the head, the answer, then echo.
async fn serve(mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    {
        // A GET without a body: nothing follows the head until the worker
        // has answered (the client sends lines only after its own head).
        let mut head = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 || head.len() > 64 * 1024 {
                return Ok(());
            }
            head.extend_from_slice(&chunk[..n]);
        }
        if !head
            .windows(10)
            .any(|w| w.eq_ignore_ascii_case(b"sessionid:"))
        {
            stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Ok(());
        }
    }
    stream.write_all(OPEN).await?;
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

/// A client connection of a session after its answer head.
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    /// Bytes read after the head and not yet taken as lines.
    pub(crate) pending: Vec<u8>,
}

/// What an answer head said.
pub(crate) struct Answer {
    /// The `SessionID` header.
    pub(crate) id: String,
    /// The `Session-Received` header: client lines delivered to the worker.
    pub(crate) received: u64,
}

/// The value of header `name` in a response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn connect(port: u16) -> Result<TcpStream, String> {
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// Sends `request` on a fresh connection and reads the answer head; a
/// `200` with `Connection-Type: Persistent` and a `SessionID` is a session.
fn handshake(port: u16, request: &str) -> Result<(Conn, Answer), String> {
    let mut stream = connect(port)?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 {
            return Err("answer head too long".into());
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "the gateway closed before the end of the answer head ({:?})",
                    String::from_utf8_lossy(&buf)
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("answer head: {e}")),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let first = head.lines().next().unwrap_or("");
    let persistent =
        header(&head, "connection-type").is_some_and(|v| v.eq_ignore_ascii_case("persistent"));
    if first.split_whitespace().nth(1) != Some("200") || !persistent {
        let body = String::from_utf8_lossy(&buf[end..]);
        return Err(format!("answered {first:?} (body {:?})", body.trim_end()));
    }
    let id = header(&head, "sessionid")
        .ok_or("no SessionID in the answer")?
        .to_owned();
    let received = header(&head, "session-received")
        .and_then(|v| v.parse().ok())
        .ok_or("no or bad Session-Received in the answer")?;
    let pending = buf.split_off(end);
    Ok((Conn { stream, pending }, Answer { id, received }))
}

/// Opens a new session through the gateway on `port`.
pub(crate) fn open(port: u16) -> Result<(Conn, Answer), String> {
    let request = format!(
        "GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/x-persistent\r\n\r\n"
    );
    let (conn, answer) = handshake(port, &request)?;
    if answer.received != 0 {
        return Err(format!(
            "a new session answered Session-Received: {}",
            answer.received
        ));
    }
    Ok((conn, answer))
}

/// Resumes session `id` having received `received` worker lines.
pub(crate) fn resume(port: u16, id: &str, received: u64) -> Result<(Conn, Answer), String> {
    let request = format!(
        "GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/x-persistent\r\n\
         SessionID: {id}\r\nSession-Received: {received}\r\n\r\n"
    );
    handshake(port, &request)
}

/// A connection straight to the worker, bypassing the gateway (the bench
/// sends the `SessionID` the gateway would add): the reference for what
/// the gateway adds to a line's round trip.
pub(crate) fn open_direct(worker_port: u16) -> Result<Conn, String> {
    let mut stream = connect(worker_port)?;
    stream
        .write_all(b"GET /bench.pphp HTTP/1.1\r\nHost: h\r\nSessionID: direct-reference\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut head = vec![0u8; OPEN.len()];
    stream
        .read_exact(&mut head)
        .map_err(|e| format!("worker answer: {e}"))?;
    if head != OPEN {
        return Err("the worker answered something else".into());
    }
    Ok(Conn {
        stream,
        pending: Vec::new(),
    })
}

impl Conn {
    /// Writes one line (`text` plus LF).
    pub(crate) fn send(&mut self, text: &str) -> Result<(), String> {
        let mut line = Vec::with_capacity(text.len() + 1);
        line.extend_from_slice(text.as_bytes());
        line.push(b'\n');
        self.stream
            .write_all(&line)
            .map_err(|e| format!("line write: {e}"))
    }

    /// Reads the next whole line, without its LF.
    pub(crate) fn line(&mut self) -> Result<String, String> {
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let rest = self.pending.split_off(i + 1);
                let mut line = std::mem::replace(&mut self.pending, rest);
                line.pop();
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("the gateway closed the session connection".into()),
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("line read: {e}")),
            }
        }
    }

    /// Sends `text` and checks that the worker's echo comes back.
    pub(crate) fn echo(&mut self, text: &str) -> Result<(), String> {
        self.send(text)?;
        let back = self.line()?;
        if back != text {
            return Err(format!("sent {text:?}, the echo was {back:?}"));
        }
        Ok(())
    }
}

/// The value at quantile `q` (0 to 1) of sorted `values`, nearest rank.
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_opens_and_echoes() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let port = start_worker(&rt).unwrap();
        // Straight to the worker: the bench sends the gateway's header.
        let mut conn = open_direct(port).unwrap();
        conn.echo("hello").unwrap();
        conn.echo("a=1&b=2").unwrap();
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(quantile(&v, 0.5), Some(Duration::from_micros(50)));
        assert_eq!(quantile(&v, 0.99), Some(Duration::from_micros(99)));
        assert_eq!(quantile(&v, 1.0), Some(Duration::from_micros(100)));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
