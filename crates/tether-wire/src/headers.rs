//! Header codecs: `SessionID`, `Session-Received` and the `Accept` capability.
//!
//! # Why
//!
//! These are the header values the gateway must judge before anything reaches
//! a worker, so they are decided here, without I/O, and tested to the byte:
//!
//! - [`SessionId`] is the token of SPEC 7: 22 to 64 characters from
//!   `[A-Za-z0-9_-]`, minted from CSPRNG bytes, compared as the exact string
//!   it was issued as, and checked in constant time ([`SessionId::ct_eq`]).
//! - [`parse_session_received`] is SPEC 2 step 3: `Session-Received:
//!   1*DIGIT` below 2^63; anything else is a `400`.
//! - [`accepts_persistent`] is SPEC 2 step 1: whether `Accept` lists one of
//!   `persistent.accept` with a non-zero, valid qvalue; otherwise `406`.
//!
//! # Whitespace
//!
//! HTTP trims optional whitespace (SP, HTAB) around field values. Callers
//! usually get values already trimmed (hyper does), but these functions trim
//! OWS at both ends themselves too, so a value is judged the same either way;
//! whitespace *inside* a value is never skipped (`1 2` is not a count).

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Shortest SessionID accepted (SPEC 7).
pub const SESSION_ID_MIN_LEN: usize = 22;
/// Longest SessionID accepted (SPEC 7).
pub const SESSION_ID_MAX_LEN: usize = 64;
/// Largest line count on the wire: counts are below 2^63 (SPEC 2 step 3).
pub const MAX_COUNT: u64 = (1 << 63) - 1;

/// A SessionID that is not 22..=64 characters of `[A-Za-z0-9_-]`.
///
/// SPEC 4: a forged SessionID gets the same `410` as an unknown one, so the
/// gateway answers this exactly like a failed lookup (WebSocket: 4410, or
/// 4400 when the control record as a whole is malformed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadSessionId;

impl fmt::Display for BadSessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed SessionID")
    }
}

impl std::error::Error for BadSessionId {}

/// A line count that is not `1*DIGIT` below 2^63: `400` (SPEC 2 step 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadCount;

impl fmt::Display for BadCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed line count")
    }
}

impl std::error::Error for BadCount {}

