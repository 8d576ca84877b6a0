//! The page is the session (SPEC 12): a browser navigation to a candidate
//! path, which cannot ask for the persistent media type, opens a session
//! all the same when the vhost has `page_sessions`. The browser gets the
//! worker's initial body as an ordinary page carrying the SessionID in a
//! `<meta name="tether-session">` tag; the session waits detached until
//! the page's script attaches as a resume with count 0.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::{capable, open_session, PersistentRoute, SessionEnv, Transport, VhostScope};
use crate::body::Body;
use crate::config::PersistentConfig;
use crate::exchange::ConnInfo;
use crate::headers;

/// Where the `<head>` tag is looked for.
const HEAD_WITHIN: usize = 4 * 1024;

/// A `GET` that lists `text/html` and not the persistent media type, and
/// is neither a resume nor an upgrade: what a browser sends when the user
/// opens the page.
pub(crate) fn is_navigation<B>(req: &Request<B>, config: &PersistentConfig) -> bool {
    req.method() == Method::GET
        && !req.headers().contains_key(&headers::SESSION_ID)
        && !req.headers().contains_key(header::UPGRADE)
        && lists_html(req)
        && !capable(req, config)
}

fn lists_html<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|item| {
            let media = item.split(|&b| b == b';').next().unwrap_or_default();
            media.trim_ascii().eq_ignore_ascii_case(b"text/html")
        })
}

/// Opens the session and answers with its page.
pub(crate) async fn open(
    env: &SessionEnv,
    vhost: &Arc<VhostScope>,
    route: &PersistentRoute,
    conn: ConnInfo,
    req: Request<Body>,
) -> Response<Body> {
    let opened = match open_session(env, vhost, route, conn, req, Transport::Page).await {
        Ok(opened) => opened,
        Err(not) => return not.into_response(),
    };
    let mut fields = opened.headers;
    for name in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CACHE_CONTROL,
        header::EXPIRES,
        header::ETAG,
        header::LAST_MODIFIED,
    ] {
        fields.remove(name);
    }
    let html = fields
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/html"));
    let body = if html {
        with_session_meta(&opened.initial, opened.handle.id.as_str())
    } else {
        opened.initial.to_vec()
    };
    // A page that is a session is never to be shown again from a cache:
    // its SessionID is one browser's.
    fields.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    fields.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = StatusCode::OK;
    *resp.headers_mut() = fields;
    resp
}

/// `page` with `<meta name="tether-session" content="SID">` right after
/// its first `<head>` tag (any case, attributes allowed) within the first
/// 4 KiB, or at the very start when there is none; every other byte as
/// it was.
pub(crate) fn with_session_meta(page: &[u8], sid: &str) -> Vec<u8> {
    let meta = format!("<meta name=\"tether-session\" content=\"{sid}\">");
    let at = head_tag_end(&page[..page.len().min(HEAD_WITHIN)]).unwrap_or(0);
    let mut out = Vec::with_capacity(page.len() + meta.len());
    out.extend_from_slice(&page[..at]);
    out.extend_from_slice(meta.as_bytes());
    out.extend_from_slice(&page[at..]);
    out
}

/// Where the first `<head>` or `<head ...>` tag ends (after its `>`), not
/// counting `<header>` and the like.
fn head_tag_end(page: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = page[from..]
        .windows(5)
        .position(|w| w.eq_ignore_ascii_case(b"<head"))
    {
        let start = from + i;
        let after = start + 5;
        match page.get(after) {
            Some(b'>') => return Some(after + 1),
            Some(b) if b.is_ascii_whitespace() || *b == b'/' => {
                let close = page[after..].iter().position(|&b| b == b'>')?;
                return Some(after + close + 1);
            }
            _ => from = after,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "abcdefghijklmnopqrstuvwxyz012345";

    fn meta() -> String {
        format!("<meta name=\"tether-session\" content=\"{SID}\">")
    }

    #[test]
    fn after_a_plain_head_tag() {
        let page = b"<!doctype html><html><head><title>t</title></head><body>x</body></html>";
        let out = String::from_utf8(with_session_meta(page, SID)).unwrap();
        assert_eq!(
            out,
            format!(
                "<!doctype html><html><head>{}<title>t</title></head><body>x</body></html>",
                meta()
            )
        );
    }

    #[test]
    fn after_a_head_tag_in_capitals_with_attributes() {
        let page = b"<HTML><HEAD lang=en>\n<TITLE>t</TITLE></HEAD>";
        let out = String::from_utf8(with_session_meta(page, SID)).unwrap();
        assert_eq!(
            out,
            format!("<HTML><HEAD lang=en>{}\n<TITLE>t</TITLE></HEAD>", meta())
        );
    }

    #[test]
    fn at_the_start_without_a_head_and_a_header_is_not_a_head() {
        let page = b"<header>hi</header><p>no head</p>";
        let out = String::from_utf8(with_session_meta(page, SID)).unwrap();
        assert_eq!(out, format!("{}<header>hi</header><p>no head</p>", meta()));
    }

    #[test]
    fn a_head_after_the_first_4_kib_is_not_looked_for() {
        let mut page = vec![b' '; HEAD_WITHIN];
        page.extend_from_slice(b"<head>");
        let out = with_session_meta(&page, SID);
        assert!(out.starts_with(meta().as_bytes()));
        assert_eq!(out.len(), page.len() + meta().len());
    }

    #[test]
    fn navigations_are_told_from_sessions_and_upgrades() {
        let config = PersistentConfig::with_defaults(
            &crate::config::parse_upstream("http://127.0.0.1:1").unwrap(),
        );
        let req = |accept: &str| {
            Request::builder()
                .method(Method::GET)
                .header(header::ACCEPT, accept)
                .body(())
                .unwrap()
        };
        assert!(is_navigation(
            &req("text/html,application/xhtml+xml,*/*;q=0.8"),
            &config
        ));
        assert!(!is_navigation(&req("application/x-persistent"), &config));
        assert!(!is_navigation(
            &req("text/html, application/x-persistent"),
            &config
        ));
        assert!(!is_navigation(&req("application/json"), &config));
        let mut upgrade = req("text/html");
        upgrade
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!is_navigation(&upgrade, &config));
    }
}
