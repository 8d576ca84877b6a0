//! The crate's one error enum, [`WireError`].
//!
//! # Why
//!
//! DESIGN (*Errors know their answer*): each crate has one error enum and
//! each variant maps to exactly one answer. The wire pieces keep a precise
//! error type per function ([`LineTooLong`], [`BadSessionId`], [`BadCount`],
//! [`BadControl`]) so callers match on what can actually happen; this enum
//! gathers them, via `From`, for code that handles several at once, and says
//! which answer of SPEC 2, 3 and 4 each one gets.

use std::fmt;

use crate::control::BadControl;
use crate::headers::{BadCount, BadSessionId};
use crate::line::LineTooLong;

/// Any error of the wire pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// SPEC 2, *Lines*: the session ends with reason `line_too_long`
    /// (WebSocket close 1009).
    LineTooLong(LineTooLong),
    /// SPEC 4: a malformed SessionID is answered like an unknown one, `410`
    /// (WebSocket 4410).
    BadSessionId(BadSessionId),
    /// SPEC 2 step 3: a malformed `Session-Received` is `400`.
    BadCount(BadCount),
    /// SPEC 3: a malformed control record closes with 4400.
    BadControl(BadControl),
}

impl WireError {
    /// The HTTP status of the answer (a WebSocket closes with `4000 +` it),
    /// or `None` for [`WireError::LineTooLong`], which ends an open session
    /// rather than answering a request.
    pub fn status(&self) -> Option<u16> {
        match self {
            WireError::LineTooLong(_) => None,
            WireError::BadSessionId(_) => Some(410),
            WireError::BadCount(_) | WireError::BadControl(_) => Some(400),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::LineTooLong(e) => e.fmt(f),
            WireError::BadSessionId(e) => e.fmt(f),
            WireError::BadCount(e) => e.fmt(f),
            WireError::BadControl(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WireError::LineTooLong(e) => Some(e),
            WireError::BadSessionId(e) => Some(e),
            WireError::BadCount(e) => Some(e),
            WireError::BadControl(e) => Some(e),
        }
    }
}

impl From<LineTooLong> for WireError {
    fn from(e: LineTooLong) -> WireError {
        WireError::LineTooLong(e)
    }
}

impl From<BadSessionId> for WireError {
    fn from(e: BadSessionId) -> WireError {
        WireError::BadSessionId(e)
    }
}

impl From<BadCount> for WireError {
    fn from(e: BadCount) -> WireError {
        WireError::BadCount(e)
    }
}

impl From<BadControl> for WireError {
    fn from(e: BadControl) -> WireError {
        WireError::BadControl(e)
    }
}
