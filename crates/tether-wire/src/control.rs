//! WebSocket control records (SPEC 3, *Binary frames carry control records*).
//!
//! # Why
//!
//! Over WebSocket the session's metadata cannot travel in HTTP headers after
//! the upgrade, so the client and the gateway exchange small form-encoded
//! ASCII records in binary frames:
//!
//! - the client's first message: empty for a new session, or
//!   `sid=<id>&received=<n>` to resume, and later `ack=<n>`
//!   ([`ClientControl`]);
//! - the gateway's first message on success:
//!   `sid=<id>&received=<m>&status=<s>&initial=<k>` ([`GatewayOpen`],
//!   [`encode_open`]).
//!
//! A record that does not parse closes the connection with 4400 (SPEC 3,
//! *Close codes*), before any session opens.
//!
//! # Strictness
//!
//! Keys are exact and case-sensitive; each appears once; unknown keys are
//! errors; the order of keys is free. Values are taken as they are, with no
//! percent-decoding: every legal value (SessionID characters, digits) is
//! unreserved in form encoding, so an encoder never escapes it, and SPEC 7
//! compares a SessionID "as the exact string it was issued as". Counts are
//! `1*DIGIT` below 2^63, as in `Session-Received`; a status is three digits
//! from 100 to 599.

use std::fmt;
use std::io::Write as _;

use crate::headers::{parse_count, SessionId};

/// A control record that does not parse: close 4400 (SPEC 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadControl {
    /// A pair without `=`, or an empty key or pair (e.g. `a=1&&b=2`).
    Syntax,
    /// A key this record does not have.
    UnknownKey,
    /// A key given twice.
    DuplicateKey,
    /// A key this record requires is absent.
    MissingKey,
    /// Keys of different records together (`ack` with `sid`).
    MixedKeys,
    /// `sid` is not a well-formed SessionID.
    BadSessionId,
    /// A count or status is not well formed or out of range.
    BadNumber,
}

impl BadControl {
    /// A short reason, for close frames, logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            BadControl::Syntax => "bad control record syntax",
            BadControl::UnknownKey => "unknown control record key",
            BadControl::DuplicateKey => "duplicate control record key",
            BadControl::MissingKey => "missing control record key",
            BadControl::MixedKeys => "mixed control record keys",
            BadControl::BadSessionId => "malformed sid",
            BadControl::BadNumber => "malformed number",
        }
    }
}

impl fmt::Display for BadControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for BadControl {}

/// A control record from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientControl {
    /// Empty payload: open a new session.
    New,
    /// `sid=<id>&received=<n>`: resume session `sid`, the client having
    /// received `received` lines.
    Resume {
        /// The session to resume.
        sid: SessionId,
        /// Lines the client has received.
        received: u64,
    },
    /// `ack=<n>`: the client has received lines up to `n` (advisory).
    Ack(u64),
}

impl ClientControl {
    /// Parses a client's binary-frame payload.
    pub fn parse(payload: &[u8]) -> Result<ClientControl, BadControl> {
        if payload.is_empty() {
            return Ok(ClientControl::New);
        }
        let [sid, received, ack] = fields(payload, ["sid", "received", "ack"])?;
        match (sid, received, ack) {
            (Some(sid), Some(received), None) => Ok(ClientControl::Resume {
                sid: SessionId::parse(sid).map_err(|_| BadControl::BadSessionId)?,
                received: count(received)?,
            }),
            (None, None, Some(ack)) => Ok(ClientControl::Ack(count(ack)?)),
            (_, _, Some(_)) => Err(BadControl::MixedKeys),
            _ => Err(BadControl::MissingKey),
        }
    }

    /// The record's payload, as a client sends it.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ClientControl::New => Vec::new(),
            ClientControl::Resume { sid, received } => {
                let mut out = Vec::with_capacity(sid.len() + 34);
                let _ = write!(out, "sid={sid}&received={received}");
                out
            }
            ClientControl::Ack(n) => {
                let mut out = Vec::with_capacity(24);
                let _ = write!(out, "ack={n}");
                out
            }
        }
    }
}