/// A SessionID (SPEC 7), held inline: no allocation, cheap to clone.
///
/// Equality and hashing are those of the string, so a `HashMap<SessionId, _>`
/// can be queried with a `&str`. `==` may exit early and is meant for map
/// keys; where an attacker-chosen ID is checked against a known one, use
/// [`SessionId::ct_eq`]. `Debug` shows only a prefix, so that a token does
/// not leak whole into logs; `Display` shows it whole, for the wire.
#[derive(Clone)]
pub struct SessionId {
    len: u8,
    /// The ID's bytes, then zeros: the zeros are part of the invariant that
    /// `ct_eq` relies on.
    bytes: [u8; SESSION_ID_MAX_LEN],
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl SessionId {
    /// Parses a SessionID exactly as sent: 22..=64 characters of
    /// `[A-Za-z0-9_-]`, nothing trimmed, no decoding.
    pub fn parse(value: &[u8]) -> Result<SessionId, BadSessionId> {
        if !(SESSION_ID_MIN_LEN..=SESSION_ID_MAX_LEN).contains(&value.len())
            || !value.iter().all(|&b| is_sid_byte(b))
        {
            return Err(BadSessionId);
        }
        let mut bytes = [0u8; SESSION_ID_MAX_LEN];
        bytes[..value.len()].copy_from_slice(value);
        Ok(SessionId {
            len: value.len() as u8,
            bytes,
        })
    }

    /// Mints a SessionID from 24 bytes (192 bits) the caller took from a
    /// CSPRNG: their base64url encoding without padding, 32 characters.
    pub fn from_random(random: [u8; 24]) -> SessionId {
        let mut bytes = [0u8; SESSION_ID_MAX_LEN];
        for (group, out) in random.chunks_exact(3).zip(bytes.chunks_exact_mut(4)) {
            let n = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
            out[0] = BASE64URL[(n >> 18) as usize & 63];
            out[1] = BASE64URL[(n >> 12) as usize & 63];
            out[2] = BASE64URL[(n >> 6) as usize & 63];
            out[3] = BASE64URL[n as usize & 63];
        }
        SessionId { len: 32, bytes }
    }

    /// Mints a cluster SessionID (SPEC 11): the 32 characters of
    /// [`SessionId::from_random`] followed by the owner's `node` name.
    /// `None` when `node` is not 1 to 16 of `[a-z0-9]`.
    pub fn from_random_owned_by(random: [u8; 24], node: &str) -> Option<SessionId> {
        if !is_node_name(node.as_bytes()) {
            return None;
        }
        let mut id = SessionId::from_random(random);
        let len = usize::from(id.len);
        id.bytes[len..len + node.len()].copy_from_slice(node.as_bytes());
        id.len += node.len() as u8;
        Some(id)
    }

    /// The owner's `node` name a cluster SessionID ends with (SPEC 11):
    /// whatever follows the first 32 characters, when it is a node name.
    /// `None` for an ID a single instance minted (32 characters) and for
    /// any other shape: such an ID names no other instance.
    pub fn owner(&self) -> Option<&str> {
        let suffix = self.as_bytes().get(RANDOM_CHARS..)?;
        if !is_node_name(suffix) {
            return None;
        }
        Some(&self.as_str()[RANDOM_CHARS..])
    }

    /// The ID as the string it was issued as.
    pub fn as_str(&self) -> &str {
        // Every byte was checked to be ASCII (parse) or is from the base64url
        // alphabet (from_random).
        std::str::from_utf8(self.as_bytes()).expect("SessionId holds ASCII only")
    }

    /// The ID's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Length in characters (22..=64).
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always false: a SessionID has at least 22 characters. (For clippy's
    /// `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Constant-time equality (SPEC 7): the time taken depends on neither
    /// where the IDs differ nor their lengths.
    pub fn ct_eq(&self, other: &SessionId) -> bool {
        let mut diff = self.len ^ other.len;
        for (a, b) in self.bytes.iter().zip(other.bytes.iter()) {
            diff = std::hint::black_box(diff | (a ^ b));
        }
        diff == 0
    }
}

/// Characters of the random part of a minted SessionID (24 bytes).
const RANDOM_CHARS: usize = 32;
/// The longest node name (SPEC 11).
pub const MAX_NODE_NAME: usize = 16;

/// 1 to 16 of `[a-z0-9]` (SPEC 11).
fn is_node_name(name: &[u8]) -> bool {
    (1..=MAX_NODE_NAME).contains(&name.len())
        && name
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn is_sid_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

impl PartialEq for SessionId {
    fn eq(&self, other: &SessionId) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for SessionId {}

impl Hash for SessionId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash like `str` for `Borrow<str>`.
        self.as_str().hash(state);
    }
}

impl Borrow<str> for SessionId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({}…)", &self.as_str()[..6])
    }
}

impl std::str::FromStr for SessionId {
    type Err = BadSessionId;

    fn from_str(s: &str) -> Result<SessionId, BadSessionId> {
        SessionId::parse(s.as_bytes())
    }
}

/// Parses a `Session-Received` value (SPEC 2 step 3): `1*DIGIT` below 2^63,
/// leading zeros allowed, no sign, nothing inside but digits. Optional
/// whitespace (SP, HTAB) around the value is trimmed.
pub fn parse_session_received(value: &[u8]) -> Result<u64, BadCount> {
    parse_count(trim_ows(value))
}

/// Parses a line count: `1*DIGIT` below 2^63, nothing trimmed. Shared by the
/// header and the control records.
pub(crate) fn parse_count(digits: &[u8]) -> Result<u64, BadCount> {
    if digits.is_empty() {
        return Err(BadCount);
    }
    let mut n: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(BadCount);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .filter(|&n| n <= MAX_COUNT)
            .ok_or(BadCount)?;
    }
    Ok(n)
}

