//! A minimal WebSocket (RFC 6455) origin and idle clients, written by hand
//! so the bench controls every byte: the origin answers the handshake and
//! echoes frames; the clients open connections through a proxy, check the
//! `Sec-WebSocket-Accept`, and then stay idle.
//!
//! The origin runs on a small tokio runtime of its own; each connection
//! holds no buffer once the handshake is done (the frame loop reads into a
//! stack array), so the origin adds little to the bench process.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub(crate) fn accept_for(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    B64.encode(sha.digest().bytes())
}

/// Starts the echo origin on a free 127.0.0.1 port, on `runtime`.
pub(crate) fn start_origin(runtime: &tokio::runtime::Runtime) -> std::io::Result<u16> {
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = serve(stream).await;
            });
        }
    });
    Ok(port)
}

/// One origin connection: the handshake, then echo until close or EOF.
async fn serve(mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    let key = {
        let mut head = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 || head.len() > 16 * 1024 {
                return Ok(());
            }
            head.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&head);
        let Some(key) = header(&text, "sec-websocket-key") else {
            stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Ok(());
        };
        key.to_owned()
    };
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_for(&key)
    );
    stream.write_all(answer.as_bytes()).await?;
    loop {
        // Frame head: FIN/opcode, MASK/length, extended length, mask key.
        let mut h = [0u8; 2];
        if stream.read_exact(&mut h).await.is_err() {
            return Ok(());
        }
        let opcode = h[0] & 0x0f;
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            len = u64::from(stream.read_u16().await?);
        } else if len == 127 {
            len = stream.read_u64().await?;
        }
        if len > 125 {
            return Ok(()); // the bench only sends small frames
        }
        let mut mask = [0u8; 4];
        if h[1] & 0x80 != 0 {
            stream.read_exact(&mut mask).await?;
        }
        let mut payload = [0u8; 125];
        let payload = &mut payload[..len as usize];
        stream.read_exact(payload).await?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        let mut frame = vec![0x80 | opcode, len as u8];
        frame.extend_from_slice(payload);
        stream.write_all(&frame).await?;
        if opcode == 0x8 {
            return Ok(());
        }
    }
}

/// The value of header `name` (lowercase) in a request or response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Opens one WebSocket connection through `port` and completes the
/// handshake; the connection is then idle until dropped.
pub(crate) fn connect(port: u16, n: u32) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let key = B64.encode((u128::from(n) | 0x5eed << 64).to_be_bytes());
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    // Read the answer head byte by byte: nothing may follow it, and the
    // bench must not swallow a frame that does.
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => return Err("the proxy closed during the handshake".into()),
            Err(e) => return Err(format!("handshake: {e}")),
        }
        if head.len() > 16 * 1024 {
            return Err("handshake answer head too long".into());
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.split_whitespace().nth(1).unwrap_or("");
    if status != "101" {
        let first = text.lines().next().unwrap_or("");
        return Err(format!("handshake answered {first:?}"));
    }
    if header(&text, "sec-websocket-accept") != Some(accept_for(&key).as_str()) {
        return Err("wrong or missing Sec-WebSocket-Accept".into());
    }
    Ok(s)
}

/// Sends one masked text frame on `s` and checks that the echo comes back.
pub(crate) fn echo(s: &mut TcpStream, text: &str) -> Result<(), String> {
    let payload = text.as_bytes();
    assert!(payload.len() <= 125, "small frames only");
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame)
        .map_err(|e| format!("echo write: {e}"))?;
    let mut back = vec![0u8; 2 + payload.len()];
    s.read_exact(&mut back)
        .map_err(|e| format!("echo read: {e}"))?;
    if back[0] != 0x81 || back[2..] != *payload {
        return Err("the echo came back wrong".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_matches_rfc_6455_example() {
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn origin_handshakes_and_echoes() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let port = start_origin(&rt).unwrap();
        let mut s = connect(port, 7).unwrap();
        echo(&mut s, "hello").unwrap();
    }
}
