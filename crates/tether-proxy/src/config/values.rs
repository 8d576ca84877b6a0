//! Scalar value syntax: durations, sizes, addresses, URLs, host names,
//! media types and Origin values. Each parser returns the message of the
//! error (without position or key) so that the document pass can place it.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::types::OriginUrl;

const DURATION_HINT: &str = "write it like \"30s\", \"2m\" or \"500ms\" (units: us, ms, s, m, h)";
const SIZE_HINT: &str =
    "write it like \"64KiB\", \"1MiB\" or a whole number of bytes (units: B, KiB, MiB, GiB)";

/// `"30s"`, `"2m"`, `"500ms"`, `"1h"`, `"250us"`: one whole number and one
/// unit, optionally separated by a space.
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("\"{text}\" is not a duration; {DURATION_HINT}");
    let (number, unit) = split_number(text.trim()).ok_or_else(bad)?;
    if unit.is_empty() {
        return Err(format!(
            "\"{text}\" has no unit, so it is not a duration; {DURATION_HINT}"
        ));
    }
    if unit.starts_with('.') {
        return Err(format!(
            "\"{text}\" is not a duration: use a whole number with a smaller unit (\"1500ms\", not \"1.5s\")"
        ));
    }
    let per_unit = match unit {
        "us" | "\u{b5}s" => Duration::from_micros(1),
        "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    let n: u32 = number
        .parse()
        .map_err(|_| format!("\"{text}\" is too long a duration"))?;
    per_unit
        .checked_mul(n)
        .ok_or_else(|| format!("\"{text}\" is too long a duration"))
}

/// `"64KiB"`, `"1MiB"`, `"1GiB"`, `"512B"` or `"4096"` (bytes). Decimal
/// units (`KB`, `MB`, `k`) are refused so that nobody is off by 2.4%.
pub(crate) fn size(text: &str) -> Result<u64, String> {
    let bad = || format!("\"{text}\" is not a size; {SIZE_HINT}");
    let (number, unit) = split_number(text.trim()).ok_or_else(bad)?;
    if unit.starts_with('.') {
        return Err(format!(
            "\"{text}\" is not a size: use a whole number with a smaller unit (\"1536KiB\", not \"1.5MiB\")"
        ));
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "k" | "kb" | "m" | "mb" | "g" | "gb" => {
            return Err(format!(
                "\"{text}\" uses a decimal unit; sizes use binary units: write \"{number}{}\" (or a whole number of bytes)",
                binary_unit(unit)
            ))
        }
        _ => return Err(bad()),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("\"{text}\" is too large a size"))?;
    n.checked_mul(multiplier)
        .ok_or_else(|| format!("\"{text}\" is too large a size"))
}

fn binary_unit(decimal: &str) -> &'static str {
    match decimal.as_bytes()[0].to_ascii_lowercase() {
        b'k' => "KiB",
        b'm' => "MiB",
        _ => "GiB",
    }
}

/// Splits `"64 KiB"` into `("64", "KiB")`; None without leading digits.
fn split_number(text: &str) -> Option<(&str, &str)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let (number, rest) = text.split_at(digits);
    let unit = rest.strip_prefix(' ').unwrap_or(rest);
    Some((number, unit))
}

/// A listener address: an IP literal and a port.
pub(crate) fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if text.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "\"{text}\" has no port; write an address and a port, like \"127.0.0.1:8080\""
        ));
    }
    Err(format!(
        "\"{text}\" is not a socket address; write an IP address and a port, like \"127.0.0.1:8080\" or \"[::1]:8080\" (host names are not looked up)"
    ))
}

/// An upstream (origin or worker): `http://host[:port]` with an optional
/// trailing `/`. Port 80 by default.
pub(crate) fn upstream(text: &str) -> Result<OriginUrl, String> {
    let example = "like \"http://127.0.0.1:8081\"";
    let lower = text.to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &text["http://".len()..]
    } else if lower.starts_with("https://") {
        return Err(format!(
            "\"{text}\": tether talks to origins and workers over plain HTTP only; write an http:// URL, {example} (https:// upstreams are not supported)"
        ));
    } else if let Some(scheme_end) = text.find("://") {
        return Err(format!(
            "\"{text}\": the scheme \"{}\" is not supported; write an http:// URL, {example}",
            &text[..scheme_end]
        ));
    } else {
        return Err(format!(
            "\"{text}\" is not a URL; write it with http:// in front, {example}"
        ));
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    if !(tail.is_empty() || tail == "/") {
        return Err(format!(
            "\"{text}\": an upstream URL has no path, query or fragment; requests keep their own path, so write only scheme, host and port, {example}"
        ));
    }
    if authority.contains('@') {
        return Err(format!(
            "\"{text}\": user names and passwords in upstream URLs are not supported"
        ));
    }
    let (host, port) = split_host_port(authority).map_err(|why| format!("\"{text}\": {why}"))?;
    Ok(OriginUrl {
        as_written: text.to_string(),
        authority: authority.to_string(),
        host,
        port: port.unwrap_or(80),
    })
}

