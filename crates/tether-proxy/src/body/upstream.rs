//! Bodies on an upstream connection, moved by the task that asked for the
//! exchange: the request body written as the upstream takes it, and the
//! answer body read as the client takes it. No connection task and no
//! channel stand between the upstream socket and the client's: a byte is
//! read when the client's side asks for it, so a client that does not read
//! holds one read's worth, and a proxied request costs no task wake-up of
//! its own.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::{Body, BoxError, UpstreamPermit};
use crate::codec::chunked::{ChunkedDecoder, Piece};
use crate::codec::encode;
use crate::codec::upstream::RequestBody;

/// An answer body is read at most this much at a time, and only as the
/// client takes bytes, so a client that does not read holds little: a
/// read starts at [`FIRST_READ`] and doubles up to this while each read
/// fills what it was given (a big answer from a fast origin).
const MAX_READ: usize = 64 * 1024;
const FIRST_READ: usize = 16 * 1024;

/// One upstream connection and the bytes read on it but not yet used.
pub(crate) struct UpstreamConn {
    pub(crate) stream: TcpStream,
    pub(crate) buf: BytesMut,
}

/// Where a connection goes after a whole answer, to serve the next
/// request (the pool of its upstream).
pub(crate) trait Reuse: Send + Sync {
    fn put(self: Arc<Self>, conn: UpstreamConn);
}

/// Writes a request (head, then body) on an upstream connection.
pub(crate) struct RequestWriter {
    body: Body,
    coding: RequestBody,
    /// Encoded bytes not yet written, from `written` on.
    out: Vec<u8>,
    written: usize,
    /// The body has been taken whole: nothing more after `out`.
    taken: bool,
    head_sent: bool,
}

/// Why writing a request stopped.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The connection failed.
    Io(std::io::Error),
    /// The client's body failed (stalled, cut, a bad chunk).
    Body(BoxError),
}

impl RequestWriter {
    /// `head` is the encoded request head; a body already whole (empty or
    /// one buffer) goes out with it in one write.
    pub(crate) fn new(head: Vec<u8>, mut body: Body, coding: RequestBody) -> RequestWriter {
        let mut out = head;
        let mut taken = coding == RequestBody::None;
        if let (RequestBody::Length(_), Body::Full(data)) = (coding, &mut body) {
            if let Some(data) = data.take() {
                out.extend_from_slice(&data);
            }
            taken = true;
        }
        RequestWriter {
            body,
            coding,
            out,
            written: 0,
            taken,
            head_sent: false,
        }
    }

    /// Makes a request without a body ready to be written again, on
    /// another connection; `false` for one with a body (already taken).
    pub(crate) fn rewind(&mut self) -> bool {
        if self.coding != RequestBody::None {
            return false;
        }
        self.written = 0;
        self.head_sent = false;
        true
    }

    /// Whether the head is out (so an answer can be waited for).
    pub(crate) fn head_sent(&self) -> bool {
        self.head_sent
    }

    /// Writes what there is; `Ready(Ok)` once the whole request is out.
    pub(crate) fn poll_write(
        &mut self,
        stream: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), WriteError>> {
        loop {
            while self.written < self.out.len() {
                match Pin::new(&mut *stream).poll_write(cx, &self.out[self.written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(WriteError::Io(
                            std::io::ErrorKind::WriteZero.into(),
                        )))
                    }
                    Poll::Ready(Ok(n)) => self.written += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(WriteError::Io(e))),
                    Poll::Pending => return Poll::Pending,
                }
            }
            self.head_sent = true;
            if self.taken {
                // Kept: a request without a body can be written again.
                return Poll::Ready(Ok(()));
            }
            self.out.clear();
            self.written = 0;
            let chunked = self.coding == RequestBody::Chunked;
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    if chunked {
                        encode::encode_last_chunk(&mut self.out, None);
                    }
                    self.taken = true;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(WriteError::Body(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if chunked => encode::encode_chunk(&mut self.out, &data),
                    Ok(data) => self.out.extend_from_slice(&data),
                    Err(frame) => {
                        if chunked {
                            encode::encode_last_chunk(&mut self.out, frame.trailers_ref());
                        }
                        self.taken = true;
                    }
                },
            }
        }
    }
}

/// How the rest of an answer body is delimited.
enum Reading {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    /// A `101`: the connection carries another protocol now.
    Upgraded,
}

/// An upstream's answer body, read off its connection as it is polled.
/// It holds the exchange's place under `max_upstream_connections` until
/// it ends or is dropped; at its end a connection fit for another request
/// goes back to its pool.
pub(crate) struct UpstreamBody {
    conn: Option<UpstreamConn>,
    reading: Reading,
    /// The rest of a request body the upstream answered before it had it
    /// all (it may still read it, as a streaming echo does).
    writing: Option<RequestWriter>,
    /// Set when the connection may serve another request after this body.
    reuse: Option<Arc<dyn Reuse>>,
    permit: Option<UpstreamPermit>,
    read_size: usize,
}

