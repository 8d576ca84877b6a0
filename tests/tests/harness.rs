//! The harness itself, checked against nginx, Apache and the WebSocket echo
//! origin directly (no tether): when these fail, the other tests' failures
//! say nothing about tether.

use std::time::Duration;

use tether_tests::payload::{assert_same_bytes, pattern, pattern_sha1, sha1_hex, PatternReader};
use tether_tests::raw_http::{get, Framing};
use tether_tests::{free_port, Apache, Nginx, RawConn, WsClient, WsEcho};

#[test]
fn free_ports_are_distinct() {
    let a: Vec<u16> = (0..50).map(|_| free_port()).collect();
    let mut b = a.clone();
    b.sort();
    b.dedup();
    assert_eq!(a.len(), b.len());
}

#[test]
fn nginx_serves_files_keeps_alive_and_logs() {
    let nginx = Nginx::standard();
    let body = pattern(1, 5000);
    nginx.put_file("/f.bin", &body);
    let mut c = RawConn::connect(nginx.addr());
    for _ in 0..3 {
        let r = c.request("GET", "/f.bin", "a.test", &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.framing, Framing::ContentLength(5000));
        assert_same_bytes(&r.body, &body, "f.bin");
    }
    let head = c.request("HEAD", "/f.bin", "a.test", &[], b"");
    assert_eq!(head.framing, Framing::NoBody);
    assert_eq!(head.header("content-length"), Some("5000"));
    let e = nginx
        .access_log()
        .wait_for_uri("/f.bin", Duration::from_secs(5));
    assert_eq!(e.status, 200);
    assert_eq!(e.port, nginx.addr().port());
}

#[test]
fn nginx_stores_put_bodies_plain_and_chunked() {
    let nginx = Nginx::standard();
    let mut c = RawConn::connect(nginx.addr());
    let body = pattern(2, 100_000);
    let r = c.request("PUT", "/up/plain", "a.test", &[], &body);
    assert!(r.status == 201 || r.status == 204, "{}", r.head_text());
    assert_same_bytes(
        &std::fs::read(nginx.stored("/up/plain")).unwrap(),
        &body,
        "stored",
    );

    c.send(b"PUT /up/chunked HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send_chunked_from(&mut PatternReader::new(3, 70_000), 4096)
        .unwrap();
    let r = c.read_response();
    assert!(r.status == 201 || r.status == 204, "{}", r.head_text());
    assert_eq!(
        sha1_hex(&std::fs::read(nginx.stored("/up/chunked")).unwrap()),
        pattern_sha1(3, 70_000)
    );
}

#[test]
fn nginx_gzip_location_answers_chunked() {
    let nginx = Nginx::standard();
    nginx.put_file("/gz/t.txt", "hello world\n".repeat(1000).as_bytes());
    let mut c = RawConn::connect(nginx.addr());
    let r = c.request(
        "GET",
        "/gz/t.txt",
        "a.test",
        &[("Accept-Encoding", "gzip")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.framing, Framing::Chunked, "{}", r.head_text());
    assert_eq!(r.header("content-encoding"), Some("gzip"));
}

#[test]
fn apache_php_echoes_and_streams() {
    let apache = Apache::start("");
    let mut c = RawConn::connect(apache.addr());
    let body = pattern(4, 300_000);
    let r = c.request(
        "POST",
        "/echo.php?q=1",
        "a.test",
        &[("X-Test", "yes")],
        &body,
    );
    assert_eq!(r.status, 200, "{}\n{}", r.head_text(), apache.error_log());
    let text = r.body_text();
    assert!(text.contains("method=POST\n"), "{text}");
    assert!(text.contains("uri=/echo.php?q=1\n"), "{text}");
    assert!(text.contains("h:x-test=yes\n"), "{text}");
    assert!(
        text.contains(&format!("body-sha1={}\n", sha1_hex(&body))),
        "{text}"
    );
    assert_eq!(r.header("x-origin"), Some("apache"));

    let r = c.request("GET", "/flush.php?n=20", "a.test", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.framing, Framing::Chunked, "{}", r.head_text());
    assert_eq!(r.body.len(), (0..20).map(|i| 1001 + i).sum::<usize>());

    let r = c.request("GET", "/old/thing", "a.test", &[], b"");
    assert!(
        r.body_text().contains("uri=/old/thing\n"),
        "{}",
        r.body_text()
    );
    let e = apache
        .access_log()
        .wait_for_uri("/echo.php?q=1", Duration::from_secs(5));
    assert_eq!(e.method, "POST");
    assert_eq!(
        get(apache.addr(), "a.test", "/sleep.php?s=0").body_text(),
        "slept\n"
    );
}

#[test]
fn ws_echo_origin_echoes() {
    let echo = WsEcho::start();
    let (mut ws, _) = WsClient::connect(echo.addr(), "a.test", "/echo", &[]).expect("101");
    ws.send_text("hello");
    let m = ws.read_message().unwrap();
    assert_eq!(m.payload, b"hello");
    let big = pattern(5, 200_000);
    ws.send_binary(&big);
    assert_same_bytes(&ws.read_message().unwrap().payload, &big, "echo");
    assert_eq!(ws.close(1000).unwrap().close_code(), Some(1000));
}