/// The gateway's first record on success, as the client library reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayOpen {
    /// The session's ID (minted for a new session, echoed on resume).
    pub sid: SessionId,
    /// Lines of this client that the gateway delivered to the worker; the
    /// client resends its lines after this count.
    pub received: u64,
    /// Status of the worker's answer that opened the session.
    pub status: u16,
    /// Byte length of the initial body, sent next in one text frame when
    /// non-zero (always 0 on resume).
    pub initial: u64,
}

impl GatewayOpen {
    /// Parses the gateway's first binary-frame payload.
    pub fn parse(payload: &[u8]) -> Result<GatewayOpen, BadControl> {
        let [sid, received, status, initial] =
            fields(payload, ["sid", "received", "status", "initial"])?;
        match (sid, received, status, initial) {
            (Some(sid), Some(received), Some(status), Some(initial)) => Ok(GatewayOpen {
                sid: SessionId::parse(sid).map_err(|_| BadControl::BadSessionId)?,
                received: count(received)?,
                status: parse_status(status)?,
                initial: count(initial)?,
            }),
            _ => Err(BadControl::MissingKey),
        }
    }

    /// The record's payload: the same bytes as [`encode_open`].
    pub fn encode(&self) -> Vec<u8> {
        encode_open(&self.sid, self.received, self.status, self.initial)
    }
}

/// The gateway's first record on success, exactly
/// `sid=<id>&received=<m>&status=<s>&initial=<k>` (SPEC 3). `status` is an
/// HTTP status (100..=599).
pub fn encode_open(sid: &SessionId, received: u64, status: u16, initial: u64) -> Vec<u8> {
    debug_assert!((100..=599).contains(&status), "status {status}");
    let mut out = Vec::with_capacity(sid.len() + 70);
    let _ = write!(
        out,
        "sid={sid}&received={received}&status={status}&initial={initial}"
    );
    out
}

/// Splits `payload` into `key=value` pairs and files each value under its
/// key's index in `keys`.
fn fields<'a, const N: usize>(
    payload: &'a [u8],
    keys: [&str; N],
) -> Result<[Option<&'a [u8]>; N], BadControl> {
    let mut values = [None; N];
    for pair in payload.split(|&b| b == b'&') {
        let eq = pair
            .iter()
            .position(|&b| b == b'=')
            .ok_or(BadControl::Syntax)?;
        let (key, value) = (&pair[..eq], &pair[eq + 1..]);
        if key.is_empty() {
            return Err(BadControl::Syntax);
        }
        let i = keys
            .iter()
            .position(|k| k.as_bytes() == key)
            .ok_or(BadControl::UnknownKey)?;
        if values[i].replace(value).is_some() {
            return Err(BadControl::DuplicateKey);
        }
    }
    Ok(values)
}

fn count(value: &[u8]) -> Result<u64, BadControl> {
    parse_count(value).map_err(|_| BadControl::BadNumber)
}

