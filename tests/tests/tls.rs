//! TLS listeners (SPEC 1, SPEC 5): certificates by SNI, ALPN for HTTP/2,
//! the handshake inside `header_read_timeout`, and closing without a
//! handshake over the connection limit. curl is the TLS client.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tether_tests::session::LineWorker;
use tether_tests::{assert_between, free_port, Tether};

fn testdata(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/tether-proxy/testdata")
        .join(name)
        .display()
        .to_string()
}

fn worker() -> LineWorker {
    LineWorker::start(env!("CARGO_BIN_EXE_line_worker"), "origin")
}

/// Two TLS vhosts with their own certificates, on one `tls_listen`.
fn start(origin: SocketAddr, server_extra: &str) -> (Tether, SocketAddr) {
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = Tether::config(
        &format!("tls_listen = [\"{tls}\"]\n{server_extra}"),
        &[
            format!(
                "[[vhost]]\nhosts = [\"a.test\"]\norigin = \"http://{origin}\"\n[vhost.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                testdata("cert.pem"),
                testdata("key.pem")
            ),
            format!(
                "[[vhost]]\nhosts = [\"other.test\"]\norigin = \"http://{origin}\"\n[vhost.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                testdata("other-cert.pem"),
                testdata("other-key.pem")
            ),
        ],
    );
    (Tether::start(&config), tls)
}

/// curl over TLS to `host` resolved to `tls`, trusting `ca`; returns
/// (exit ok, stdout, stderr).
fn curl(tls: SocketAddr, host: &str, ca: &str, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "10", "--cacert", ca])
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", tls.port()))
        .args(extra)
        .arg(format!("https://{host}:{}/plain.pphp", tls.port()))
        .output()
        .expect("run curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn certificates_by_sni_and_alpn_for_http2_and_http11() {
    let origin = worker();
    let (_tether, tls) = start(origin.addr(), "");
    for (host, ca) in [("a.test", "cert.pem"), ("other.test", "other-cert.pem")] {
        let (ok, body, log) = curl(tls, host, &testdata(ca), &["--http2"]);
        assert!(ok, "{host}: curl failed:\n{log}");
        assert!(log.contains("HTTP/2 200"), "{host}: h2 by ALPN:\n{log}");
        assert!(body.starts_with("plain origin"), "{body}");
        let lower = body.to_ascii_lowercase();
        assert!(lower.contains("x-forwarded-proto: https"), "{body}");
        assert!(
            lower.contains(&format!("x-forwarded-host: {host}")),
            "{body}"
        );
        let (ok, _, log) = curl(tls, host, &testdata(ca), &["--http1.1"]);
        assert!(
            ok && log.contains("HTTP/1.1 200"),
            "{host}: http/1.1:\n{log}"
        );
    }
    // The wrong certificate for the name is refused by the client: SNI
    // really chose per vhost.
    let (ok, _, log) = curl(tls, "other.test", &testdata("cert.pem"), &[]);
    assert!(
        !ok,
        "other.test must not be served a.test's certificate:\n{log}"
    );
}

#[test]
fn silent_client_is_closed_without_an_answer_after_header_read_timeout() {
    let origin = worker();
    let (_tether, tls) = start(origin.addr(), "header_read_timeout = \"1s\"");
    // From before the connect: tether's timer starts at its accept, later.
    let started = Instant::now();
    let mut s = TcpStream::connect(tls).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let timeout = Duration::from_secs(1);
    assert_between(
        "a silent TLS client closed at header_read_timeout (1 s)",
        started.elapsed(),
        timeout,
        timeout,
    );
    assert!(buf.is_empty(), "no 408 during a handshake: {buf:?}");
}

#[test]
fn over_the_connection_limit_tls_closes_without_a_handshake() {
    let origin = worker();
    let (tether, tls) = start(
        origin.addr(),
        "max_connections_per_ip = 1\nheader_read_timeout = \"30s\"",
    );
    // A silent connection holds the one place of 127.0.0.1 (its handshake
    // may take up to header_read_timeout).
    let _held = TcpStream::connect(tls).expect("first connection");
    let admin = tether.admin_addr().expect("admin listener");
    tether_tests::wait_for(
        "the held connection is counted",
        Duration::from_secs(10),
        || {
            let metrics = tether_tests::raw_http::get(admin, "admin", "/metrics");
            metrics
                .body_text()
                .lines()
                .any(|l| {
                    l.starts_with("tether_connections_active{")
                        && l.contains(&tls.to_string())
                        && l.ends_with(" 1")
                })
                .then_some(())
        },
    );
    let (ok, _, log) = curl(tls, "a.test", &testdata("cert.pem"), &[]);
    assert!(!ok, "a second connection must not get a handshake:\n{log}");
    let metrics = tether_tests::raw_http::get(admin, "admin", "/metrics").body_text();
    assert!(
        metrics.contains("tether_limits_hit_total{kind=\"connections_per_ip\"} 1"),
        "{metrics}"
    );
}

