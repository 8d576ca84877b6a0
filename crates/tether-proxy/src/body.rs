//! The one body type that flows through the gateway, in both directions.
//!
//! Concrete on purpose (no boxing on the request path): a body is empty, a
//! small buffer the gateway wrote itself, a hyper body from the origin or an
//! HTTP/2 client, or a channel fed by the HTTP/1 connection task that reads
//! the client's body as the origin takes it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{mpsc, oneshot};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a client body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("bad chunk in the client's body: {0}")]
    BadChunk(&'static str),
    #[error("the client closed the connection mid-body")]
    Truncated,
    #[error("the client's body stalled")]
    Stalled,
}

pub enum Body {
    Empty,
    Full(Option<Bytes>),
    Incoming(hyper::body::Incoming),
    Channel(ChannelBody),
}

impl Body {
    pub fn full(data: impl Into<Bytes>) -> Body {
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
pub struct ChannelBody {
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
            Body::Channel(c) => c.length == Some(0),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            Body::Incoming(b) => b.size_hint(),
            Body::Channel(c) => c.length.map_or_else(SizeHint::new, SizeHint::with_exact),
        }
    }
}
