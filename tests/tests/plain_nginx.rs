//! Plain proxying (SPEC 5) through tether in front of nginx.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use tether_tests::payload::{assert_same_bytes, pattern, write_pattern_file, PatternReader};
use tether_tests::raw_http::{get, Framing};
use tether_tests::{
    assert_between, free_port, heavy_lock, Nginx, RawConn, RssSampler, Signal, Tether,
};

const MIB: u64 = 1 << 20;
/// tether's resident memory while moving hundreds of MiB must stay below
/// this: bodies are streamed, never held whole.
const RSS_BOUND_KIB: u64 = 64 * 1024;

fn nginx_and_tether(server_extra: &str) -> (Nginx, Tether) {
    let nginx = Nginx::standard();
    let tether = Tether::in_front_of(&["a.test"], nginx.addr(), server_extra);
    (nginx, tether)
}

#[test]
fn static_files_arrive_byte_for_byte() {
    let _heavy = heavy_lock();
    let (nginx, tether) = nginx_and_tether("");
    let sizes = [0, 1, 1024, MIB, 64 * MIB];
    let mut digests = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let path = nginx.root().join(format!("f{size}.bin"));
        digests.push(write_pattern_file(&path, i as u64 + 10, *size));
    }
    let mut c = RawConn::connect(tether.addr());
    for (size, digest) in sizes.iter().zip(&digests) {
        c.send(format!("GET /f{size}.bin HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes());
        let (head, len, sha) = c.read_response_sha1("GET").expect("response");
        assert_eq!(head.status, 200, "{}", head.head_text());
        assert_eq!(len, *size, "length of f{size}.bin");
        assert_eq!(&sha, digest, "content of f{size}.bin");
        assert_eq!(head.framing, Framing::ContentLength(*size));
    }
}

#[test]
fn large_upload_and_download_keep_memory_bounded() {
    let _heavy = heavy_lock();
    let (nginx, tether) = nginx_and_tether("");
    let up = 256 * MIB;
    let down_digest = write_pattern_file(&nginx.root().join("big.bin"), 21, 256 * MIB);
    let sampler = RssSampler::start(tether.pid());

    let mut c = RawConn::connect(tether.addr());
    c.send(
        format!("PUT /up/big HTTP/1.1\r\nHost: a.test\r\nContent-Length: {up}\r\n\r\n").as_bytes(),
    );
    let sent = c
        .send_from(&mut PatternReader::new(20, up))
        .expect("upload");
    assert_eq!(sent, up);
    let r = c.read_final_response_to("PUT").expect("upload response");
    assert!(r.status == 201 || r.status == 204, "{}", r.head_text());
    assert_eq!(
        tether_tests::payload::file_sha1(&nginx.stored("/up/big")),
        tether_tests::payload::pattern_sha1(20, up),
        "uploaded bytes differ"
    );

    c.send(b"GET /big.bin HTTP/1.1\r\nHost: a.test\r\n\r\n");
    let (head, len, sha) = c.read_response_sha1("GET").expect("download");
    assert_eq!(head.status, 200);
    assert_eq!(len, 256 * MIB);
    assert_eq!(sha, down_digest, "downloaded bytes differ");

    let peak = sampler.finish();
    assert!(
        peak < RSS_BOUND_KIB,
        "tether's RSS peaked at {peak} KiB moving 256 MiB each way (bound {RSS_BOUND_KIB} KiB)"
    );
}

#[test]
fn redirects_and_set_cookie_pass_unchanged() {
    let (_nginx, tether) = nginx_and_tether("");
    let mut c = RawConn::connect(tether.addr());
    let r = c.request("GET", "/redirect", "a.test", &[], b"");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("http://a.test/target?x=1"));
    assert_eq!(r.header_all("set-cookie"), vec!["r=1; Path=/; HttpOnly"]);

    let r = c.request("GET", "/cookie", "a.test", &[("Cookie", "c=3; d=4")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header_all("set-cookie"),
        vec!["a=1; Path=/", "b=2; Path=/; Secure; HttpOnly"]
    );
    assert_eq!(r.body_text(), "cookie=[c=3; d=4]\n");
}

#[test]
fn head_has_the_same_headers_and_no_body() {
    let (nginx, tether) = nginx_and_tether("");
    nginx.put_file("/1k.bin", &pattern(1, 1024));
    let mut c = RawConn::connect(tether.addr());
    let g = c.request("GET", "/1k.bin", "a.test", &[], b"");
    let h = c.request("HEAD", "/1k.bin", "a.test", &[], b"");
    assert_eq!(h.status, 200);
    assert_eq!(h.framing, Framing::NoBody);
    for name in [
        "content-length",
        "content-type",
        "etag",
        "last-modified",
        "accept-ranges",
    ] {
        assert_eq!(
            g.header(name),
            h.header(name),
            "{name} differs between GET and HEAD"
        );
    }
    assert_eq!(h.header("content-length"), Some("1024"));
    // No body bytes followed the HEAD answer: the next answer parses.
    let g2 = c.request("GET", "/1k.bin", "a.test", &[], b"");
    assert_same_bytes(&g2.body, &pattern(1, 1024), "1k.bin after HEAD");
}

#[test]
fn conditional_requests_get_304() {
    let (nginx, tether) = nginx_and_tether("");
    nginx.put_file("/1k.bin", &pattern(1, 1024));
    let mut c = RawConn::connect(tether.addr());
    let g = c.request("GET", "/1k.bin", "a.test", &[], b"");
    let etag = g.header("etag").expect("ETag").to_string();
    let lm = g
        .header("last-modified")
        .expect("Last-Modified")
        .to_string();

    let r = c.request("GET", "/1k.bin", "a.test", &[("If-None-Match", &etag)], b"");
    assert_eq!(r.status, 304, "{}", r.head_text());
    assert_eq!(r.framing, Framing::NoBody);
    assert_eq!(r.header("etag"), Some(etag.as_str()));

    let r = c.request(
        "GET",
        "/1k.bin",
        "a.test",
        &[("If-Modified-Since", &lm)],
        b"",
    );
    assert_eq!(r.status, 304, "{}", r.head_text());

    let r = c.request(
        "GET",
        "/1k.bin",
        "a.test",
        &[("If-None-Match", "\"other\"")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1024);
}

#[test]
fn no_content_204_has_no_body() {
    let (_nginx, tether) = nginx_and_tether("");
    let mut c = RawConn::connect(tether.addr());
    let r = c.request("GET", "/204", "a.test", &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.header("content-length"), None, "{}", r.head_text());
    let r = c.request("GET", "/echo", "a.test", &[], b"");
    assert_eq!(r.status, 200, "the connection stays usable after a 204");
}

#[test]
fn chunked_response_is_relayed() {
    let (nginx, tether) = nginx_and_tether("");
    nginx.put_file(
        "/gz/t.txt",
        "some text to compress\n".repeat(5000).as_bytes(),
    );
    let ae = [("Accept-Encoding", "gzip")];
    let direct = RawConn::connect(nginx.addr()).request("GET", "/gz/t.txt", "a.test", &ae, b"");
    assert_eq!(
        direct.framing,
        Framing::Chunked,
        "nginx itself must answer chunked"
    );
    let r = RawConn::connect(tether.addr()).request("GET", "/gz/t.txt", "a.test", &ae, b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.framing, Framing::Chunked, "{}", r.head_text());
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_same_bytes(&r.body, &direct.body, "gzip body");
}

#[test]
fn chunked_request_body_is_streamed() {
    let (nginx, tether) = nginx_and_tether("");
    let mut c = RawConn::connect(tether.addr());
    c.send(b"PUT /up/chunked HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send_chunked_from(&mut PatternReader::new(30, MIB), 7000)
        .expect("send chunked");
    let r = c.read_final_response_to("PUT").expect("response");
    assert!(r.status == 201 || r.status == 204, "{}", r.head_text());
    assert_eq!(
        tether_tests::payload::file_sha1(&nginx.stored("/up/chunked")),
        tether_tests::payload::pattern_sha1(30, MIB)
    );
}

#[test]
fn expect_100_continue() {
    let (nginx, tether) = nginx_and_tether("");
    let body = pattern(31, 100_000);
    let mut c = RawConn::connect(tether.addr());
    c.send(
        format!(
            "PUT /up/expect HTTP/1.1\r\nHost: a.test\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let interim = c.read_head().expect("interim response");
    assert_eq!(interim.status, 100, "{}", interim.head_text());
    c.send(&body);
    let r = c.read_response_to("PUT").expect("final response");
    assert!(r.status == 201 || r.status == 204, "{}", r.head_text());
    assert_same_bytes(
        &std::fs::read(nginx.stored("/up/expect")).unwrap(),
        &body,
        "stored",
    );
}

#[test]
fn http10_client_gets_unchunked_responses() {
    let (nginx, tether) = nginx_and_tether("");
    nginx.put_file("/1k.bin", &pattern(1, 1024));
    nginx.put_file(
        "/gz/t.txt",
        "some text to compress\n".repeat(5000).as_bytes(),
    );

    let mut c = RawConn::connect(tether.addr());
    c.send(b"GET /1k.bin HTTP/1.0\r\nHost: a.test\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), None);
    assert_same_bytes(&r.body, &pattern(1, 1024), "1k.bin");
    c.expect_closed(Duration::from_secs(10))
        .expect("HTTP/1.0 without keep-alive ends with a close");

    // A body nginx would chunk for HTTP/1.1 must reach HTTP/1.0 unchunked.
    let ae = [("Accept-Encoding", "gzip")];
    let direct = RawConn::connect(nginx.addr()).request("GET", "/gz/t.txt", "a.test", &ae, b"");
    let mut c = RawConn::connect(tether.addr());
    c.send(b"GET /gz/t.txt HTTP/1.0\r\nHost: a.test\r\nAccept-Encoding: gzip\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_ne!(r.framing, Framing::Chunked, "{}", r.head_text());
    assert_eq!(r.header("transfer-encoding"), None, "{}", r.head_text());
    assert_same_bytes(&r.body, &direct.body, "gzip body to HTTP/1.0");
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let (nginx, tether) = nginx_and_tether("");
    nginx.put_file("/1k.bin", &pattern(1, 1024));
    let mut c = RawConn::connect(tether.addr());
    for i in 0..5 {
        assert_eq!(
            c.request("GET", "/1k.bin", "a.test", &[], b"").body.len(),
            1024
        );
        assert_eq!(c.request("HEAD", "/1k.bin", "a.test", &[], b"").status, 200);
        assert_eq!(c.request("GET", "/204", "a.test", &[], b"").status, 204);
        let put = c.request(
            "PUT",
            &format!("/up/k{i}"),
            "a.test",
            &[],
            &pattern(i, 5000),
        );
        assert!(put.status == 201 || put.status == 204);
    }
    let last = c.request("GET", "/1k.bin", "a.test", &[("Connection", "close")], b"");
    assert_eq!(last.status, 200);
    c.expect_closed(Duration::from_secs(10))
        .expect("closed after Connection: close");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (nginx, tether) = nginx_and_tether("");
    let mut all = Vec::new();
    for i in 0..5u64 {
        nginx.put_file(&format!("/p{i}.bin"), &pattern(i, 1000 + i as usize * 3000));
        all.extend_from_slice(format!("GET /p{i}.bin HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes());
    }
    let mut c = RawConn::connect(tether.addr());
    c.send(&all);
    for i in 0..5u64 {
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_same_bytes(
            &r.body,
            &pattern(i, 1000 + i as usize * 3000),
            &format!("response {i}"),
        );
    }
}

#[test]
fn virtual_hosts_are_routed_by_host() {
    let nginx = Nginx::start(&[
        "location / { return 200 \"A\\n\"; }",
        "location / { return 200 \"B\\n\"; }",
        "location / { return 200 \"default\\n\"; }",
    ]);
    let config = Tether::config(
        "",
        &[
            Tether::vhost(&["a.test"], nginx.addr_of(0)),
            Tether::vhost(&["b.test", "www.b.test"], nginx.addr_of(1)),
            Tether::vhost(&["*"], nginx.addr_of(2)),
        ],
    );
    let tether = Tether::start(&config);
    for (host, want) in [
        ("a.test", "A\n"),
        ("a.test:8080", "A\n"),
        ("A.TEST", "A\n"),
        ("b.test", "B\n"),
        ("www.b.test", "B\n"),
        ("c.test", "default\n"),
        ("127.0.0.1", "default\n"),
    ] {
        let r = get(tether.addr(), host, "/");
        assert_eq!(r.status, 200, "Host: {host}");
        assert_eq!(r.body_text(), want, "Host: {host}");
    }
}

#[test]
fn unknown_host_is_421() {
    let (_nginx, tether) = nginx_and_tether("");
    let r = get(tether.addr(), "other.test", "/echo");
    assert_eq!(r.status, 421, "{}", r.head_text());
}

#[test]
fn forwarding_headers_reach_the_origin() {
    let (_nginx, tether) = nginx_and_tether("");
    let mut c = RawConn::connect(tether.addr());
    let r = c.request("GET", "/echo", "a.test", &[], b"");
    let t = r.body_text();
    assert!(t.contains("host=[a.test]\n"), "{t}");
    assert!(t.contains("xff=[127.0.0.1]\n"), "{t}");
    assert!(t.contains("xfp=[http]\n"), "{t}");
    assert!(t.contains("xfh=[a.test]\n"), "{t}");
    assert!(t.contains("via=[1.1 tether]\n"), "{t}");

    let r = c.request(
        "GET",
        "/echo",
        "a.test:8080",
        &[
            ("X-Forwarded-For", "10.1.2.3"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.test"),
            ("Via", "1.0 upstream"),
        ],
        b"",
    );
    let t = r.body_text();
    assert!(t.contains("host=[a.test:8080]\n"), "Host preserved: {t}");
    assert!(
        t.contains("xff=[10.1.2.3, 127.0.0.1]\n"),
        "XFF appended: {t}"
    );
    assert!(t.contains("xfp=[http]\n"), "XFP set, not trusted: {t}");
    assert!(t.contains("xfh=[a.test:8080]\n"), "XFH set from Host: {t}");
    assert!(
        t.contains("via=[1.0 upstream, 1.1 tether]\n"),
        "Via appended: {t}"
    );
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let (_nginx, tether) = nginx_and_tether("");
    let mut c = RawConn::connect(tether.addr());
    let r = c.request(
        "GET",
        "/echo",
        "a.test",
        &[
            ("Connection", "X-Foo, keep-alive"),
            ("X-Foo", "secret"),
            ("X-Bar", "kept"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Proxy-Connection", "keep-alive"),
            ("Upgrade", "h2c"),
        ],
        b"",
    );
    assert_eq!(
        r.status, 200,
        "an Upgrade that is not taken is a plain request"
    );
    let t = r.body_text();
    for gone in [
        "x-foo=[]",
        "keep-alive=[]",
        "te=[]",
        "proxy-connection=[]",
        "upgrade=[]",
    ] {
        assert!(t.contains(&format!("{gone}\n")), "expected {gone} in\n{t}");
    }
    assert!(t.contains("x-bar=[kept]\n"), "{t}");
    let conn = t
        .lines()
        .find(|l| l.starts_with("connection="))
        .unwrap_or("");
    let lower = conn.to_ascii_lowercase();
    assert!(
        !lower.contains("x-foo") && !lower.contains("upgrade"),
        "{conn}"
    );
}

#[test]
fn origin_down_is_502() {
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let tether = Tether::in_front_of(&["a.test"], dead, "");
    let r = get(tether.addr(), "a.test", "/");
    assert_eq!(r.status, 502, "{}", r.head_text());
}

#[test]
fn origin_slower_than_response_timeout_is_504() {
    // Accepted by the kernel (backlog), never answered.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let tether = Tether::in_front_of(
        &["a.test"],
        silent.local_addr().unwrap(),
        "origin_response_timeout = \"1s\"",
    );
    let r = get(tether.addr(), "a.test", "/");
    assert_eq!(r.status, 504, "{}", r.head_text());
    drop(silent);
}

#[test]
fn over_max_connections_is_503_and_closed() {
    let (_nginx, tether) = nginx_and_tether("max_connections = 2");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = RawConn::connect(tether.addr());
        assert_eq!(c.request("GET", "/204", "a.test", &[], b"").status, 204);
        held.push(c);
    }
    let mut third = RawConn::connect(tether.addr());
    // The gateway answers without reading a request.
    let r = third
        .read_response_to("GET")
        .expect("503 without a request");
    assert_eq!(r.status, 503, "{}", r.head_text());
    assert!(r.header("retry-after").is_some(), "{}", r.head_text());
    assert!(r.has_token("connection", "close"), "{}", r.head_text());
    third
        .expect_closed(Duration::from_secs(10))
        .expect("closed after the 503");

    drop(held.pop());
    let status = tether_tests::wait_for("a free slot", Duration::from_secs(10), || {
        let mut c = RawConn::connect(tether.addr());
        let r = c.request("GET", "/204", "a.test", &[], b"");
        (r.status == 204).then_some(r.status)
    });
    assert_eq!(status, 204);
}

#[test]
fn slow_request_head_gets_408() {
    let (_nginx, tether) = nginx_and_tether("header_read_timeout = \"1s\"");
    let timeout = Duration::from_secs(1);
    let started = Instant::now();
    let mut c = RawConn::connect(tether.addr());
    c.send(b"GET /echo HTTP/1.1\r\nHost: a.test\r\n");
    let r = c.read_response_to("GET").expect("a 408");
    assert_eq!(r.status, 408, "{}", r.head_text());
    assert_between(
        "408 at header_read_timeout (1 s) after the accept",
        started.elapsed(),
        timeout,
        timeout,
    );
    c.expect_closed(Duration::from_secs(10))
        .expect("closed after 408");

    // A later request on a kept-alive connection: timed from its first byte.
    let mut c = RawConn::connect(tether.addr());
    assert_eq!(c.request("GET", "/204", "a.test", &[], b"").status, 204);
    let started = Instant::now();
    c.send(b"GET /echo HTTP/1.1\r\nHo");
    let r = c.read_response_to("GET").expect("a 408");
    assert_eq!(r.status, 408, "{}", r.head_text());
    assert_between(
        "408 at header_read_timeout (1 s) after the first byte",
        started.elapsed(),
        timeout,
        timeout,
    );
    c.expect_closed(Duration::from_secs(10))
        .expect("closed after 408");
}

#[test]
fn oversized_request_head_is_431() {
    let (_nginx, tether) = nginx_and_tether("max_header_bytes = \"4KiB\"");
    let ok = "x".repeat(2000);
    let r =
        RawConn::connect(tether.addr()).request("GET", "/echo", "a.test", &[("X-Big", &ok)], b"");
    assert_eq!(r.status, 200, "a head under the limit passes");

    let big = "x".repeat(5000);
    let mut c = RawConn::connect(tether.addr());
    let _ = c.try_send(&tether_tests::raw_http::request_bytes(
        "GET",
        "/echo",
        "a.test",
        &[("X-Big", &big)],
        b"",
    ));
    let r = c.read_response_to("GET").expect("a 431");
    assert_eq!(r.status, 431, "{}", r.head_text());
    c.expect_closed(Duration::from_secs(10))
        .expect("closed after 431");
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_then_exits_0() {
    let (nginx, mut tether) = nginx_and_tether("");
    // /slow/ is rate-limited to 256 KiB/s by nginx: about 4 s for 1 MiB.
    let digest = write_pattern_file(&nginx.root().join("slow/1m.bin"), 40, MIB);
    let mut c = RawConn::connect(tether.addr());
    c.send(b"GET /slow/1m.bin HTTP/1.1\r\nHost: a.test\r\n\r\n");
    let head = c.read_head().expect("response head");
    assert_eq!(head.status, 200);
    tether.signal(Signal::Term);
    let mut sha = sha1_smol::Sha1::new();
    let mut len = 0u64;
    c.read_body_into(&head, "GET", &mut |b| {
        len += b.len() as u64;
        sha.update(b);
    })
    .expect("the body in flight finishes");
    assert_eq!(len, MIB);
    assert_eq!(sha.digest().to_string(), digest);
    let status = tether
        .wait_exit(Duration::from_secs(40))
        .unwrap_or_else(|| {
            panic!(
                "tether did not exit after SIGTERM:\n{}",
                tether.stderr_text()
            )
        });
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        tether.stderr_text()
    );
}