/// Splits `host[:port]` or `[v6][:port]`; the host comes back lower-cased
/// and without brackets.
fn split_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let close = inner
            .find(']')
            .ok_or("the \"[\" of the IPv6 address is not closed")?;
        let v6 = &inner[..close];
        v6.parse::<Ipv6Addr>()
            .map_err(|_| format!("\"{v6}\" is not an IPv6 address"))?;
        let after = &inner[close + 1..];
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("only \":port\" may follow an IPv6 address")?,
            ),
        };
        (v6, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing".to_string());
    }
    if !authority.starts_with('[') {
        if let Some(bad) = host.chars().find(|&c| !is_host_char(c)) {
            return Err(format!("{bad:?} may not appear in a host name"));
        }
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(format!("\"{p}\" is not a port number (1 to 65535)")),
        },
    };
    Ok((host.to_ascii_lowercase(), port))
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')
}

/// A vhost name: lower-cased; `"*"` alone is the default vhost.
pub(crate) fn host(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("a host name may not be empty".to_string());
    }
    if text == "*" {
        return Ok(text.to_string());
    }
    if text.contains("://") {
        return Err(format!(
            "\"{text}\": write the host name only, without a scheme, like \"example.test\""
        ));
    }
    if text.contains('*') {
        return Err(format!(
            "\"{text}\": only \"*\" on its own (the default vhost) is a wildcard; list each name"
        ));
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        if inner.parse::<Ipv6Addr>().is_ok() {
            return Ok(text.to_ascii_lowercase());
        }
    }
    if text.contains(':') {
        return Err(format!(
            "\"{text}\": write host names without a port (the port of the Host header is ignored)"
        ));
    }
    if !text.is_ascii() {
        return Err(format!(
            "\"{text}\": write internationalized names in their ASCII form (\"xn--...\")"
        ));
    }
    if let Some(bad) = text.chars().find(|&c| !is_host_char(c)) {
        return Err(format!("\"{text}\": {bad:?} may not appear in a host name"));
    }
    Ok(text.to_ascii_lowercase())
}

/// A capability media type: exact `type/subtype`, lower-cased.
pub(crate) fn media_type(text: &str) -> Result<String, String> {
    let example = "like \"application/x-persistent\"";
    if text.contains(';') {
        return Err(format!(
            "\"{text}\": write the media type without parameters, {example}"
        ));
    }
    let Some((ty, sub)) = text.split_once('/') else {
        return Err(format!(
            "\"{text}\" is not a media type; write type/subtype, {example}"
        ));
    };
    if ty == "*" || sub == "*" {
        return Err(format!(
            "\"{text}\": wildcards never match a persistent client (SPEC 2); write an exact type/subtype, {example}"
        ));
    }
    if !is_token(ty) || !is_token(sub) {
        return Err(format!(
            "\"{text}\" is not a media type; write type/subtype, {example}"
        ));
    }
    Ok(text.to_ascii_lowercase())
}

/// RFC 9110 token characters.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b))
}

