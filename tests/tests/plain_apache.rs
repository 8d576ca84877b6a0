//! Plain proxying (SPEC 5) through tether in front of Apache + mod_php.

use std::time::Duration;

use tether_tests::payload::{pattern, pattern_sha1, sha1_hex, PatternReader};
use tether_tests::raw_http::Framing;
use tether_tests::{heavy_lock, Apache, RawConn, RssSampler, Tether};

const MIB: u64 = 1 << 20;
const RSS_BOUND_KIB: u64 = 64 * 1024;

fn apache_and_tether(server_extra: &str) -> (Apache, Tether) {
    let apache = Apache::start("");
    let tether = Tether::in_front_of(&["a.test"], apache.addr(), server_extra);
    (apache, tether)
}

/// The `key=value` lines of echo.php's answer.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

#[test]
fn php_sees_method_headers_and_body() {
    let (apache, tether) = apache_and_tether("");
    let body = pattern(1, 200_000);
    let mut c = RawConn::connect(tether.addr());
    let r = c.request(
        "POST",
        "/echo.php?a=1&b=%20x",
        "a.test",
        &[
            ("Content-Type", "application/octet-stream"),
            ("X-Custom", "value with  spaces"),
            ("Accept", "text/plain"),
        ],
        &body,
    );
    assert_eq!(r.status, 200, "{}\n{}", r.head_text(), apache.error_log());
    assert_eq!(r.header("x-origin"), Some("apache"));
    let t = r.body_text();
    assert_eq!(field(&t, "method"), Some("POST"), "{t}");
    assert_eq!(field(&t, "uri"), Some("/echo.php?a=1&b=%20x"), "{t}");
    assert_eq!(field(&t, "body-length"), Some("200000"), "{t}");
    assert_eq!(
        field(&t, "body-sha1"),
        Some(sha1_hex(&body).as_str()),
        "{t}"
    );
    assert_eq!(field(&t, "h:x-custom"), Some("value with  spaces"), "{t}");
    assert_eq!(field(&t, "h:host"), Some("a.test"), "{t}");
    assert_eq!(field(&t, "h:x-forwarded-for"), Some("127.0.0.1"), "{t}");
    assert_eq!(field(&t, "h:x-forwarded-proto"), Some("http"), "{t}");
    assert_eq!(field(&t, "h:x-forwarded-host"), Some("a.test"), "{t}");
    assert_eq!(field(&t, "h:via"), Some("1.1 tether"), "{t}");

    for method in ["GET", "DELETE", "OPTIONS", "PATCH"] {
        let r = c.request(method, "/echo.php", "a.test", &[], b"");
        assert_eq!(field(&r.body_text(), "method"), Some(method));
    }
}

