//! tether native client: persistent, resumable line sessions over HTTP/1.1
//! (SPEC 2 and 4), with transparent resume.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tether_client::ClientError> {
//! use tether_client::{ClientConfig, Session};
//! let mut session = Session::open(ClientConfig::new("http://127.0.0.1:8080/chat.pphp")).await?;
//! println!("initial body: {:?}", session.initial_body());
//! session.send_line(b"hello").await?;
//! while let Some(line) = session.next_line().await? {
//!     print!("{}", String::from_utf8_lossy(&line));
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`config`]: [`ClientConfig`], [`Backoff`] and URL parsing.
//! - [`session`]: [`Session`], the connection, the resume and the EOF/410
//!   rule (read its module docs).
//! - [`handle`]: [`Session::spawn`] → [`SessionHandle`], full duplex through
//!   a task and channels.
//! - [`connect`]: [`connect::run_connect`], the `tether connect` terminal
//!   client.
//! - [`ws`]: the same sessions over the WebSocket transport ([`ws::open`]).
//! - `resend`: the bounded buffer of unacknowledged sent lines.
//! - `http`: request heads, answer heads (httparse), plain bodies.
//! - [`error`][mod@error]: [`ClientError`].
//!
//! Lines and the SessionID come from `tether-wire` ([`tether_wire::LineReader`],
//! [`SessionId`]).

pub mod config;
pub mod connect;
pub mod error;
pub mod handle;
mod http;
mod resend;
pub mod session;
pub mod ws;

#[cfg(test)]
mod tests;

pub use config::{Backoff, ClientConfig};
pub use error::ClientError;
pub use handle::{SessionEvent, SessionHandle, SessionSender};
pub use session::Session;
pub use tether_wire::SessionId;
