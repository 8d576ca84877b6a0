//! Reads a client's request body off the connection as the upstream takes
//! it, one frame at a time.
//!
//! `step` is cancel-safe: it reserves channel capacity before it reads, and
//! bytes read stay in the connection's buffer until a frame is sent, so the
//! connection task can `select!` on it against the response without losing
//! a byte.

use std::time::Duration;

use bytes::BytesMut;
use http_body::Frame;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

use super::{BodySender, ClientBodyError};
use crate::codec::chunked::{ChunkedDecoder, Piece};

/// Read-buffer growth step while reading a body.
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PumpEvent {
    /// The upstream started to read the body (time for `100 Continue`).
    Demanded,
    /// One frame went upstream.
    Progress,
    /// The whole body went upstream.
    Finished,
    /// The upstream dropped the body unread.
    Abandoned,
}

enum Decode {
    Length(u64),
    Chunked(ChunkedDecoder),
    /// An upstream answer without length: the body ends at EOF.
    UntilEof,
}

pub(crate) struct BodyPump {
    tx: Option<mpsc::Sender<Result<Frame<bytes::Bytes>, ClientBodyError>>>,
    demand: Option<oneshot::Receiver<()>>,
    decode: Decode,
    /// The whole body was read off the connection.
    complete: bool,
}

impl BodyPump {
    pub(crate) fn new(sender: BodySender, length: Option<u64>) -> BodyPump {
        BodyPump {
            tx: Some(sender.tx),
            demand: Some(sender.demand),
            decode: match length {
                Some(n) => Decode::Length(n),
                None => Decode::Chunked(ChunkedDecoder::new()),
            },
            complete: false,
        }
    }

    /// A body that ends when the connection does.
    pub(crate) fn until_eof(sender: BodySender) -> BodyPump {
        BodyPump {
            tx: Some(sender.tx),
            demand: Some(sender.demand),
            decode: Decode::UntilEof,
            complete: false,
        }
    }

    /// Whether the body is still being passed upstream.
    pub(crate) fn active(&self) -> bool {
        self.tx.is_some()
    }

    /// Whether the whole body was read off the connection; if not, what is
    /// left of it must never be read as a next request.
    pub(crate) fn complete(&self) -> bool {
        self.complete
    }

    /// Reads the rest of the body and drops it (a resume's body, SPEC 2),
    /// at most `limit` bytes of it.
    pub(crate) async fn discard<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        buf: &mut BytesMut,
        stall: Duration,
        limit: u64,
    ) -> Result<(), ClientBodyError> {
        let (tx, mut rx) = mpsc::channel(1);
        self.tx = Some(tx);
        self.demand = None;
        let mut taken = 0u64;
        while !self.complete {
            self.step(reader, buf, stall).await?;
            while let Ok(frame) = rx.try_recv() {
                taken += frame?.data_ref().map_or(0, |d| d.len() as u64);
            }
            if taken > limit {
                return Err(ClientBodyError::Stalled);
            }
        }
        Ok(())
    }

    pub(crate) async fn step<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        buf: &mut BytesMut,
        stall: Duration,
    ) -> Result<PumpEvent, ClientBodyError> {
        if let Some(demand) = &mut self.demand {
            let asked = demand.await.is_ok();
            self.demand = None;
            if !asked {
                self.tx = None;
                return Ok(PumpEvent::Abandoned);
            }
            return Ok(PumpEvent::Demanded);
        }
        let Some(tx) = &self.tx else {
            return Ok(PumpEvent::Finished);
        };
        let Ok(permit) = tx.reserve().await else {
            self.tx = None;
            return Ok(PumpEvent::Abandoned);
        };
        loop {
            match &mut self.decode {
                Decode::Length(left) => {
                    if !buf.is_empty() {
                        let take = (*left).min(buf.len() as u64) as usize;
                        let data = buf.split_to(take).freeze();
                        *left -= take as u64;
                        permit.send(Ok(Frame::data(data)));
                        if *left == 0 {
                            self.tx = None;
                            self.complete = true;
                            return Ok(PumpEvent::Finished);
                        }
                        return Ok(PumpEvent::Progress);
                    }
                }
                Decode::UntilEof => {
                    if !buf.is_empty() {
                        permit.send(Ok(Frame::data(buf.split().freeze())));
                        return Ok(PumpEvent::Progress);
                    }
                }
                Decode::Chunked(dec) => match dec.decode(buf) {
                    Ok(Some(Piece::Data(data))) => {
                        permit.send(Ok(Frame::data(data)));
                        return Ok(PumpEvent::Progress);
                    }
                    Ok(Some(Piece::Trailers(t))) => {
                        permit.send(Ok(Frame::trailers(t)));
                        self.tx = None;
                        self.complete = true;
                        return Ok(PumpEvent::Finished);
                    }
                    Ok(Some(Piece::End)) => {
                        drop(permit);
                        self.tx = None;
                        self.complete = true;
                        return Ok(PumpEvent::Finished);
                    }
                    Ok(None) => {}
                    Err(bad) => {
                        permit.send(Err(ClientBodyError::BadChunk(bad.0)));
                        self.tx = None;
                        return Err(ClientBodyError::BadChunk(bad.0));
                    }
                },
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ_CHUNK);
            }
            match tokio::time::timeout(stall, reader.read_buf(buf)).await {
                Ok(Ok(0)) if matches!(self.decode, Decode::UntilEof) => {
                    drop(permit);
                    self.tx = None;
                    self.complete = true;
                    return Ok(PumpEvent::Finished);
                }
                Ok(Ok(0)) | Ok(Err(_)) => {
                    permit.send(Err(ClientBodyError::Truncated));
                    self.tx = None;
                    return Err(ClientBodyError::Truncated);
                }
                Ok(Ok(_)) => {}
                Err(_) => {
                    permit.send(Err(ClientBodyError::Stalled));
                    self.tx = None;
                    return Err(ClientBodyError::Stalled);
                }
            }
        }
    }
}