#[test]
fn php_cookies_pass_both_ways() {
    let (_apache, tether) = apache_and_tether("");
    let r = RawConn::connect(tether.addr()).request(
        "GET",
        "/cookie.php",
        "a.test",
        &[("Cookie", "sid=abc; theme=dark")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header_all("set-cookie"),
        vec!["a=1; path=/", "b=2; path=/; HttpOnly; SameSite=Lax"]
    );
    assert_eq!(r.body_text(), "cookie=[sid=abc; theme=dark]\n");
}

#[test]
fn php_redirect_passes_unchanged() {
    let (_apache, tether) = apache_and_tether("");
    let r = RawConn::connect(tether.addr()).request("GET", "/redirect.php", "a.test", &[], b"");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/target.php?from=redirect"));
    assert_eq!(r.header_all("set-cookie"), vec!["r=x"]);
}

#[test]
fn mod_rewrite_and_head_work_through_tether() {
    let (_apache, tether) = apache_and_tether("");
    let mut c = RawConn::connect(tether.addr());
    let r = c.request("GET", "/old/page", "a.test", &[], b"");
    assert_eq!(field(&r.body_text(), "uri"), Some("/old/page"));
    let g = c.request("GET", "/echo.php", "a.test", &[], b"");
    let h = c.request("HEAD", "/echo.php", "a.test", &[], b"");
    assert_eq!(h.status, 200);
    assert_eq!(h.framing, Framing::NoBody);
    assert_eq!(g.header("content-type"), h.header("content-type"));
    assert_eq!(
        c.request("GET", "/echo.php", "a.test", &[], b"").status,
        200
    );
}

#[test]
fn php_flushed_output_is_relayed_chunked() {
    let (_apache, tether) = apache_and_tether("");
    let want: Vec<u8> = (0..50)
        .flat_map(|i: usize| {
            let mut line = vec![b'a' + (i % 26) as u8; 1000 + i];
            line.push(b'\n');
            line
        })
        .collect();
    let mut c = RawConn::connect(tether.addr());
    let r = c.request("GET", "/flush.php?n=50", "a.test", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.framing, Framing::Chunked, "{}", r.head_text());
    tether_tests::payload::assert_same_bytes(&r.body, &want, "flushed body");

    // HTTP/1.0: the same body, not chunked.
    let mut c = RawConn::connect(tether.addr());
    c.send(b"GET /flush.php?n=50 HTTP/1.0\r\nHost: a.test\r\n\r\n");
    let r = c.read_response();
    assert_ne!(r.framing, Framing::Chunked, "{}", r.head_text());
    tether_tests::payload::assert_same_bytes(&r.body, &want, "flushed body to HTTP/1.0");
}

#[test]
fn chunked_request_body_reaches_php() {
    let (_apache, tether) = apache_and_tether("");
    let mut c = RawConn::connect(tether.addr());
    c.send(b"PUT /echo.php HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send_chunked_from(&mut PatternReader::new(5, 3 * MIB), 10_000)
        .expect("send");
    let r = c.read_final_response_to("PUT").expect("response");
    let t = r.body_text();
    assert_eq!(field(&t, "body-length"), Some("3145728"), "{t}");
    assert_eq!(
        field(&t, "body-sha1"),
        Some(pattern_sha1(5, 3 * MIB).as_str())
    );
}

#[test]
fn large_php_upload_streams_with_bounded_memory() {
    let _heavy = heavy_lock();
    let (_apache, tether) = apache_and_tether("");
    let size = 256 * MIB;
    let sampler = RssSampler::start(tether.pid());
    let mut c = RawConn::connect(tether.addr());
    c.send(
        format!("PUT /echo.php HTTP/1.1\r\nHost: a.test\r\nContent-Length: {size}\r\n\r\n")
            .as_bytes(),
    );
    c.send_from(&mut PatternReader::new(6, size))
        .expect("upload");
    let r = c.read_final_response_to("PUT").expect("response");
    let peak = sampler.finish();
    let t = r.body_text();
    assert_eq!(
        field(&t, "body-length"),
        Some(size.to_string().as_str()),
        "{t}"
    );
    assert_eq!(field(&t, "body-sha1"), Some(pattern_sha1(6, size).as_str()));
    assert!(
        peak < RSS_BOUND_KIB,
        "tether's RSS peaked at {peak} KiB during a 256 MiB upload (bound {RSS_BOUND_KIB} KiB)"
    );
}

#[test]
fn slow_php_is_504() {
    let (_apache, tether) = apache_and_tether("origin_response_timeout = \"1s\"");
    let mut c = RawConn::connect(tether.addr());
    let r = c.request("GET", "/sleep.php?s=5", "a.test", &[], b"");
    assert_eq!(r.status, 504, "{}", r.head_text());
    // A quick page still answers on a new connection.
    let r = RawConn::connect(tether.addr()).request("GET", "/sleep.php?s=0", "a.test", &[], b"");
    assert_eq!(r.status, 200);
}

#[test]
fn expect_100_continue_to_php() {
    let (_apache, tether) = apache_and_tether("");
    let body = pattern(7, 50_000);
    let mut c = RawConn::connect(tether.addr());
    c.send(
        format!(
            "POST /echo.php HTTP/1.1\r\nHost: a.test\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let interim = c.read_head().expect("interim");
    assert_eq!(interim.status, 100, "{}", interim.head_text());
    c.send(&body);
    let r = c.read_response();
    assert_eq!(
        field(&r.body_text(), "body-sha1"),
        Some(sha1_hex(&body).as_str())
    );
}

#[test]
fn keep_alive_and_pipelining_to_php() {
    let (apache, tether) = apache_and_tether("");
    let mut c = RawConn::connect(tether.addr());
    let mut all = Vec::new();
    for i in 0..10 {
        all.extend_from_slice(
            format!("GET /echo.php?i={i} HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes(),
        );
    }
    c.send(&all);
    for i in 0..10 {
        let r = c.read_response();
        assert_eq!(
            field(&r.body_text(), "uri"),
            Some(format!("/echo.php?i={i}").as_str())
        );
    }
    let e = apache
        .access_log()
        .wait_for_uri("/echo.php?i=9", Duration::from_secs(10));
    assert_eq!(e.x_forwarded_for, "127.0.0.1");
}
