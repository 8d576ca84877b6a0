//! The private channel between an old and a new process (SPEC 10): a
//! Unix socket carrying length-prefixed messages, each with the file
//! descriptors that belong to it (`SCM_RIGHTS`). Blocking: each side
//! drives it from one thread at a time.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Descriptors one message may carry (a session has two; listeners are
/// sent a few at a time).
pub(crate) const MAX_FDS: usize = 16;
/// The largest message: a session with a full replay window and backlog
/// is a few MiB.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;
const HEADER: usize = 5;

pub(crate) struct Channel {
    stream: UnixStream,
}

impl Channel {
    pub(crate) fn new(stream: UnixStream) -> Channel {
        Channel { stream }
    }

    /// How long a read may wait; `None`: for ever.
    pub(crate) fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// Sends `bytes` with `fds` beside them.
    pub(crate) fn send(&mut self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if fds.len() > MAX_FDS || bytes.len() > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "message too large",
            ));
        }
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&(bytes.len() as u32).to_be_bytes());
        header[4] = fds.len() as u8;
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("descriptors do not fit"));
        }
        // The header goes with the descriptors in one call, so that they
        // arrive with its first byte; the rest is ordinary bytes.
        let mut sent = loop {
            match rustix::net::sendmsg(
                &self.stream,
                &[IoSlice::new(&header)],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Ok(n) => break n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        while sent < HEADER {
            sent += self.stream.write(&header[sent..])?;
        }
        self.stream.write_all(bytes)
    }

    /// The next message and its descriptors; `Ok(None)` when the other
    /// side closed the channel between messages.
    pub(crate) fn recv(&mut self) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        let mut header = [0u8; HEADER];
        let mut got = 0;
        let mut fds = Vec::new();
        while got < HEADER {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let received = match rustix::net::recvmsg(
                &self.stream,
                &mut [IoSliceMut::new(&mut header[got..])],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(r) => r,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = message {
                    fds.extend(received);
                }
            }
            if received.bytes == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            got += received.bytes;
        }
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("message of {len} bytes"),
            ));
        }
        if fds.len() != usize::from(header[4]) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} descriptors came where {} were announced",
                    fds.len(),
                    header[4]
                ),
            ));
        }
        let mut bytes = vec![0u8; len];
        self.stream.read_exact(&mut bytes)?;
        Ok(Some((bytes, fds)))
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn messages_arrive_whole_with_their_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Channel::new(a), Channel::new(b));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let big = vec![7u8; 3 * 1024 * 1024];
        let sender = std::thread::spawn(move || {
            a.send(b"first", &[listener.as_fd()]).unwrap();
            a.send(&big, &[]).unwrap();
            a.send(b"", &[listener.as_fd(), listener.as_fd()]).unwrap();
        });
        let (bytes, fds) = b.recv().unwrap().unwrap();
        assert_eq!(bytes, b"first");
        assert_eq!(fds.len(), 1);
        let passed = TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(passed.local_addr().unwrap(), addr);
        let (bytes, fds) = b.recv().unwrap().unwrap();
        assert_eq!(bytes.len(), 3 * 1024 * 1024);
        assert!(fds.is_empty());
        let (bytes, fds) = b.recv().unwrap().unwrap();
        assert!(bytes.is_empty());
        assert_eq!(fds.len(), 2);
        sender.join().unwrap();
        assert!(b.recv().unwrap().is_none(), "the end between messages");
    }

    #[test]
    fn a_channel_cut_in_a_message_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut b = Channel::new(b);
        let mut raw = a;
        raw.write_all(&[0, 0, 0, 10, 0, 1, 2]).unwrap();
        drop(raw);
        assert!(b.recv().is_err());
    }

    #[test]
    fn an_announced_size_beyond_the_limit_is_refused() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut b = Channel::new(b);
        a.write_all(&[0xff, 0xff, 0xff, 0xff, 0]).unwrap();
        assert!(b.recv().is_err());
    }
}
