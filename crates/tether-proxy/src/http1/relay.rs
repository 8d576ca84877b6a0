//! Byte relay for upgraded connections (WebSocket and other `101`s).
//!
//! Unlike `tokio::io::copy_bidirectional`, which keeps an 8 KiB buffer per
//! direction for the life of the connection, a direction here holds a
//! buffer only while bytes are in flight: an idle relayed WebSocket costs
//! its two sockets and little else.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const CHUNK: usize = 16 * 1024;

/// One direction of the relay.
#[derive(Default)]
struct Pipe {
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
    /// The reader ended and its end was passed on.
    done: bool,
}

impl Pipe {
    /// Moves bytes from `from` to `to` until it would block or ends.
    fn poll_pipe<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if self.start == self.end {
                let buf = self
                    .buf
                    .get_or_insert_with(|| vec![0u8; CHUNK].into_boxed_slice());
                let mut rb = ReadBuf::new(buf);
                match Pin::new(&mut *from).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.buf = None;
                            std::task::ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                            self.done = true;
                            continue;
                        }
                        self.start = 0;
                        self.end = n;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Idle: give the buffer back.
                        self.buf = None;
                        return Poll::Pending;
                    }
                }
            }
            let buf = self.buf.as_ref().expect("bytes in flight have a buffer");
            match Pin::new(&mut *to).poll_write(cx, &buf[self.start..self.end]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.start += n;
                    if self.start == self.end {
                        std::task::ready!(Pin::new(&mut *to).poll_flush(cx))?;
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Relays both ways until both directions ended or one failed.
pub(crate) async fn relay<A, B>(a: &mut A, b: &mut B) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut a_to_b = Pipe::default();
    let mut b_to_a = Pipe::default();
    std::future::poll_fn(|cx| {
        let ab = a_to_b.poll_pipe(cx, a, b)?;
        let ba = b_to_a.poll_pipe(cx, b, a)?;
        if ab.is_ready() && ba.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn relays_both_ways_and_passes_the_end_on() {
        let (mut client, mut relay_a) = tokio::io::duplex(64);
        let (mut relay_b, mut server) = tokio::io::duplex(64);
        let task = tokio::spawn(async move { relay(&mut relay_a, &mut relay_b).await });
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let send = big.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&send).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, big);
        server.write_all(b"pong").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"pong");
        task.await.unwrap().unwrap();
    }
}
