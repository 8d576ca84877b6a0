//! Malformed and ambiguous requests (SPEC 5): refused with the exact status,
//! the connection closed, and never forwarded to the origin.
//!
//! How "never forwarded" is checked: after each vector a sentinel request is
//! sent straight to nginx and awaited in its access log; every log line
//! between the count taken before the vector and the sentinel is a request
//! the origin saw because of the vector. For vectors refused by their head
//! there must be none. For bad chunked bodies, which tether only finds
//! mid-body after the head may have gone to the origin, the origin must not
//! have seen a *complete* request: the PUT's file does not exist and any
//! log line for it has a non-2xx status (nginx logs 400 for a body cut
//! short).

use std::time::Duration;

use tether_tests::raw_http::get;
use tether_tests::{Nginx, RawConn, Tether};

/// What the origin may have seen of a vector.
#[derive(Clone, Copy, Debug)]
enum Origin {
    /// Nothing at all.
    Nothing,
    /// At most an incomplete request: no file stored for this PUT target,
    /// no 2xx line for it.
    NoCompleteRequest(&'static str),
}

struct Vector {
    name: &'static str,
    bytes: Vec<u8>,
    status: u16,
    origin: Origin,
}

fn v(name: &'static str, bytes: &[u8], status: u16) -> Vector {
    Vector {
        name,
        bytes: bytes.to_vec(),
        status,
        origin: Origin::Nothing,
    }
}

/// A chunked PUT to `target` whose body is `body`: refused mid-body.
fn chunked(name: &'static str, target: &'static str, body: &[u8]) -> Vector {
    let mut bytes =
        format!("PUT {target} HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    bytes.extend_from_slice(body);
    Vector {
        name,
        bytes,
        status: 400,
        origin: Origin::NoCompleteRequest(target),
    }
}

fn vectors() -> Vec<Vector> {
    let big_header = format!(
        "GET /echo HTTP/1.1\r\nHost: a.test\r\nX-Big: {}\r\n\r\n",
        "x".repeat(70 * 1024)
    );
    let mut many = String::from("GET /echo HTTP/1.1\r\nHost: a.test\r\n");
    for i in 0..2000 {
        many.push_str(&format!("X-Header-{i:05}: {}\r\n", "y".repeat(24)));
    }
    many.push_str("\r\n");
    vec![
        // Framing: Content-Length and Transfer-Encoding.
        v("cl_and_te", b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
        v("te_and_cl", b"POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
        v("cl_differing_duplicates", b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
        v("cl_differing_list", b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1, 2\r\n\r\nab", 400),
        v("cl_not_a_number", b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5a\r\n\r\nhello", 400),
        v("cl_negative", b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: -5\r\n\r\nhello", 400),
        v("cl_plus_sign", b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: +5\r\n\r\nhello", 400),
        v("cl_empty", b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: \r\n\r\n", 400),
        v("te_chunked_not_last", b"POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
        v("te_identity", b"POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: identity\r\n\r\n", 400),
        v("te_xchunked", b"POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400),
        v("te_gzip_only", b"POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        v("te_chunked_twice", b"POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        v("te_space_before_colon", b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\nhello", 400),
        // Header syntax.
        v("obs_fold", b"GET /echo HTTP/1.1\r\nHost: a.test\r\nX-A: a\r\n  folded\r\n\r\n", 400),
        v("space_before_colon", b"GET /echo HTTP/1.1\r\nHost: a.test\r\nX-A : b\r\n\r\n", 400),
        v("tab_before_colon", b"GET /echo HTTP/1.1\r\nHost: a.test\r\nX-A\t: b\r\n\r\n", 400),
        v("nul_in_value", b"GET /echo HTTP/1.1\r\nHost: a.test\r\nX-A: a\0b\r\n\r\n", 400),
        v("cr_in_value", b"GET /echo HTTP/1.1\r\nHost: a.test\r\nX-A: a\rb\r\n\r\n", 400),
        v("lf_in_value_leaves_line_without_colon", b"GET /echo HTTP/1.1\r\nHost: a.test\r\nX-A: a\nb\r\n\r\n", 400),
        v("non_token_name", b"GET /echo HTTP/1.1\r\nHost: a.test\r\nX(A): b\r\n\r\n", 400),
        v("space_in_name", b"GET /echo HTTP/1.1\r\nHost: a.test\r\nX A: b\r\n\r\n", 400),
        v("empty_name", b"GET /echo HTTP/1.1\r\nHost: a.test\r\n: b\r\n\r\n", 400),
        v("del_in_name", b"GET /echo HTTP/1.1\r\nHost: a.test\r\nX\x7fA: b\r\n\r\n", 400),
        v("missing_host", b"GET /echo HTTP/1.1\r\n\r\n", 400),
        v("two_hosts", b"GET /echo HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", 400),
        // Request line and target.
        v("absolute_form_foreign_host", b"GET http://evil.test/echo HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
        v("connect", b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n", 400),
        v("garbage_request_line", b"HELLO\r\n\r\n", 400),
        v("request_line_extra_token", b"GET /echo HTTP/1.1 extra\r\nHost: a.test\r\n\r\n", 400),
        v("http2_version_in_request_line", b"GET /echo HTTP/2.0\r\nHost: a.test\r\n\r\n", 400),
        v("space_in_target", b"GET /e cho HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
        v("nul_in_target", b"GET /e\0cho HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
        // Size.
        v("header_too_big", big_header.as_bytes(), 431),
        v("head_too_big_many_headers", many.as_bytes(), 431),
        // Bad chunked bodies: found mid-body.
        chunked("chunk_size_not_hex", "/up/c1", b"zz\r\nhello\r\n0\r\n\r\n"),
        chunked("chunk_size_negative", "/up/c2", b"-5\r\nhello\r\n0\r\n\r\n"),
        chunked("chunk_size_overflow", "/up/c3", b"10000000000000005\r\nhello\r\n0\r\n\r\n"),
        chunked("chunk_size_0x_prefix", "/up/c4", b"0x5\r\nhello\r\n0\r\n\r\n"),
        chunked("chunk_data_without_crlf", "/up/c5", b"5\r\nhelloXX0\r\n\r\n"),
        chunked("bad_second_chunk", "/up/c6", b"5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n"),
    ]
}

fn setup() -> (Nginx, Tether) {
    let nginx = Nginx::standard();
    let tether = Tether::in_front_of(&["a.test"], nginx.addr(), "");
    (nginx, tether)
}

/// Sends a sentinel straight to nginx and returns the log lines that
/// appeared after `baseline`, sentinel excluded.
fn origin_lines_since(nginx: &Nginx, baseline: usize, sentinel: &str) -> Vec<String> {
    assert_eq!(get(nginx.addr(), "a.test", sentinel).status, 404);
    let log = nginx.access_log();
    log.wait_for_uri(sentinel, Duration::from_secs(10));
    log.lines()
        .into_iter()
        .skip(baseline)
        .filter(|l| !l.contains(sentinel))
        .collect()
}

fn check(nginx: &Nginx, tether: &Tether, i: usize, vector: &Vector) -> Result<(), String> {
    let baseline = nginx.access_log().count();
    let mut c = RawConn::connect(tether.addr());
    c.set_read_timeout(Duration::from_secs(10));
    // The gateway may refuse and close before it has read everything.
    let _ = c.try_send(&vector.bytes);
    let mut problems = Vec::new();
    match c.read_response_to("GET") {
        Ok(r) => {
            if r.status != vector.status {
                problems.push(format!("status {} (want {})", r.status, vector.status));
            }
            if !r.has_token("connection", "close") {
                problems.push("no `Connection: close`".into());
            }
            if let Err(e) = c.expect_closed(Duration::from_secs(5)) {
                problems.push(e);
            }
        }
        Err(e) => problems.push(format!("no response: {e}")),
    }
    let seen = origin_lines_since(nginx, baseline, &format!("/__sentinel/{i}"));
    match vector.origin {
        Origin::Nothing => {
            if !seen.is_empty() {
                problems.push(format!("origin saw: {seen:?}"));
            }
        }
        Origin::NoCompleteRequest(target) => {
            if nginx.stored(target).exists() {
                problems.push(format!("origin stored a complete body for {target}"));
            }
            for line in &seen {
                let status = line.split('\t').nth(3).unwrap_or("");
                if line.contains(target) && status.starts_with('2') {
                    problems.push(format!("origin completed the request: {line}"));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[test]
fn malformed_requests_are_refused_and_never_forwarded() {
    let (nginx, tether) = setup();
    let vectors = vectors();
    assert!(vectors.len() >= 25);
    let mut failures = Vec::new();
    for (i, vector) in vectors.iter().enumerate() {
        let result = check(&nginx, &tether, i, vector);
        println!(
            "{:<40} {:>3}  {}",
            vector.name,
            vector.status,
            match &result {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("FAIL: {e}"),
            }
        );
        if let Err(e) = result {
            failures.push(format!("{}: {e}", vector.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}

#[test]
fn identical_duplicate_content_lengths_are_accepted_and_forwarded() {
    let (nginx, tether) = setup();
    let mut c = RawConn::connect(tether.addr());
    c.send(b"PUT /up/dup1 HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello");
    let r = c.read_final_response_to("PUT").expect("response");
    assert!(r.status == 201 || r.status == 204, "{}", r.head_text());
    assert_eq!(std::fs::read(nginx.stored("/up/dup1")).unwrap(), b"hello");
}

#[test]
fn identical_content_length_list_is_accepted_and_forwarded() {
    let (nginx, tether) = setup();
    let mut c = RawConn::connect(tether.addr());
    c.send(b"PUT /up/dup2 HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5, 5\r\n\r\nworld");
    let r = c.read_final_response_to("PUT").expect("response");
    assert!(r.status == 201 || r.status == 204, "{}", r.head_text());
    assert_eq!(std::fs::read(nginx.stored("/up/dup2")).unwrap(), b"world");
}

#[test]
fn valid_edge_cases_are_accepted() {
    let (nginx, tether) = setup();
    let mut c = RawConn::connect(tether.addr());
    // A chunk extension is legal and ignored.
    c.send(b"PUT /up/ext HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n");
    let r = c.read_final_response_to("PUT").expect("response");
    assert!(r.status == 201 || r.status == 204, "{}", r.head_text());
    assert_eq!(std::fs::read(nginx.stored("/up/ext")).unwrap(), b"hello");
    // An absolute-form target for the vhost's own host is proxied.
    c.send(b"GET http://a.test/echo HTTP/1.1\r\nHost: a.test\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.head_text());
    assert!(r.body_text().contains("host=[a.test]"), "{}", r.body_text());
    // Optional whitespace around a field value is not part of it.
    c.send(b"GET /echo HTTP/1.1\r\nHost: a.test\r\nX-Bar: \t spaced \t\r\n\r\n");
    let r = c.read_response();
    assert!(
        r.body_text().contains("x-bar=[spaced]"),
        "{}",
        r.body_text()
    );
}