fn parse_status(value: &[u8]) -> Result<u16, BadControl> {
    match value {
        [a @ b'1'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9'] => {
            Ok(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => Err(BadControl::BadNumber),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "abcdefghijklmnopqrstuvwxyz";

    fn sid() -> SessionId {
        SessionId::parse(SID.as_bytes()).unwrap()
    }

    #[test]
    fn client_records() {
        assert_eq!(ClientControl::parse(b""), Ok(ClientControl::New));
        let resume = ClientControl::Resume {
            sid: sid(),
            received: 12,
        };
        assert_eq!(
            ClientControl::parse(format!("sid={SID}&received=12").as_bytes()),
            Ok(resume.clone())
        );
        assert_eq!(
            ClientControl::parse(format!("received=012&sid={SID}").as_bytes()),
            Ok(resume)
        );
        assert_eq!(ClientControl::parse(b"ack=7"), Ok(ClientControl::Ack(7)));
        assert_eq!(ClientControl::parse(b"ack=0"), Ok(ClientControl::Ack(0)));
    }

    #[test]
    fn client_record_errors() {
        use BadControl::*;
        let cases: &[(&str, BadControl)] = &[
            ("ack", Syntax),
            ("=1", Syntax),
            ("ack=1&", Syntax),
            ("&ack=1", Syntax),
            ("ack=1&&ack=2", Syntax),
            ("ACK=1", UnknownKey),
            ("nack=1", UnknownKey),
            ("ack=1&x=2", UnknownKey),
            ("ack=1&ack=1", DuplicateKey),
            ("received=1", MissingKey),
            ("ack=", BadNumber),
            ("ack=-1", BadNumber),
            ("ack=+1", BadNumber),
            ("ack= 1", BadNumber),
            ("ack=9223372036854775808", BadNumber),
            ("ack=1&received=2", MixedKeys),
        ];
        for (payload, err) in cases {
            assert_eq!(
                ClientControl::parse(payload.as_bytes()),
                Err(*err),
                "{payload}"
            );
        }
        assert_eq!(
            ClientControl::parse(format!("sid={SID}").as_bytes()),
            Err(MissingKey)
        );
        assert_eq!(
            ClientControl::parse(format!("sid={SID}&received=1&sid={SID}").as_bytes()),
            Err(DuplicateKey)
        );
        assert_eq!(
            ClientControl::parse(format!("sid={SID}&received=1&ack=1").as_bytes()),
            Err(MixedKeys)
        );
        assert_eq!(
            ClientControl::parse(b"sid=short&received=1"),
            Err(BadSessionId)
        );
        assert_eq!(
            ClientControl::parse(format!("sid={SID}%2D&received=1").as_bytes()),
            Err(BadSessionId)
        );
        assert_eq!(
            ClientControl::parse(format!("sid={SID}&received=1\n").as_bytes()),
            Err(BadNumber)
        );
    }

    #[test]
    fn open_record_exact_bytes() {
        assert_eq!(
            encode_open(&sid(), 3, 200, 0),
            format!("sid={SID}&received=3&status=200&initial=0").into_bytes()
        );
        let open = GatewayOpen {
            sid: sid(),
            received: 3,
            status: 200,
            initial: 17,
        };
        assert_eq!(GatewayOpen::parse(&open.encode()), Ok(open.clone()));
        assert_eq!(
            GatewayOpen::parse(format!("initial=17&status=200&received=3&sid={SID}").as_bytes()),
            Ok(open)
        );
    }

    #[test]
    fn open_record_errors() {
        let ok = |s: &str| format!("sid={SID}&received=3&status={s}&initial=0");
        for bad in ["20", "2000", "600", "099", "abc", ""] {
            assert_eq!(
                GatewayOpen::parse(ok(bad).as_bytes()),
                Err(BadControl::BadNumber),
                "{bad}"
            );
        }
        assert_eq!(
            GatewayOpen::parse(format!("sid={SID}&received=3&status=200").as_bytes()),
            Err(BadControl::MissingKey)
        );
        assert_eq!(GatewayOpen::parse(b""), Err(BadControl::Syntax));
        assert_eq!(
            GatewayOpen::parse(format!("{}&ack=1", ok("200")).as_bytes()),
            Err(BadControl::UnknownKey)
        );
    }

    #[test]
    fn client_encode() {
        assert_eq!(ClientControl::New.encode(), b"");
        assert_eq!(ClientControl::Ack(5).encode(), b"ack=5");
        assert_eq!(
            ClientControl::Resume {
                sid: sid(),
                received: 9
            }
            .encode(),
            format!("sid={SID}&received=9").into_bytes()
        );
    }
}
