//! The WebSocket opening handshake of a persistent session (SPEC 3): which
//! upgrades are sessions, the Origin rule, and the 101 answer.

use http::header::{self, HeaderMap, HeaderValue};

use crate::codec::trim;

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The subprotocol a client offers to get a persistent session.
pub(crate) const SUBPROTOCOL: &str = "persistent";

/// Whether the upgrade asks for WebSocket.
pub(crate) fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| trim(t).eq_ignore_ascii_case(b"websocket"))
}

/// Whether the client offers the `persistent` subprotocol.
pub(crate) fn offers_persistent(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| trim(t) == SUBPROTOCOL.as_bytes())
}

/// `Sec-WebSocket-Accept` for a client's key.
pub(crate) fn accept_key(key: &[u8]) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(GUID);
    base64(&sha.digest().bytes())
}

/// The key of a well-formed upgrade (version 13, a key that is 16 bytes in
/// base64), or `None`.
pub(crate) fn client_key(headers: &HeaderMap) -> Option<&HeaderValue> {
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| trim(v.as_bytes()) == b"13");
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    (version_ok && trim(key.as_bytes()).len() == 24).then_some(key)
}

/// SPEC 3 "Origin": no Origin (a non-browser client) is allowed; else its
/// host and port must be the request's `Host` (default ports filled in from
/// each scheme), or it must equal one of `allowed` (already lower-case).
pub(crate) fn origin_allowed(
    origin: Option<&[u8]>,
    host: Option<&str>,
    https: bool,
    allowed: &[String],
) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let Ok(origin) = std::str::from_utf8(trim(origin)) else {
        return false;
    };
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let origin_default = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let Some((o_host, o_port)) = host_port(rest, origin_default) else {
        return false;
    };
    let Some((h_host, h_port)) = host.and_then(|h| host_port(h, if https { 443 } else { 80 }))
    else {
        return false;
    };
    o_host.eq_ignore_ascii_case(h_host) && o_port == h_port
}

/// `host[:port]` (IPv6 in brackets) with a default port.
fn host_port(s: &str, default: u16) -> Option<(&str, u16)> {
    if s.is_empty() || s.contains('/') {
        return None;
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let after = &rest[end + 1..];
        (&s[..end + 2], after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    Some((host, port))
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_rfc6455() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn origin_rule() {
        let allowed = vec!["https://app.example.test".to_string()];
        let ok =
            |o: &str, h: &str, https| origin_allowed(Some(o.as_bytes()), Some(h), https, &allowed);
        assert!(origin_allowed(None, Some("a.test"), false, &allowed));
        assert!(ok("http://a.test", "a.test", false));
        assert!(ok("http://A.test:80", "a.test", false));
        assert!(ok("http://a.test:8080", "a.test:8080", false));
        assert!(ok("https://a.test", "a.test:443", true));
        assert!(!ok("http://a.test", "a.test:8080", false));
        assert!(!ok("http://evil.test", "a.test", false));
        assert!(!ok("https://a.test", "a.test", false));
        assert!(ok("HTTPS://APP.example.test", "a.test", false));
        assert!(!ok("null", "a.test", false));
        assert!(ok("http://[::1]:8080", "[::1]:8080", false));
    }

    #[test]
    fn subprotocol_offer() {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "chat, persistent".parse().unwrap(),
        );
        assert!(offers_persistent(&h));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "persistent-x".parse().unwrap(),
        );
        assert!(!offers_persistent(&h));
    }
}
