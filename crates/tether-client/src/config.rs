//! Client configuration and the `http://host:port/path` target it points at.

use std::time::Duration;

use crate::ClientError;

/// Reconnection policy used for transparent resume.
///
/// The first reconnection attempt after a drop is made at once (a resume on
/// loopback should take well under a millisecond); attempt `k >= 2` waits
/// `min(max, initial * 2^(k-2))` with "equal jitter": half of that delay
/// fixed, the other half uniformly random. After `max_attempts` failed
/// attempts the session is reported as failed
/// ([`ClientError::ReconnectFailed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the second attempt.
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Attempts per drop, the immediate one included (at least 1).
    pub max_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            max_attempts: 10,
        }
    }
}

impl Backoff {
    /// The delay to wait before attempt number `attempt` (1-based), jitter
    /// drawn from `random` (any `u64`).
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let shift = (attempt - 2).min(31);
        let base = self
            .initial
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max)
            .min(self.max);
        let half = base / 2;
        let nanos = half.as_nanos() as u64;
        let jitter = if nanos == 0 { 0 } else { random % (nanos + 1) };
        half + Duration::from_nanos(jitter)
    }
}

/// Everything the native client needs to open and keep a session.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://host[:port][/path][?query]` of a persistent candidate path.
    pub url: String,
    /// The `Accept` header sent (SPEC 2: must list one of the vhost's
    /// `persistent.accept`).
    pub accept: String,
    /// Extra request headers (cookies, authorization ...), sent on the
    /// opening request, on every resume and on the closing `DELETE`.
    pub extra_headers: Vec<(String, String)>,
    /// Timeout of one TCP connect.
    pub connect_timeout: Duration,
    /// Timeout for a whole answer head (and a plain answer's body) once the
    /// request is written.
    pub response_timeout: Duration,
    /// Reconnection policy for transparent resume.
    pub reconnect: Backoff,
    /// Longest line accepted in either direction, LF included (SPEC 1
    /// default 64 KiB).
    pub max_line: usize,
    /// Longest initial body accepted.
    pub max_initial_body: usize,
    /// Cap on the bytes of sent lines that the gateway has not acknowledged.
    ///
    /// The native protocol acknowledges client lines only in the answer to a
    /// resume (`Session-Received`), so without drops this buffer grows with
    /// every line sent. When a new line would take it over this cap,
    /// `send_line` fails with [`ClientError::ResendBufferFull`]; call
    /// `Session::sync` to have the gateway acknowledge (it costs a resume).
    pub max_unacked_bytes: usize,
}

impl ClientConfig {
    /// A configuration with the defaults: `Accept: application/x-persistent`,
    /// 5 s connect timeout, 10 s response timeout, [`Backoff::default`],
    /// 64 KiB lines, 4 MiB initial body, 16 MiB of unacknowledged lines.
    pub fn new(url: impl Into<String>) -> Self {
        ClientConfig {
            url: url.into(),
            accept: "application/x-persistent".to_owned(),
            extra_headers: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            reconnect: Backoff::default(),
            max_line: 64 * 1024,
            max_initial_body: 4 * 1024 * 1024,
            max_unacked_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `host:port` to connect to (IPv6 literals keep their brackets).
    pub(crate) authority: String,
    /// Value of the `Host` header.
    pub(crate) host_header: String,
    /// Request target: path and query, at least `/`.
    pub(crate) path: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, ClientError> {
        let bad = |why: &str| ClientError::InvalidUrl(format!("{url}: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(bad("only http:// URLs are supported"));
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        if authority.contains('@') {
            return Err(bad("user info is not supported"));
        }
        let tail = tail.split('#').next().unwrap_or("");
        let path = if tail.is_empty() {
            "/".to_owned()
        } else if tail.starts_with('?') {
            format!("/{tail}")
        } else {
            tail.to_owned()
        };
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad("the path holds spaces or control characters"));
        }
        // Split an optional port off, minding IPv6 literals.
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let close = v6.find(']').ok_or_else(|| bad("unclosed IPv6 literal"))?;
            let after = &v6[close + 1..];
            let host = &authority[..close + 2];
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(bad("garbage after IPv6 literal")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == b'/') {
            return Err(bad("bad host"));
        }
        let port: u16 = match port {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None => 80,
        };
        let host_header = if port == 80 {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        };
        Ok(Target {
            authority: format!("{host}:{port}"),
            host_header,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("http://127.0.0.1:8080/chat.pphp?room=1").unwrap();
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.host_header, "127.0.0.1:8080");
        assert_eq!(t.path, "/chat.pphp?room=1");
        let t = Target::parse("HTTP://example.test").unwrap();
        assert_eq!(t.authority, "example.test:80");
        assert_eq!(t.host_header, "example.test");
        assert_eq!(t.path, "/");
        let t = Target::parse("http://[::1]:9000?x#frag").unwrap();
        assert_eq!(t.authority, "[::1]:9000");
        assert_eq!(t.path, "/?x");
        for bad in [
            "https://x/",
            "x/y",
            "http:///p",
            "http://h:99999/",
            "http://a@h/",
            "http://h/a b",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_attempts: 10,
        };
        assert_eq!(b.delay(1, 12345), Duration::ZERO);
        assert_eq!(b.delay(2, 0), Duration::from_millis(50));
        assert!(b.delay(2, u64::MAX) <= Duration::from_millis(100));
        assert_eq!(b.delay(3, 0), Duration::from_millis(100));
        assert_eq!(b.delay(40, 0), Duration::from_millis(500));
        assert!(b.delay(40, u64::MAX - 1) <= Duration::from_secs(1));
    }
}
