//! The page is the session (SPEC 12) with real Apache + mod_php: a browser
//! navigation opens a session whose answer is the page with its SessionID
//! in a meta tag; the page attaches later as a resume with count 0; form
//! messages reach PHP's `$_POST`.

use std::net::SocketAddr;

use tether_tests::apache::Apache;
use tether_tests::raw_http::Response;
use tether_tests::session::{resume_ok, session_vhost, HOST};
use tether_tests::{metric, wait_for, RawConn, Tether};

const PAGE: &str = r#"<?php
$event = $_SERVER['HTTP_SESSION_EVENT'] ?? '-';
$sid = $_SERVER['HTTP_SESSIONID'] ?? '-';
$type = $_SERVER['CONTENT_TYPE'] ?? '-';
file_put_contents(__DIR__ . '/events.log',
    "$event $sid type=$type post=" . json_encode($_POST) . "\n", FILE_APPEND | LOCK_EX);
if ($event === 'open') {
    header('Connection-Type: Persistent');
    $kind = $_GET['kind'] ?? 'head';
    if ($kind === 'text') {
        header('Content-Type: text/plain');
        echo "<head>not html\n";
        exit;
    }
    header('Content-Type: text/html; charset=utf-8');
    if ($kind === 'caps') {
        echo "<HTML><HEAD lang=en><TITLE>t</TITLE></HEAD><BODY>caps</BODY></HTML>\n";
    } elseif ($kind === 'nohead') {
        echo "<p>no head here</p>\n";
    } else {
        // Two pieces: Apache answers chunked.
        echo "<!doctype html><html><head><title>chat</title></head>";
        flush();
        echo "<body>the page</body></html>\n";
    }
    exit;
}
if ($event === 'message') {
    echo "hello " . ($_POST['name'] ?? '?') . ": " . ($_POST['text'] ?? '') . "\n";
    exit;
}
"#;

const NAVIGATION: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const TOKEN: &str = "page-test-admin-token";

fn start(extra: &str) -> (Apache, Tether) {
    let apache = Apache::start(
        "<FilesMatch \"\\.pphp$\">\n    SetHandler application/x-httpd-php\n</FilesMatch>\n",
    );
    apache.put_file("page.pphp", PAGE.as_bytes());
    std::fs::write(apache.root().join("events.log"), "").unwrap();
    tether_tests::set_mode(&apache.root().join("events.log"), 0o666);
    let url = format!("http://{}", apache.addr());
    let tether = Tether::start(&Tether::config(
        &format!("admin_token = \"{TOKEN}\""),
        &[session_vhost(
            HOST,
            &url,
            std::slice::from_ref(&url),
            &format!("mode = \"message\"\nresume_grace = \"30s\"\n{extra}"),
        )],
    ));
    (apache, tether)
}

fn navigate(addr: SocketAddr, target: &str) -> Response {
    RawConn::connect(addr).request("GET", target, HOST, &[("Accept", NAVIGATION)], b"")
}

