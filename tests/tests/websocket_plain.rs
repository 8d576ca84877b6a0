//! An ordinary WebSocket (not a persistent session) proxied through tether
//! to a WebSocket echo origin (SPEC 5: upgrades relayed).

use tether_tests::payload::{assert_same_bytes, pattern};
use tether_tests::websocket::{OP_BINARY, OP_PING, OP_PONG, OP_TEXT};
use tether_tests::{Tether, WsClient, WsEcho};

fn echo_and_tether() -> (WsEcho, Tether) {
    let echo = WsEcho::start();
    let tether = Tether::in_front_of(&["a.test"], echo.addr(), "");
    (echo, tether)
}

#[test]
fn websocket_echo_through_tether() {
    let (_echo, tether) = echo_and_tether();
    let (mut ws, resp) =
        WsClient::connect(tether.addr(), "a.test", "/echo", &[]).unwrap_or_else(|r| {
            panic!("no 101:\n{}{}", r.head_text(), r.body_text());
        });
    assert!(
        resp.has_token("connection", "upgrade"),
        "{}",
        resp.head_text()
    );
    assert!(
        resp.header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket")),
        "{}",
        resp.head_text()
    );
    for text in ["hello", "", "line with spaces", "ünïcødé"] {
        ws.send_text(text);
        let m = ws.read_message().expect("echo");
        assert_eq!(m.opcode, OP_TEXT);
        assert_eq!(m.payload, text.as_bytes());
    }
    for size in [1, 125, 126, 65_535, 65_536, 1 << 20] {
        let data = pattern(size as u64, size);
        ws.send_binary(&data);
        let m = ws.read_message().expect("echo");
        assert_eq!(m.opcode, OP_BINARY);
        assert_eq!(m.payload.len(), size);
        assert_same_bytes(
            &m.payload,
            &data,
            &format!("binary message of {size} bytes"),
        );
    }
    ws.send_frame(true, OP_PING, b"are you there").unwrap();
    let pong = ws.read_frame().expect("pong");
    assert_eq!(pong.opcode, OP_PONG);
    assert_eq!(pong.payload, b"are you there");
    let close = ws.close(1000).expect("close frame back");
    assert_eq!(close.close_code(), Some(1000));
    ws.conn()
        .expect_closed(std::time::Duration::from_secs(10))
        .expect("TCP closed after the close handshake");
}

#[test]
fn websocket_upgrade_reaches_origin_with_forwarding_headers() {
    let (_echo, tether) = echo_and_tether();
    let (mut ws, _) = WsClient::connect(tether.addr(), "a.test", "/headers?x=1", &[])
        .unwrap_or_else(|r| panic!("no 101:\n{}", r.head_text()));
    let m = ws.read_message().expect("headers message");
    let text = String::from_utf8_lossy(&m.payload).to_string();
    assert!(text.contains("path: /headers?x=1\n"), "{text}");
    assert!(text.contains("host: a.test\n"), "{text}");
    assert!(text.contains("upgrade: websocket\n"), "{text}");
    assert!(text.contains("x-forwarded-for: 127.0.0.1\n"), "{text}");
    assert!(text.contains("x-forwarded-proto: http\n"), "{text}");
    assert!(text.contains("via: 1.1 tether\n"), "{text}");
    ws.send_text("still echoing");
    assert_eq!(ws.read_message().unwrap().payload, b"still echoing");
}

#[test]
fn many_messages_in_flight_keep_their_order() {
    let (_echo, tether) = echo_and_tether();
    let (mut ws, _) = WsClient::connect(tether.addr(), "a.test", "/echo", &[])
        .unwrap_or_else(|r| panic!("no 101:\n{}", r.head_text()));
    for i in 0..500 {
        ws.send_text(&format!("message {i}"));
    }
    for i in 0..500 {
        let m = ws.read_message().expect("echo");
        assert_eq!(String::from_utf8_lossy(&m.payload), format!("message {i}"));
    }
}