/// How an [`UpstreamBody`] is delimited, from the answer's framing.
pub(crate) enum Delimited {
    Length(u64),
    Chunked,
    UntilClose,
}

impl UpstreamBody {
    pub(crate) fn new(
        conn: UpstreamConn,
        delimited: Delimited,
        writing: Option<RequestWriter>,
        reuse: Option<Arc<dyn Reuse>>,
        permit: UpstreamPermit,
    ) -> UpstreamBody {
        UpstreamBody {
            conn: Some(conn),
            reading: match delimited {
                Delimited::Length(n) => Reading::Length(n),
                Delimited::Chunked => Reading::Chunked(ChunkedDecoder::new()),
                Delimited::UntilClose => Reading::UntilClose,
            },
            writing,
            reuse: if matches!(delimited, Delimited::UntilClose) {
                None
            } else {
                reuse
            },
            permit: Some(permit),
            read_size: FIRST_READ,
        }
    }

    /// The body of a `101`: the connection itself, to relay.
    pub(crate) fn upgraded(conn: UpstreamConn, permit: UpstreamPermit) -> UpstreamBody {
        UpstreamBody {
            conn: Some(conn),
            reading: Reading::Upgraded,
            writing: None,
            reuse: None,
            permit: Some(permit),
            read_size: FIRST_READ,
        }
    }

    /// After a `101`: the connection, the bytes the upstream sent after
    /// its head (the first of the new protocol) and the place it holds.
    pub(crate) fn into_upgraded(mut self) -> Option<(TcpStream, BytesMut, UpstreamPermit)> {
        if !matches!(self.reading, Reading::Upgraded) {
            return None;
        }
        let conn = self.conn.take()?;
        Some((conn.stream, conn.buf, self.permit.take()?))
    }

    /// The whole body was read: the connection goes back when it may.
    fn finish(&mut self) {
        self.permit = None;
        let conn = self.conn.take();
        let unsent = self.writing.take().is_some();
        if let (Some(conn), Some(reuse)) = (conn, self.reuse.take()) {
            if !unsent && conn.buf.is_empty() {
                reuse.put(conn);
            }
        }
    }

    /// The connection broke or sent a bad body: it is closed.
    fn fail(&mut self, e: std::io::Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.permit = None;
        self.writing = None;
        Poll::Ready(Some(Err(e.into())))
    }

    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(writing) = &mut self.writing {
            // The upstream may stop reading it at any time: a failed or
            // stuck write does not stop the answer.
            if let Poll::Ready(r) = writing.poll_write(&mut conn.stream, cx) {
                self.writing = None;
                if r.is_err() {
                    self.reuse = None;
                }
            }
        }
        loop {
            match &mut self.reading {
                Reading::Upgraded => return Poll::Ready(None),
                Reading::Length(left) => {
                    if *left == 0 {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    if !conn.buf.is_empty() {
                        let take = (*left).min(conn.buf.len() as u64) as usize;
                        let data = conn.buf.split_to(take).freeze();
                        *left -= take as u64;
                        if *left == 0 {
                            // Back to the pool before the client has the
                            // last bytes: the next request can use it now.
                            self.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Reading::UntilClose => {
                    if !conn.buf.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(conn.buf.split().freeze()))));
                    }
                }
                Reading::Chunked(decoder) => match decoder.decode(&mut conn.buf) {
                    Ok(Some(Piece::Data(data))) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Some(Piece::Trailers(t))) => {
                        self.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    Ok(Some(Piece::End)) => {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(None) => {}
                    Err(bad) => {
                        return self.fail(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("bad chunk in the upstream's answer: {}", bad.0),
                        ))
                    }
                },
            }
            if conn.buf.capacity() - conn.buf.len() < self.read_size / 2 {
                conn.buf.reserve(self.read_size);
            }
            let room = conn.buf.capacity() - conn.buf.len();
            match tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(n)) if n == room => {
                    self.read_size = (self.read_size * 2).min(MAX_READ);
                }
                Poll::Ready(Ok(0)) => {
                    if matches!(self.reading, Reading::UntilClose) {
                        self.conn = None;
                        self.permit = None;
                        return Poll::Ready(None);
                    }
                    return self.fail(std::io::ErrorKind::UnexpectedEof.into());
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return self.fail(e),
            }
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.get_mut().poll_body(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.reading, Reading::Length(0) | Reading::Upgraded)
    }

    fn size_hint(&self) -> SizeHint {
        match self.reading {
            Reading::Length(n) => SizeHint::with_exact(n),
            Reading::Upgraded => SizeHint::with_exact(0),
            _ => SizeHint::new(),
        }
    }
}
