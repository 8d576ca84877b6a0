//! Header rewriting between client and upstream (SPEC 5 and SPEC 2).
//!
//! Hop-by-hop fields (RFC 9110 §7.6.1, and every field named in
//! `Connection`) describe one connection and never cross the gateway. The
//! session fields (`SessionID`, `Session-*`, `Connection-Type`) are the
//! gateway's own: a client cannot set them for an upstream, and a plain
//! answer does not leak them to a client.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub(crate) static SESSION_ID: HeaderName = HeaderName::from_static("sessionid");
pub(crate) static SESSION_RECEIVED: HeaderName = HeaderName::from_static("session-received");
pub(crate) static CONNECTION_TYPE: HeaderName = HeaderName::from_static("connection-type");
static SESSION_EVENT: HeaderName = HeaderName::from_static("session-event");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const VIA_TETHER: &str = "1.1 tether";

/// Removes hop-by-hop fields, including those named in `Connection`.
/// `keep_upgrade` keeps `Connection: upgrade` and `Upgrade` for a relayed
/// upgrade (request with Upgrade, or a 101 answer).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| HeaderName::from_bytes(crate::codec::trim(t)).ok())
        .collect();
    for name in named {
        if keep_upgrade && name == header::UPGRADE {
            continue;
        }
        headers.remove(&name);
    }
    headers.remove(header::CONNECTION);
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TE);
    headers.remove(header::TRANSFER_ENCODING);
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Removes the session fields a client may not set for an upstream
/// (SPEC 2): the gateway sets its own where the SPEC says so. Other
/// `Session-*` fields are the application's and pass.
pub(crate) fn strip_client_session_fields(headers: &mut HeaderMap) {
    headers.remove(&SESSION_ID);
    headers.remove(&SESSION_RECEIVED);
    headers.remove(&SESSION_EVENT);
    headers.remove(&CONNECTION_TYPE);
}

/// Removes `Connection-Type`, `SessionID` and every `Session-*` field from
/// a worker's answer relayed as plain (SPEC 2 step 6).
pub(crate) fn strip_answer_session_fields(headers: &mut HeaderMap) {
    headers.remove(&SESSION_ID);
    headers.remove(&CONNECTION_TYPE);
    let session_fields: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("session-"))
        .cloned()
        .collect();
    for name in session_fields {
        headers.remove(name);
    }
}

/// Drops every field whose name holds `_` (SPEC 5, as nginx does): CGI
/// and PHP map `-` and `_` to the same variable, so `X_Forwarded_For` or
/// `Session_Event` could pass for the fields the gateway sets.
pub(crate) fn drop_underscored(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| k.as_str().contains('_')) {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// Joins the `cookie` crumbs of an HTTP/2 request into one field with
/// `; ` (RFC 9113 §8.2.3) before it goes to an HTTP/1.1 upstream.
pub(crate) fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let mut joined: Vec<u8> = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// Whether a `Host` value is `host[:port]` (RFC 9110 §7.2): a name of
/// letters, digits, `-`, `.`, `_`, `~`, or a bracketed IPv6 literal, and a
/// port of at most five digits up to 65535. Userinfo, spaces, commas and
/// slashes are refused (SPEC 5): they would reach the origin verbatim.
pub(crate) fn valid_host(value: &str) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return false;
        };
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match &rest[end + 1..] {
            "" => ("x", None),
            p => match p.strip_prefix(':') {
                Some(port) => ("x", Some(port)),
                None => return false,
            },
        }
    } else {
        match value.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let port_ok = port.is_none_or(|p| {
        p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().map_or(p.is_empty(), |n| n <= 65535)
    });
    host_ok && port_ok
}

/// Sets the forwarding fields of SPEC 5 on a request bound upstream.
pub(crate) fn add_forwarding(headers: &mut HeaderMap, client: IpAddr, https: bool, host: &str) {
    let ip = HeaderValue::from_str(&client.to_string()).expect("an IP is a valid value");
    let xff = match headers.get(&X_FORWARDED_FOR) {
        Some(_) => {
            let mut joined: Vec<u8> = Vec::new();
            for v in headers.get_all(&X_FORWARDED_FOR) {
                if !joined.is_empty() {
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(v.as_bytes());
            }
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(ip.as_bytes());
            HeaderValue::from_bytes(&joined).unwrap_or(ip)
        }
        None => ip,
    };
    headers.insert(&X_FORWARDED_FOR, xff);
    headers.insert(
        &X_FORWARDED_PROTO,
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    // An HTTP/1.0 request may come without a Host: nothing to tell then.
    match HeaderValue::from_str(host) {
        Ok(v) if !host.is_empty() => {
            headers.insert(&X_FORWARDED_HOST, v);
        }
        _ => {}
    }
    let via = match headers.get(header::VIA) {
        Some(_) => {
            let mut joined: Vec<u8> = Vec::new();
            for v in headers.get_all(header::VIA) {
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(VIA_TETHER.as_bytes());
            HeaderValue::from_bytes(&joined).unwrap_or(HeaderValue::from_static(VIA_TETHER))
        }
        None => HeaderValue::from_static(VIA_TETHER),
    };
    headers.insert(header::VIA, via);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_named_fields_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", "X-Foo, close".parse().unwrap());
        h.insert("x-foo", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("x-bar", "2".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-bar"));
    }

    #[test]
    fn host_values() {
        for ok in [
            "a.test",
            "a.test:80",
            "A.Test.",
            "[::1]",
            "[::1]:8080",
            "127.0.0.1:1",
            "a.test:",
        ] {
            assert!(valid_host(ok), "refused {ok:?}");
        }
        for bad in [
            "a.test, evil.test",
            "a.test evil",
            "user@a.test",
            "a.test:99999",
            "a.test:8o",
            "a.test:123456",
            "a.test/x",
            "",
            "[::1",
            "[::1]x",
            "[zz]",
            "a.test:80:80",
        ] {
            assert!(!valid_host(bad), "accepted {bad:?}");
        }
    }

    #[test]
    fn underscores_and_cookie_crumbs() {
        let mut h = HeaderMap::new();
        h.insert("x_forwarded_for", "6.6.6.6".parse().unwrap());
        h.insert("session_event", "close".parse().unwrap());
        h.insert("x-ok", "1".parse().unwrap());
        drop_underscored(&mut h);
        assert_eq!(h.len(), 1);
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1".parse().unwrap());
        h.append("cookie", "b=2".parse().unwrap());
        join_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2");
    }

    #[test]
    fn forwarding_fields_append() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        h.insert("via", "1.0 fred".parse().unwrap());
        add_forwarding(&mut h, "127.0.0.1".parse().unwrap(), false, "a.test:8080");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.test:8080");
        assert_eq!(h["via"], "1.0 fred, 1.1 tether");
    }
}
