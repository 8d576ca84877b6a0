//! In-process checks of the plain path against a tiny origin. The real
//! proofs (nginx, Apache) live in the workspace `tests/` crate.

use std::net::SocketAddr;
use std::time::Duration;

use tether_proxy::config::{Config, OriginUrl, ServerConfig, VhostConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An origin that answers every request with its own head and body echoed.
async fn echo_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let n = match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    // Answer once a head (and any Content-Length body or
                    // chunked terminator) is in.
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let lower = head.to_ascii_lowercase();
                    let body_start = end + 4;
                    let complete = if let Some(i) = lower.find("content-length: ") {
                        let n: usize = lower[i + 16..]
                            .split("\r\n")
                            .next()
                            .unwrap()
                            .trim()
                            .parse()
                            .unwrap();
                        buf.len() >= body_start + n
                    } else if lower.contains("transfer-encoding: chunked") {
                        buf.ends_with(b"0\r\n\r\n")
                    } else {
                        true
                    };
                    if !complete {
                        continue;
                    }
                    let body = format!(
                        "{head}\n--\n{}",
                        String::from_utf8_lossy(&buf[body_start..])
                    );
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Origin: yes\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    buf.clear();
                }
            });
        }
    });
    addr
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn start(origin: SocketAddr) -> SocketAddr {
    let listen = free_addr();
    let server = ServerConfig {
        listen: vec![listen],
        admin_listen: free_addr(),
        header_read_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let config = Config {
        server,
        vhosts: vec![VhostConfig {
            hosts: vec!["a.test".into()],
            origin: OriginUrl {
                as_written: format!("http://{origin}"),
                authority: origin.to_string(),
                host: origin.ip().to_string(),
                port: origin.port(),
            },
            tls: None,
            persistent: None,
        }],
        cluster: None,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    // The sender lives as long as the test runtime: the gateway never stops.
    std::mem::forget(tx);
    tokio::spawn(tether_proxy::run(config, rx));
    for _ in 0..200 {
        if TcpStream::connect(listen).await.is_ok() {
            return listen;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gateway did not start");
}

async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test]
async fn forwards_with_forwarding_headers_and_keeps_alive() {
    let gw = start(echo_origin().await).await;
    let out = exchange(
        gw,
        b"GET /x?y=1 HTTP/1.1\r\nHost: a.test\r\nConnection: X-Hop\r\nX-Hop: 1\r\nSessionID: forged\r\n\r\nGET /second HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert!(out.contains("GET /x?y=1 HTTP/1.1"), "{out}");
    assert!(out.contains("x-forwarded-for: 127.0.0.1"), "{out}");
    assert!(out.contains("via: 1.1 tether"), "{out}");
    assert!(!out.to_ascii_lowercase().contains("x-hop"), "{out}");
    assert!(!out.to_ascii_lowercase().contains("sessionid"), "{out}");
    assert!(out.contains("GET /second"), "{out}");
}

#[tokio::test]
async fn chunked_body_is_forwarded() {
    let gw = start(echo_origin().await).await;
    let out = exchange(
        gw,
        b"POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.contains("hello"), "{out}");
    assert!(out.contains(" world"), "{out}");
}

#[tokio::test]
async fn refusals() {
    let gw = start(echo_origin().await).await;
    for (raw, status) in [
        (&b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n"[..], "421"),
        (b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "400"),
        (b"GET http://evil.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n", "400"),
        (b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost: a.test\r\n", "408"),
    ] {
        let out = exchange(gw, raw).await;
        assert!(out.starts_with(&format!("HTTP/1.1 {status}")), "{:?} -> {out}", String::from_utf8_lossy(raw));
    }
}

#[tokio::test]
async fn expect_continue() {
    let gw = start(echo_origin().await).await;
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(
        b"PUT /u HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    )
    .await
    .unwrap();
    let mut first = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"data").await.unwrap();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut out))
        .await
        .unwrap()
        .unwrap();
    let out = String::from_utf8_lossy(&out[..n]);
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.contains("--\ndata"), "{out}");
}
