use super::*;

#[test]
fn explore() {
    let text = r#"listn = 1
[server]
listn = ["127.0.0.1:8080"]
idle_timeout = "10x"
tls_listen = ["127.0.0.1:8443"]
admin_listen = "127.0.0.1:8443"
max_header_bytes = "64KB"

[[vhost]]
hosts = ["A.test", "*"]
origin = "https://x"
[vhost.tls]
cert = "nope.pem"
key = 5
crt = 1
[vhost.persistent]
paths = ["chat", "/[a"]
accept = ["*/*"]
mode = "streams"
max_sessions = 0
[vhost.tsl]
x = 1

[[vhost]]
hosts = ["a.TEST", "*"]
[[vhost]]
origin = "http://x"
[servr]
"#;
    match parse("t.toml", text) {
        Ok(c) => panic!("{c:?}"),
        Err(e) => panic!("\n{e}"),
    }
}
