//! Peer connections (SPEC 11): how one instance hands a client's resume to
//! the instance that owns the session.
//!
//! The wire, after TCP connect (`D` dials, `L` listens):
//!
//! ```text
//! L -> D   "TETHER-PEER/1\n" c1            c1: 32 random bytes
//! D -> L   "TETHER-PEER/1\n" m1 c2         m1 = HMAC-SHA256(token, "dial" c1 node)
//! L -> D   m2                              m2 = HMAC-SHA256(token, "serve" c2 node)
//! D -> L   len:u16be "client=IP:PORT&https=0|1"
//! D -> L   the client's request (a native resume, or the WebSocket upgrade)
//! ```
//!
//! `node` is the listener's node name, so a dialer reaches the instance
//! the SessionID names or nobody. The token itself never crosses the wire;
//! MACs are checked by `ring::hmac::verify`, in constant time. Anything else
//! is closed at once and counted (`tether_cluster_peer_refused_total`).
//! After the preamble the listener serves the connection exactly as a
//! client connection from that address: the same HTTP/1.1 loop, the same
//! resume, the same per-IP limits.

use std::net::SocketAddr;
use std::time::Duration;

use ring::hmac;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Cluster;
use crate::metrics::PeerRefusal;

const MAGIC: &[u8; 14] = b"TETHER-PEER/1\n";
const NONCE: usize = 32;
const MAC: usize = 32;
/// The longest preamble: an address and two flags.
const MAX_PREAMBLE: usize = 256;
/// The whole handshake, on the listening side, must be done in this.
pub(crate) const HANDSHAKE_TIME: Duration = Duration::from_secs(5);

fn mac(key: &hmac::Key, role: &[u8], nonce: &[u8], node: &str) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(role);
    ctx.update(nonce);
    ctx.update(node.as_bytes());
    ctx.sign()
}

fn nonce() -> [u8; NONCE] {
    let mut n = [0u8; NONCE];
    getrandom::fill(&mut n).expect("the operating system's random source failed");
    n
}

/// How a relayed client came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Preamble {
    pub(crate) client: SocketAddr,
    pub(crate) https: bool,
}

impl Preamble {
    fn encode(&self) -> Vec<u8> {
        let text = format!("client={}&https={}", self.client, u8::from(self.https));
        let mut out = Vec::with_capacity(2 + text.len());
        out.extend_from_slice(&(text.len() as u16).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
        out
    }

    fn parse(text: &[u8]) -> Option<Preamble> {
        let text = std::str::from_utf8(text).ok()?;
        let (mut client, mut https) = (None, None);
        for pair in text.split('&') {
            match pair.split_once('=')? {
                ("client", v) => client = v.parse().ok(),
                ("https", "0") => https = Some(false),
                ("https", "1") => https = Some(true),
                _ => return None,
            }
        }
        Some(Preamble {
            client: client?,
            https: https?,
        })
    }
}

/// Binds `peer_listen`, with SO_REUSEPORT so that the new process of an
/// upgrade (SPEC 10) can bind it while the old one still serves.
pub(crate) fn bind(addr: SocketAddr) -> Result<TcpListener, super::ClusterError> {
    use socket2::{Domain, Socket, Type};
    let err = |source| super::ClusterError::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_reuse_port(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

/// The listening side of the handshake and the preamble.
pub(crate) async fn handshake(
    mut stream: TcpStream,
    cluster: &Cluster,
) -> Result<(TcpStream, Preamble), PeerRefusal> {
    let c1 = nonce();
    let mut hello = Vec::with_capacity(MAGIC.len() + NONCE);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&c1);
    stream
        .write_all(&hello)
        .await
        .map_err(|_| PeerRefusal::Protocol)?;
    let mut answer = [0u8; MAGIC.len() + MAC + NONCE];
    stream
        .read_exact(&mut answer)
        .await
        .map_err(|_| PeerRefusal::Protocol)?;
    if &answer[..MAGIC.len()] != MAGIC {
        return Err(PeerRefusal::Protocol);
    }
    let (m1, c2) = answer[MAGIC.len()..].split_at(MAC);
    let mut signed = Vec::with_capacity(4 + NONCE + cluster.node.len());
    signed.extend_from_slice(b"dial");
    signed.extend_from_slice(&c1);
    signed.extend_from_slice(cluster.node.as_bytes());
    hmac::verify(&cluster.key, &signed, m1).map_err(|_| PeerRefusal::Token)?;
    let m2 = mac(&cluster.key, b"serve", c2, &cluster.node);
    stream
        .write_all(m2.as_ref())
        .await
        .map_err(|_| PeerRefusal::Protocol)?;
    let len = stream.read_u16().await.map_err(|_| PeerRefusal::Protocol)? as usize;
    if len > MAX_PREAMBLE {
        return Err(PeerRefusal::Protocol);
    }
    let mut text = vec![0u8; len];
    stream
        .read_exact(&mut text)
        .await
        .map_err(|_| PeerRefusal::Protocol)?;
    let preamble = Preamble::parse(&text).ok_or(PeerRefusal::Protocol)?;
    Ok((stream, preamble))
}

/// Dials `node` at `addr` and completes the handshake and the preamble,
/// all within the cluster's reach timeout (`origin_connect_timeout`):
/// "reached" means the owner proved it knows the token (SPEC 11), not
/// merely that a connect succeeded.
pub(crate) async fn dial(
    cluster: &Cluster,
    addr: SocketAddr,
    node: &str,
    preamble: Preamble,
) -> Option<TcpStream> {
    let shake = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        let mut hello = [0u8; MAGIC.len() + NONCE];
        stream.read_exact(&mut hello).await.ok()?;
        if &hello[..MAGIC.len()] != MAGIC {
            return None;
        }
        let c1 = &hello[MAGIC.len()..];
        let c2 = nonce();
        let m1 = mac(&cluster.key, b"dial", c1, node);
        let mut answer = Vec::with_capacity(MAGIC.len() + MAC + NONCE);
        answer.extend_from_slice(MAGIC);
        answer.extend_from_slice(m1.as_ref());
        answer.extend_from_slice(&c2);
        stream.write_all(&answer).await.ok()?;
        let mut m2 = [0u8; MAC];
        stream.read_exact(&mut m2).await.ok()?;
        let mut signed = Vec::with_capacity(5 + NONCE + node.len());
        signed.extend_from_slice(b"serve");
        signed.extend_from_slice(&c2);
        signed.extend_from_slice(node.as_bytes());
        hmac::verify(&cluster.key, &signed, &m2).ok()?;
        stream.write_all(&preamble.encode()).await.ok()?;
        Some(stream)
    };
    tokio::time::timeout(cluster.reach_timeout, shake)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_round_trip() {
        let p = Preamble {
            client: "10.1.2.3:4567".parse().unwrap(),
            https: true,
        };
        let wire = p.encode();
        assert_eq!(Preamble::parse(&wire[2..]), Some(p));
        assert!(Preamble::parse(b"client=1.2.3.4:5&https=2").is_none());
        assert!(Preamble::parse(b"client=1.2.3.4:5&https=0&x=1").is_none());
        assert!(Preamble::parse(b"https=0").is_none());
    }
}