/// SPEC 2 step 1: whether the `Accept` header values (each field line's value;
/// several lines are allowed and act as one comma-joined list) list one of
/// `accepted` (lower-case `type/subtype` strings).
///
/// A list element counts when its media range equals an accepted type
/// ASCII-case-insensitively (wildcards such as `*/*` and `application/*`
/// never match), and every `q` parameter it has (name case-insensitive)
/// holds a valid qvalue other than zero. Other parameters are ignored.
/// Quoted parameter values may hold `,` and `;` (with `\` escapes).
///
/// Leniency, chosen so that nothing doubtful counts: whitespace around a
/// parameter's `=` is tolerated, so `q = 0` is read as a zero q; a `q` with no
/// value, a quoted value, or more than three decimals is invalid, and the
/// element does not count.
pub fn accepts_persistent(accept_header_values: &[&[u8]], accepted: &[String]) -> bool {
    accept_header_values.iter().any(|value| {
        SplitUnquoted::new(value, b',').any(|element| element_counts(element, accepted))
    })
}

fn element_counts(element: &[u8], accepted: &[String]) -> bool {
    let mut parts = SplitUnquoted::new(element, b';');
    let range = trim_ows(parts.next().unwrap_or_default());
    if range.is_empty() || range.contains(&b'*') {
        return false;
    }
    if !accepted
        .iter()
        .any(|a| a.as_bytes().eq_ignore_ascii_case(range))
    {
        return false;
    }
    parts.all(|param| {
        let param = trim_ows(param);
        let (name, value) = match param.iter().position(|&b| b == b'=') {
            Some(i) => (trim_ows(&param[..i]), trim_ows(&param[i + 1..])),
            None => (param, &b""[..]),
        };
        !name.eq_ignore_ascii_case(b"q") || parse_qvalue(value).is_some_and(|q| q > 0)
    })
}

