//! The one body type that flows through the gateway, in both directions.
//!
//! Concrete on purpose (no boxing on the request path): a body is empty, a
//! small buffer the gateway wrote itself, an answer read off an upstream
//! connection, a hyper body from an HTTP/2 client, or a channel fed by the HTTP/1 connection task that reads
//! the client's body as the origin takes it.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{mpsc, oneshot};

pub(crate) mod pump;
pub(crate) mod upstream;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a client body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientBodyError {
    #[error("bad chunk in the client's body: {0}")]
    BadChunk(&'static str),
    #[error("the client closed the connection mid-body")]
    Truncated,
    #[error("the client's body stalled")]
    Stalled,
}

/// The source of a streamed answer that a session writes into (the HTTP
/// transport's down channel): events as they come, `None` at its end.
/// Defined here, implemented by the session layer above.
pub(crate) trait EventSource: Send + Sync {
    fn poll_events(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>>;
}

pub(crate) enum Body {
    Empty,
    Full(Option<Bytes>),
    Incoming(hyper::body::Incoming),
    Channel(ChannelBody),
    /// An upstream's answer, read off its connection as it is polled.
    Upstream(Box<upstream::UpstreamBody>),
    /// A request body on its way upstream, watched for its end and stalls.
    Watched(Box<WatchedBody>),
    /// A session's down channel of Server-Sent Events (SPEC 13), fed by
    /// its session task for as long as the session keeps it.
    Sse(Box<dyn EventSource>),
}

/// One place among an upstream's `max_upstream_connections`.
pub(crate) type UpstreamPermit = tokio::sync::OwnedSemaphorePermit;

/// How a watched request body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyEnd {
    /// Every frame went upstream (or the upstream dropped the body).
    Complete,
    /// No frame arrived from the client within the stall time.
    Stalled,
}

/// A request body that says when it is over, so that the wait for the
/// answer head (`origin_response_timeout`) starts at the end of the body
/// (SPEC 5), and that ends with an error when the client stops sending.
pub(crate) struct WatchedBody {
    inner: Body,
    ended: Option<oneshot::Sender<BodyEnd>>,
    stall: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The upstream asked for a frame that has not come yet: the stall
    /// runs from that ask, never while the upstream itself is slow.
    waiting: bool,
}

impl WatchedBody {
    pub(crate) fn wrap(inner: Body, stall: Duration) -> (Body, oneshot::Receiver<BodyEnd>) {
        let (tx, rx) = oneshot::channel();
        let body = WatchedBody {
            inner,
            ended: Some(tx),
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
            waiting: false,
        };
        (Body::Watched(Box::new(body)), rx)
    }

    fn end(&mut self, how: BodyEnd) {
        if let Some(tx) = self.ended.take() {
            let _ = tx.send(how);
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.waiting {
            self.waiting = true;
            let until = tokio::time::Instant::now() + self.stall;
            self.timer.as_mut().reset(until);
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_ready() {
            self.waiting = false;
        }
        match polled {
            Poll::Ready(None) => {
                self.end(BodyEnd::Complete);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if frame.is_trailers() || self.inner.is_end_stream() {
                    self.end(BodyEnd::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // The HTTP/1 body pump may see the stall first: still the
                // client's fault (408), not the upstream's (502).
                let stalled = e
                    .downcast_ref::<ClientBodyError>()
                    .is_some_and(|e| matches!(e, ClientBodyError::Stalled));
                self.end(if stalled {
                    BodyEnd::Stalled
                } else {
                    BodyEnd::Complete
                });
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => {
                if self.timer.as_mut().poll(cx).is_ready() {
                    self.end(BodyEnd::Stalled);
                    return Poll::Ready(Some(Err(ClientBodyError::Stalled.into())));
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        // Dropped by the upstream client: nothing more will be sent.
        self.end(BodyEnd::Complete);
    }
}

impl Body {
    pub(crate) fn full(data: impl Into<Bytes>) -> Body {
        Body::Full(Some(data.into()))
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Body::Empty => "empty",
            Body::Full(_) => "full",
            Body::Incoming(_) => "incoming",
            Body::Channel(_) => "channel",
            Body::Upstream(_) => "upstream",
            Body::Watched(_) => "watched",
            Body::Sse(_) => "sse",
        };
        write!(f, "Body({kind})")
    }
}

/// A request body streamed from an HTTP/1 client connection.
///
/// The connection task waits on `demand` before it reads the body (so that
/// `100 Continue` is only sent once the origin is actually taking the body)
/// and then feeds frames through a channel of capacity one: memory stays
/// bounded whatever the body's size.
pub(crate) struct ChannelBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, ClientBodyError>>,
    demand: Option<oneshot::Sender<()>>,
    length: Option<u64>,
}

/// The connection task's end of a [`ChannelBody`].
pub(crate) struct BodySender {
    pub(crate) tx: mpsc::Sender<Result<Frame<Bytes>, ClientBodyError>>,
    pub(crate) demand: oneshot::Receiver<()>,
}

impl ChannelBody {
    pub(crate) fn new(length: Option<u64>) -> (ChannelBody, BodySender) {
        let (tx, rx) = mpsc::channel(1);
        let (demand_tx, demand_rx) = oneshot::channel();
        (
            ChannelBody {
                rx,
                demand: Some(demand_tx),
                length,
            },
            BodySender {
                tx,
                demand: demand_rx,
            },
        )
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Body::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::Upstream(b) => Pin::new(b.as_mut()).poll_frame(cx),
            Body::Watched(w) => w.poll_frame(cx),
            Body::Sse(s) => s.poll_events(cx).map(|d| d.map(|d| Ok(Frame::data(d)))),
            Body::Channel(c) => {
                if let Some(demand) = c.demand.take() {
                    let _ = demand.send(());
                }
                c.rx.poll_recv(cx).map(|f| f.map(|r| r.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(d) => d.is_none(),
            Body::Incoming(b) => b.is_end_stream(),
            Body::Upstream(b) => b.is_end_stream(),
            Body::Watched(w) => w.inner.is_end_stream(),
            Body::Sse(_) => false,
            Body::Channel(c) => c.length == Some(0),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            Body::Incoming(b) => b.size_hint(),
            Body::Upstream(b) => b.size_hint(),
            Body::Watched(w) => w.inner.size_hint(),
            Body::Sse(_) => SizeHint::new(),
            Body::Channel(c) => c.length.map_or_else(SizeHint::new, SizeHint::with_exact),
        }
    }
}
