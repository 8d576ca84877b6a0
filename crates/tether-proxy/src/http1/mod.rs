//! HTTP/1.x client connections, handled by tether itself.
//!
//! Why not hyper's server here: tether needs, on every request of a
//! keep-alive connection, (1) a strict look at the raw head before anything
//! acts on it (hyper quietly resolves Content-Length with
//! Transfer-Encoding), (2) the SPEC's own head timers answering 408, and
//! (3) the socket back after a `200` persistent answer that keeps
//! `Connection: Keep-Alive` on the wire, which hyper only hands back after a
//! 101 or a CONNECT. Owning the small HTTP/1.1 server loop makes each of
//! these one branch instead of a fight with the library; hyper still serves
//! HTTP/2 and is the client to every upstream.

pub(crate) mod conn;
mod relay;
