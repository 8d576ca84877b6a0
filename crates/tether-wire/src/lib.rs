//! tether's wire pieces: everything about the session channel that can be
//! decided without a socket.
//!
//! The gateway (`tether-proxy`) and the client library (`tether-client`)
//! both speak the wire contract of SPEC 2, 3, 4 and 7. The parts of it that
//! are pure functions of bytes live here, so that unit tests, property tests
//! and fuzzers call them directly (DESIGN, *Pure core, thin I/O*). Nothing in
//! this crate performs I/O, spawns, locks or allocates more than the data it
//! returns; an idle session holds no buffer memory from it.
//!
//! # Layout
//!
//! - [`line`](mod@line): [`LineReader`], splitting a byte stream into lines with the
//!   `max_line` limit (SPEC 2, *Lines*).
//! - [`headers`]: [`SessionId`] (SPEC 7), `Session-Received`
//!   ([`parse_session_received`], SPEC 2 step 3) and the `Accept` capability
//!   check ([`accepts_persistent`], SPEC 2 step 1).
//! - [`control`]: the WebSocket control records ([`ClientControl`],
//!   [`GatewayOpen`], [`encode_open`]; SPEC 3).
//! - [`replay`]: [`ReplayWindow`], the lines kept for resume and the resume
//!   rule `o - 1 <= c <= S` (SPEC 4), on [`LineQueue`], lines stored back
//!   to back in one buffer (also a session's backlog).
//! - [`http1`]: the strict HTTP/1 pieces without `http` types: chunked
//!   bodies and an answer's framing (SPEC 5), for the gateway and the
//!   native client alike.
//! - [`error`]: [`WireError`], every error above and the answer it gets.
//!
//! # Example
//!
//! A gateway's worker side splits output into lines, keeps them for replay
//! and answers a resume:
//!
//! ```
//! use tether_wire::{LineReader, ReplayWindow};
//!
//! let mut from_worker = LineReader::new(64 * 1024);
//! let mut window = ReplayWindow::new(256 * 1024);
//! from_worker.push(b"hello\nworld\npart");
//! while let Some(line) = from_worker.next_line()? {
//!     window.push(line); // and write it to the client
//! }
//! assert_eq!(from_worker.pending_partial(), 4);
//!
//! // The client comes back having received 1 line: replay line 2.
//! let replay: Vec<_> = window.try_replay_after(1).expect("resumable").collect();
//! assert_eq!(replay, [&b"world\n"[..]]);
//! // A count beyond what was sent is refused: 410.
//! assert!(!window.can_resume(3));
//! # Ok::<(), tether_wire::LineTooLong>(())
//! ```

pub mod control;
pub mod error;
pub mod headers;
pub mod http1;
pub mod line;
pub mod replay;

pub use control::{encode_open, BadControl, ClientControl, GatewayOpen};
pub use error::WireError;
pub use headers::{
    accepts_persistent, parse_qvalue, parse_session_received, BadCount, BadSessionId, SessionId,
    MAX_COUNT, SESSION_ID_MAX_LEN, SESSION_ID_MIN_LEN,
};
pub use line::{complete_lines, LineReader, LineTooLong};
pub use replay::{split_lines, LineQueue, Lines, ReplayWindow};
