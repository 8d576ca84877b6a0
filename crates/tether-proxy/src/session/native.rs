//! The native transport's link: after the answer head the connection is a
//! byte stream of lines both ways (SPEC 2).

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tether_wire::LineReader;
use tokio::io::AsyncWrite;

use super::handover::LinkState;
use super::link::{poll_read_lines, poll_write_out, ClientIo, ClientRead};

pub(crate) struct NativeLink {
    io: Box<dyn ClientIo>,
    input: LineReader,
    out: BytesMut,
    eof: bool,
}

impl NativeLink {
    pub(crate) fn new(io: Box<dyn ClientIo>, max_line: usize) -> NativeLink {
        io.tune_for_session();
        NativeLink {
            io,
            input: LineReader::new(max_line),
            out: BytesMut::new(),
            eof: false,
        }
    }

    /// The link as it moves on upgrade (SPEC 10): its bytes both ways
    /// and a descriptor of its socket; itself back when the socket cannot
    /// move (TLS).
    pub(crate) fn export(mut self) -> Result<(LinkState, OwnedFd), Box<NativeLink>> {
        let Some(fd) = self
            .io
            .plain_socket()
            .and_then(|s| s.try_clone_to_owned().ok())
        else {
            return Err(Box::new(self));
        };
        let input = self.input.buffer_mut().to_vec();
        Ok((
            LinkState::Native {
                input,
                out: self.out.to_vec(),
            },
            fd,
        ))
    }

    /// A link moved here from another process.
    pub(crate) fn restore(
        io: Box<dyn ClientIo>,
        input: &[u8],
        out: &[u8],
        max_line: usize,
    ) -> NativeLink {
        let mut link = NativeLink::new(io, max_line);
        link.input.push(input);
        link.out.extend_from_slice(out);
        link
    }

    pub(crate) fn pending(&self) -> usize {
        self.out.len()
    }

    pub(crate) fn queue(&mut self, line: &[u8]) {
        self.out.extend_from_slice(line);
    }

    pub(crate) fn poll_line(&mut self, cx: &mut Context<'_>) -> Poll<ClientRead> {
        loop {
            match self.input.next_line() {
                Ok(Some(line)) => return Poll::Ready(ClientRead::Line(line)),
                Ok(None) => {}
                Err(_) => return Poll::Ready(ClientRead::TooLong),
            }
            if self.eof {
                return Poll::Ready(ClientRead::Gone);
            }
            match poll_read_lines(&mut self.io, cx, &mut self.input) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    // Bytes after the last LF are not a line (SPEC 2).
                    self.input.discard_partial();
                    self.eof = true;
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => {
                    self.input.shrink();
                    return Poll::Pending;
                }
            }
        }
    }

    pub(crate) fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_write_out(&mut self.io, cx, &mut self.out)
    }

    pub(crate) fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            std::task::ready!(self.poll_write_some(cx))?;
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