/// A WebSocket `Origin` value: `scheme://host[:port]`, lower-cased.
pub(crate) fn web_origin(text: &str) -> Result<String, String> {
    let example = "like \"https://app.example.test\"";
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(format!(
            "\"{text}\" is not an origin; write scheme://host[:port], {example}"
        ));
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(format!("\"{text}\": \"{scheme}\" is not a URL scheme"));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(format!(
            "\"{text}\": an origin has no path and no trailing slash; write scheme://host[:port], {example}"
        ));
    }
    if rest.contains('*') {
        return Err(format!(
            "\"{text}\": wildcards are not supported; list each origin"
        ));
    }
    split_host_port(rest).map_err(|why| format!("\"{text}\": {why}"))?;
    Ok(text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(duration("10 s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
        for bad in ["10x", "", "s", "1m30s", "-1s", "10S", "ten s"] {
            let e = duration(bad).unwrap_err();
            assert!(e.contains("is not a duration"), "{bad}: {e}");
        }
        assert!(duration("30").unwrap_err().contains("has no unit"));
        assert!(duration("1.5s").unwrap_err().contains("1500ms"));
        assert!(duration("99999999999h").unwrap_err().contains("too long"));
    }

    #[test]
    fn sizes() {
        assert_eq!(size("64KiB"), Ok(65536));
        assert_eq!(size("1MiB"), Ok(1 << 20));
        assert_eq!(size("1GiB"), Ok(1 << 30));
        assert_eq!(size("512B"), Ok(512));
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("64 KiB"), Ok(65536));
        assert_eq!(size("64kib"), Ok(65536));
        let e = size("64KB").unwrap_err();
        assert!(e.contains("decimal unit") && e.contains("\"64KiB\""), "{e}");
        assert!(size("1M").unwrap_err().contains("\"1MiB\""));
        assert!(size("lots").unwrap_err().contains("is not a size"));
        assert!(size("64TiB").unwrap_err().contains("is not a size"));
        assert!(size("1.5MiB").unwrap_err().contains("1536KiB"));
        assert!(size("99999999999999GiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn upstreams() {
        let u = upstream("http://127.0.0.1:8081").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 8081));
        assert_eq!(u.authority, "127.0.0.1:8081");
        let u = upstream("HTTP://Origin.Test/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("origin.test", 80));
        assert_eq!(u.authority, "Origin.Test");
        assert_eq!(u.as_written, "HTTP://Origin.Test/");
        let u = upstream("http://[::1]:9001").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9001));
        assert!(upstream("https://a.test")
            .unwrap_err()
            .contains("plain HTTP only"));
        assert!(upstream("a.test:80")
            .unwrap_err()
            .contains("http:// in front"));
        assert!(upstream("ftp://a.test").unwrap_err().contains("\"ftp\""));
        assert!(upstream("http://a.test/app")
            .unwrap_err()
            .contains("no path"));
        assert!(upstream("http://a.test:0")
            .unwrap_err()
            .contains("port number"));
        assert!(upstream("http://a.test:99999")
            .unwrap_err()
            .contains("port number"));
        assert!(upstream("http://:80")
            .unwrap_err()
            .contains("host is missing"));
        assert!(upstream("http://u:p@a.test")
            .unwrap_err()
            .contains("passwords"));
        assert!(upstream("http://a b")
            .unwrap_err()
            .contains("may not appear"));
    }

    #[test]
    fn addresses() {
        assert!(socket_addr("127.0.0.1:8080").is_ok());
        assert!(socket_addr("[::1]:8080").is_ok());
        assert!(socket_addr("127.0.0.1").unwrap_err().contains("no port"));
        assert!(socket_addr("localhost:80")
            .unwrap_err()
            .contains("not looked up"));
    }

    #[test]
    fn hosts() {
        assert_eq!(host("Example.TEST"), Ok("example.test".to_string()));
        assert_eq!(host("*"), Ok("*".to_string()));
        assert_eq!(host("[::1]"), Ok("[::1]".to_string()));
        assert!(host("a.test:80").unwrap_err().contains("without a port"));
        assert!(host("http://a.test")
            .unwrap_err()
            .contains("without a scheme"));
        assert!(host("*.a.test").unwrap_err().contains("wildcard"));
        assert!(host("").unwrap_err().contains("empty"));
        assert!(host("a test").unwrap_err().contains("may not appear"));
    }

    #[test]
    fn media_types() {
        assert_eq!(
            media_type("Application/X-Persistent"),
            Ok("application/x-persistent".to_string())
        );
        assert!(media_type("*/*").unwrap_err().contains("wildcards"));
        assert!(media_type("application/*")
            .unwrap_err()
            .contains("wildcards"));
        assert!(media_type("text").unwrap_err().contains("type/subtype"));
        assert!(media_type("text/plain; q=1")
            .unwrap_err()
            .contains("parameters"));
    }

    #[test]
    fn web_origins() {
        assert_eq!(
            web_origin("HTTPS://App.Test:8443"),
            Ok("https://app.test:8443".to_string())
        );
        assert!(web_origin("https://a.test/")
            .unwrap_err()
            .contains("trailing slash"));
        assert!(web_origin("a.test").unwrap_err().contains("scheme://host"));
        assert!(web_origin("https://*.a.test")
            .unwrap_err()
            .contains("wildcards"));
    }
}