fn events(apache: &Apache) -> Vec<String> {
    std::fs::read_to_string(apache.root().join("events.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn meta(sid: &str) -> String {
    format!("<meta name=\"tether-session\" content=\"{sid}\">")
}

/// The SessionID PHP saw with the opening request.
fn opened_sid(apache: &Apache) -> String {
    let ev = events(apache);
    let open = ev
        .iter()
        .find(|e| e.starts_with("open "))
        .unwrap_or_else(|| panic!("no open event: {ev:?}"));
    open.split(' ').nth(1).unwrap().to_owned()
}

#[test]
fn a_navigation_gets_the_page_and_the_page_is_the_session() {
    let (apache, tether) = start("page_sessions = true\nmessage_format = \"form\"");
    let page = navigate(tether.addr(), "/page.pphp");
    assert_eq!(page.status, 200, "{}{}", page.head_text(), page.body_text());
    let sid = opened_sid(&apache);
    assert_eq!(
        page.body_text(),
        format!(
            "<!doctype html><html><head>{}<title>chat</title></head><body>the page</body></html>\n",
            meta(&sid)
        ),
        "the worker's page, byte for byte, with the tag after <head>"
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(
        page.header("content-length"),
        Some(page.body.len().to_string().as_str())
    );
    assert!(page
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    assert!(page.header("connection-type").is_none());
    assert!(page.header("sessionid").is_none());
    assert_eq!(
        metric(
            tether.admin_addr().unwrap(),
            &format!("tether_sessions_opened_total{{vhost=\"{HOST}\",transport=\"page\"}}")
        ),
        Some(1.0)
    );

    // The page's script attaches as a resume with count 0 and sends a
    // form message, which PHP reads from $_POST.
    let mut s = resume_ok(tether.addr(), "/page.pphp", &sid, 0);
    s.chan.send(b"name=Ann&text=hi%20there\n");
    assert_eq!(s.chan.line(), "hello Ann: hi there\n");
    s.chan.send(b"name=Bo&text=one\nname=Cy&text=two\n");
    assert_eq!(s.chan.line(), "hello Bo: one\n");
    assert_eq!(s.chan.line(), "hello Cy: two\n");
    let messages: Vec<String> = events(&apache)
        .into_iter()
        .filter(|e| e.starts_with("message "))
        .collect();
    assert_eq!(
        messages.len(),
        3,
        "one request per form message: {messages:?}"
    );
    for m in &messages {
        assert!(m.contains("type=application/x-www-form-urlencoded"), "{m}");
    }
    assert!(
        messages[0].ends_with(r#"post={"name":"Ann","text":"hi there"}"#),
        "{}",
        messages[0]
    );
}

#[test]
fn the_tag_goes_after_any_head_tag_or_first_and_only_into_html() {
    let (apache, tether) = start("page_sessions = true");
    let caps = navigate(tether.addr(), "/page.pphp?kind=caps");
    let sid = opened_sid(&apache);
    assert_eq!(
        caps.body_text(),
        format!(
            "<HTML><HEAD lang=en>{}<TITLE>t</TITLE></HEAD><BODY>caps</BODY></HTML>\n",
            meta(&sid)
        )
    );
    std::fs::write(apache.root().join("events.log"), "").unwrap();
    let none = navigate(tether.addr(), "/page.pphp?kind=nohead");
    let sid = opened_sid(&apache);
    assert_eq!(
        none.body_text(),
        format!("{}<p>no head here</p>\n", meta(&sid))
    );
    let text = navigate(tether.addr(), "/page.pphp?kind=text");
    assert_eq!(text.status, 200);
    assert_eq!(text.body_text(), "<head>not html\n", "no tag outside HTML");
    assert_eq!(text.header("cache-control"), Some("no-store"));
}

#[test]
fn lines_that_come_before_the_page_attaches_are_replayed_to_it() {
    let (apache, tether) = start("page_sessions = true");
    navigate(tether.addr(), "/page.pphp");
    let sid = opened_sid(&apache);
    let pushed = RawConn::connect(tether.admin_addr().unwrap()).request(
        "POST",
        &format!("/v1/sessions/{sid}/lines"),
        "admin",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"before you came\n",
    );
    assert_eq!(pushed.status, 204, "{}", pushed.body_text());
    let mut s = resume_ok(tether.addr(), "/page.pphp", &sid, 0);
    assert_eq!(s.chan.line(), "before you came\n");
}

#[test]
fn without_page_sessions_a_navigation_still_gets_406() {
    let (apache, tether) = start("");
    let r = navigate(tether.addr(), "/page.pphp");
    assert_eq!(r.status, 406);
    wait_for(
        "nothing reached PHP",
        std::time::Duration::from_millis(200),
        || events(&apache).is_empty().then_some(()),
    );
}