/// A key that parses but belongs to another certificate would make every
/// handshake fail: `tether check` refuses it (exit 1) and `tether run`
/// does not start (exit 64), naming the key's line.
#[test]
fn a_key_of_another_certificate_is_refused_by_check_and_run() {
    let dir = tether_tests::temp_dir();
    let file = dir.path().join("mismatch.toml");
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:{}\"]\ntls_listen = [\"127.0.0.1:{}\"]\nadmin_listen = \"127.0.0.1:{}\"\n\
         [[vhost]]\nhosts = [\"a.test\"]\norigin = \"http://127.0.0.1:9\"\n[vhost.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        free_port(),
        free_port(),
        free_port(),
        testdata("cert.pem"),
        testdata("other-key.pem"),
    );
    std::fs::write(&file, text).unwrap();
    for (command, status) in [("check", 1), ("run", 64)] {
        let out = Command::new(tether_tests::tether::tether_bin())
            .args([command, "-c"])
            .arg(&file)
            .output()
            .expect("run tether");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{command}: {stderr}");
        assert!(
            stderr.contains("mismatch.toml:10:7: the private key")
                && stderr.contains("does not belong to the certificate"),
            "{command}: {stderr}"
        );
    }
}

#[test]
fn redirect_http_sends_plain_requests_to_https_and_serves_tls_ones() {
    let origin = worker();
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let vhost = |host: &str, redirect: bool| {
        format!(
            "[[vhost]]\nhosts = [\"{host}\"]\norigin = \"http://{}\"\n[vhost.tls]\ncert = \"{}\"\nkey = \"{}\"\nredirect_http = {redirect}\n",
            origin.addr(),
            testdata("cert.pem"),
            testdata("key.pem")
        )
    };
    let tether = Tether::start(&Tether::config(
        &format!("tls_listen = [\"{tls}\"]"),
        &[vhost("a.test", true), vhost("b.test", false)],
    ));
    let plain = tether.addr();
    for (host, target) in [
        (format!("a.test:{}", plain.port()), "/plain.pphp?x=1&y=%20"),
        ("A.TEST".to_owned(), "/"),
    ] {
        let r = tether_tests::raw_http::get(plain, &host, target);
        assert_eq!(r.status, 308, "{}", r.head_text());
        let host_only = host.split(':').next().unwrap();
        assert_eq!(
            r.header("location"),
            Some(format!("https://{host_only}{target}").as_str()),
            "{}",
            r.head_text()
        );
    }
    // HEAD too, and nothing reached the origin.
    let mut conn = tether_tests::RawConn::connect(plain);
    let r = conn.request("HEAD", "/x", "a.test", &[], b"");
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://a.test/x"));
    // A vhost without redirect_http is served over plain HTTP.
    let r = tether_tests::raw_http::get(plain, "b.test", "/plain.pphp");
    assert_eq!(r.status, 200, "{}", r.head_text());
    // Over TLS, the redirecting vhost serves the request.
    let (ok, body, log) = curl(tls, "a.test", &testdata("cert.pem"), &["--http1.1"]);
    assert!(ok, "curl failed:\n{log}");
    assert!(log.contains("HTTP/1.1 200"), "{log}");
    assert!(body.starts_with("plain origin"), "{body}");
    let served: Vec<String> = origin
        .events()
        .into_iter()
        .filter(|e| e.starts_with("req "))
        .collect();
    assert_eq!(
        served.len(),
        2,
        "only b.test and the TLS request: {served:?}"
    );
}

#[test]
fn h2load_over_tls_has_no_failed_request() {
    let origin = worker();
    let (_tether, tls) = start(origin.addr(), "");
    let out = Command::new("h2load")
        .args(["-n", "400", "-c", "4", "-m", "10", "-t", "1"])
        .arg(format!("--connect-to=127.0.0.1:{}", tls.port()))
        .arg("https://a.test/plain.pphp")
        .output()
        .expect("h2load (nghttp2-client; make deps installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "h2load: {}",
        text.lines()
            .filter(|l| l.starts_with("requests:") || l.starts_with("finished in"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    assert!(text.contains("Application protocol: h2"), "{text}");
    assert!(
        text.contains("requests: 400 total, 400 started, 400 done, 400 succeeded, 0 failed, 0 errored, 0 timeout"),
        "{text}"
    );
    assert!(text.contains("status codes: 400 2xx"), "{text}");
}