/// Parses an RFC 9110 qvalue (`0[.DDD]` or `1[.000]`, up to three decimals)
/// into thousandths (0..=1000); `None` when it is not a valid qvalue.
pub fn parse_qvalue(value: &[u8]) -> Option<u16> {
    let (int, frac) = match value {
        [d] => (*d, &b""[..]),
        [d, b'.', frac @ ..] => (*d, frac),
        _ => return None,
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Trims optional whitespace (SP, HTAB) at both ends.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Splits at `sep` outside quoted strings (`"..."`, with `\` escaping the
/// next byte inside). An unterminated quote runs to the end.
struct SplitUnquoted<'a> {
    rest: Option<&'a [u8]>,
    sep: u8,
}

impl<'a> SplitUnquoted<'a> {
    fn new(s: &'a [u8], sep: u8) -> SplitUnquoted<'a> {
        SplitUnquoted { rest: Some(s), sep }
    }
}

impl<'a> Iterator for SplitUnquoted<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let s = self.rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, &b) in s.iter().enumerate() {
            if quoted {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    quoted = false;
                }
            } else if b == b'"' {
                quoted = true;
            } else if b == self.sep {
                self.rest = Some(&s[i + 1..]);
                return Some(&s[..i]);
            }
        }
        self.rest = None;
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(values: &[&str]) -> bool {
        let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        accepts_persistent(&values, &["application/x-persistent".to_string()])
    }

    #[test]
    fn accept_exact_and_case_insensitive() {
        assert!(acc(&["application/x-persistent"]));
        assert!(acc(&["Application/X-Persistent"]));
        assert!(acc(&["  application/x-persistent  "]));
        assert!(acc(&["text/html, application/x-persistent"]));
        assert!(acc(&["text/html,application/x-persistent;q=0.5"]));
        assert!(!acc(&["application/x-persistent2"]));
        assert!(!acc(&["application/x-persisten"]));
        assert!(!acc(&["application /x-persistent"]));
        assert!(!acc(&[""]));
        assert!(!acc(&[]));
        assert!(!acc(&[",,"]));
    }

    #[test]
    fn accept_wildcards_never_match() {
        assert!(!acc(&["*/*"]));
        assert!(!acc(&["application/*"]));
        assert!(!acc(&["*/*;q=1, application/*"]));
        let values: Vec<&[u8]> = vec![b"*/*"];
        assert!(!accepts_persistent(&values, &["*/*".to_string()]));
    }

    #[test]
    fn accept_multiple_headers() {
        assert!(acc(&["text/html", "application/x-persistent"]));
        assert!(acc(&["application/x-persistent", "text/html"]));
        assert!(!acc(&["text/html", "application/json"]));
        assert!(!acc(&["text/html", "application/x-persistent;q=0"]));
        assert!(acc(&[
            "application/x-persistent;q=0",
            "application/x-persistent"
        ]));
    }

    #[test]
    fn accept_zero_q_does_not_count() {
        for q in ["0", "0.", "0.0", "0.00", "0.000"] {
            assert!(!acc(&[&format!("application/x-persistent;q={q}")]), "{q}");
            assert!(!acc(&[&format!("application/x-persistent; Q={q}")]), "{q}");
        }
        assert!(!acc(&["application/x-persistent ; q = 0"]));
        assert!(acc(&["application/x-persistent;q=0.001"]));
    }

    #[test]
    fn accept_invalid_q_does_not_count() {
        for q in [
            "1.0001", "1.5", "0.1234", "abc", "", "2", "-0.5", ".5", "01", "\"0.5\"", "1.01",
        ] {
            assert!(!acc(&[&format!("application/x-persistent;q={q}")]), "{q}");
        }
        assert!(!acc(&["application/x-persistent;q"]));
        for q in ["1", "1.", "1.0", "1.000", "0.5", "0.999"] {
            assert!(acc(&[&format!("application/x-persistent;q={q}")]), "{q}");
        }
    }

    #[test]
    fn accept_other_parameters_ignored() {
        assert!(acc(&["application/x-persistent;charset=utf-8;q=0.5"]));
        assert!(acc(&["application/x-persistent; charset=utf-8"]));
        assert!(!acc(&["application/x-persistent;charset=utf-8;q=0"]));
        assert!(acc(&["application/x-persistent;qq=0"]));
        assert!(acc(&["application/x-persistent;version"]));
    }

    #[test]
    fn accept_quoted_values_with_separators() {
        assert!(acc(&[r#"text/html;x="a,b", application/x-persistent"#]));
        assert!(acc(&[r#"application/x-persistent;x="a,b;q=0""#]));
        assert!(!acc(&[r#"text/html;x="a,application/x-persistent""#]));
        assert!(acc(&[
            r#"text/plain;x="q\",application/x-persistent", application/x-persistent;q=1"#
        ]));
        // The escaped quote does not end the quoted string, so `;q=0` is
        // inside it and no q parameter exists.
        assert!(acc(&[r#"application/x-persistent;x="a\"b;q=0""#]));
        assert!(!acc(&[r#"application/x-persistent;x="a\\";q=0"#]));
    }

    #[test]
    fn qvalue_values() {
        assert_eq!(parse_qvalue(b"0"), Some(0));
        assert_eq!(parse_qvalue(b"0.5"), Some(500));
        assert_eq!(parse_qvalue(b"0.05"), Some(50));
        assert_eq!(parse_qvalue(b"0.123"), Some(123));
        assert_eq!(parse_qvalue(b"1.000"), Some(1000));
        assert_eq!(parse_qvalue(b"1.001"), None);
        assert_eq!(parse_qvalue(b"0.1234"), None);
    }

    #[test]
    fn cluster_session_ids_name_their_owner() {
        let id = SessionId::from_random_owned_by([9; 24], "gw1").unwrap();
        assert_eq!(id.len(), 35);
        assert!(id.as_str().ends_with("gw1"));
        assert_eq!(id.as_str()[..32], *SessionId::from_random([9; 24]).as_str());
        assert_eq!(id.owner(), Some("gw1"));
        // Round trip through the wire form.
        assert_eq!(
            SessionId::parse(id.as_bytes()).unwrap().owner(),
            Some("gw1")
        );
        let longest = SessionId::from_random_owned_by([1; 24], "abcdefghij012345").unwrap();
        assert_eq!(longest.owner(), Some("abcdefghij012345"));
        // A single instance's IDs name no owner.
        assert_eq!(SessionId::from_random([9; 24]).owner(), None);
        for bad in ["", "GW1", "gw-1", "abcdefghij0123456"] {
            assert!(
                SessionId::from_random_owned_by([0; 24], bad).is_none(),
                "{bad}"
            );
        }
        // A suffix that is not a node name (upper case, `-`) names none.
        let odd = SessionId::parse(format!("{}Gw1", "a".repeat(32)).as_bytes()).unwrap();
        assert_eq!(odd.owner(), None);
    }

    #[test]
    fn session_id_lengths() {
        let id = |n: usize| "a".repeat(n);
        assert_eq!(SessionId::parse(id(21).as_bytes()), Err(BadSessionId));
        assert_eq!(
            SessionId::parse(id(22).as_bytes()).unwrap().as_str(),
            id(22)
        );
        assert_eq!(
            SessionId::parse(id(64).as_bytes()).unwrap().as_str(),
            id(64)
        );
        assert_eq!(SessionId::parse(id(65).as_bytes()), Err(BadSessionId));
        assert_eq!(SessionId::parse(b""), Err(BadSessionId));
    }

    #[test]
    fn session_id_chars() {
        let good = "AZaz09-_AZaz09-_AZaz09-_";
        assert!(SessionId::parse(good.as_bytes()).is_ok());
        for bad in ['=', '+', '/', ' ', '.', '~', '%', '\n', 'é'] {
            let s = format!("{}{bad}", &good[..23]);
            assert_eq!(SessionId::parse(s.as_bytes()), Err(BadSessionId), "{bad:?}");
        }
        // No trimming.
        assert!(SessionId::parse(format!(" {good}").as_bytes()).is_err());
        assert!(SessionId::parse(format!("{good} ").as_bytes()).is_err());
    }

    #[test]
    fn session_id_from_random() {
        let id = SessionId::from_random([0; 24]);
        assert_eq!(id.as_str(), "A".repeat(32));
        let id = SessionId::from_random([0xff; 24]);
        assert_eq!(id.as_str(), "_".repeat(32));
        let mut r = [0u8; 24];
        r[..3].copy_from_slice(&[0xfb, 0xef, 0xbe]);
        let id = SessionId::from_random(r);
        assert_eq!(&id.as_str()[..4], "----");
        assert_eq!(SessionId::parse(id.as_bytes()), Ok(id.clone()));
        assert_eq!(id.len(), 32);
        assert!(!id.is_empty());
    }

    #[test]
    fn session_id_eq_hash_display() {
        use std::collections::HashMap;
        let a = SessionId::parse(b"abcdefghijklmnopqrstuv").unwrap();
        let b = SessionId::parse(b"abcdefghijklmnopqrstuvw").unwrap();
        let c = SessionId::parse(b"abcdefghijklmnopqrstuV").unwrap();
        assert!(a.ct_eq(&a.clone()));
        assert!(!a.ct_eq(&b));
        assert!(!b.ct_eq(&a));
        assert!(!a.ct_eq(&c));
        assert_ne!(a, c);
        let mut m = HashMap::new();
        m.insert(a.clone(), 1);
        assert_eq!(m.get("abcdefghijklmnopqrstuv"), Some(&1));
        assert_eq!(m.get(&a), Some(&1));
        assert_eq!(m.get(&b), None);
        assert_eq!(a.to_string(), "abcdefghijklmnopqrstuv");
        assert_eq!(format!("{a:?}"), "SessionId(abcdef…)");
        assert_eq!("abcdefghijklmnopqrstuv".parse::<SessionId>(), Ok(a));
    }

    #[test]
    fn session_received_counts() {
        assert_eq!(parse_session_received(b"0"), Ok(0));
        assert_eq!(parse_session_received(b"42"), Ok(42));
        assert_eq!(parse_session_received(b"0007"), Ok(7));
        assert_eq!(parse_session_received(b" 5\t"), Ok(5));
        assert_eq!(
            parse_session_received(b"9223372036854775807"),
            Ok(9_223_372_036_854_775_807)
        );
        assert_eq!(
            parse_session_received(b"0009223372036854775807"),
            Ok(MAX_COUNT)
        );
        for bad in [
            &b"9223372036854775808"[..],
            b"18446744073709551616",
            b"99999999999999999999999",
            b"+1",
            b"-1",
            b"1 2",
            b"",
            b"  ",
            b"1.0",
            b"0x1",
            b"1\n",
        ] {
            assert_eq!(parse_session_received(bad), Err(BadCount), "{bad:?}");
        }
    }
}
