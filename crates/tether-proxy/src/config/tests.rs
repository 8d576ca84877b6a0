//! The loader against broken and complete files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::glob::PathGlob;
use super::*;

/// A minimal valid vhost, three lines long.
const VH: &str = "[[vhost]]\nhosts = [\"a.test\"]\norigin = \"http://127.0.0.1:8081\"\n";
/// A TLS listener for rows that need one (two lines).
const TLS_SERVER: &str = "[server]\ntls_listen = [\"127.0.0.1:8443\"]\n";
/// A valid `[vhost.tls]` (three lines) using the files of `cert_dir`.
const TEST_CERT: &str = include_str!("../../testdata/cert.pem");
const TEST_KEY: &str = include_str!("../../testdata/key.pem");
const TLS_TABLE: &str = "[vhost.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n";

/// A fresh directory holding readable `cert.pem` and `key.pem`.
fn cert_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tether-config-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), TEST_CERT).unwrap();
    std::fs::write(dir.join("key.pem"), TEST_KEY).unwrap();
    dir
}

fn parse_in_dir(dir: &Path, text: &str) -> Result<Config, ConfigErrors> {
    parse(dir.join("t.toml").to_str().unwrap(), text)
}

fn cat(parts: &[&str]) -> String {
    parts.concat()
}

#[test]
fn broken_files_report_one_error_each() {
    let dir = cert_dir();
    let server = |body: &str| cat(&["[server]\n", body, "\n", VH]);
    let persistent = |body: &str| cat(&[VH, "[vhost.persistent]\n", body, "\n"]);
    let rows: Vec<(&str, String, &str, &str)> = vec![
        (
            "unknown key at top level",
            cat(&["listen = [\"127.0.0.1:8080\"]\n", VH]),
            "1:1",
            "unknown key \"listen\" at the top level of the file (it belongs in [server])",
        ),
        (
            "unknown key in [server]",
            server("listn = [\"127.0.0.1:8080\"]"),
            "2:1",
            "unknown key \"listn\" in [server] (did you mean \"listen\"?); expected one of: listen, tls_listen,",
        ),
        (
            "unknown key in [[vhost]]",
            cat(&[VH, "orgin = \"http://x\"\n"]),
            "4:1",
            "unknown key \"orgin\" in [[vhost]]",
        ),
        (
            "unknown key in [vhost.tls]",
            cat(&[TLS_SERVER, VH, TLS_TABLE, "chain = \"c.pem\"\n"]),
            "9:1",
            "unknown key \"chain\" in [vhost.tls]; expected one of: cert, key",
        ),
        (
            "unknown key in [vhost.persistent]",
            persistent("path = [\"*.x\"]"),
            "5:1",
            "unknown key \"path\" in [vhost.persistent] (did you mean \"paths\"?)",
        ),
        (
            "unknown table",
            cat(&["[servr]\n", VH]),
            "1:2",
            "unknown table \"servr\" at the top level of the file (did you mean \"server\"?)",
        ),
        (
            "unknown table in a vhost",
            cat(&[VH, "[vhost.tsl]\ncert = \"x\"\n"]),
            "4:8",
            "unknown table \"tsl\" in [[vhost]]",
        ),
        (
            "wrong type: count given as string",
            server("max_connections = \"many\""),
            "2:19",
            "max_connections must be a whole number like 20000, not a string",
        ),
        (
            "wrong type: listen as a string",
            server("listen = \"127.0.0.1:8080\""),
            "2:10",
            "listen must be an array of addresses like [\"127.0.0.1:8080\"], not a string (put it in brackets",
        ),
        (
            "wrong type: server is not a table",
            cat(&["server = 1\n", VH]),
            "1:10",
            "server must be a table, written [server] on its own line, not an integer",
        ),
        (
            "bad duration",
            server("idle_timeout = \"10x\""),
            "2:16",
            "idle_timeout: \"10x\" is not a duration; write it like \"30s\", \"2m\" or \"500ms\"",
        ),
        (
            "plain integer is not a duration",
            server("idle_timeout = 30"),
            "2:16",
            "30 is a plain number, not a duration; write it with a unit, like \"30s\"",
        ),
        (
            "zero timeout",
            server("header_read_timeout = \"0s\""),
            "2:23",
            "header_read_timeout must be longer than zero",
        ),
        (
            "bad size: decimal unit",
            server("max_header_bytes = \"64KB\""),
            "2:20",
            "\"64KB\" uses a decimal unit; sizes use binary units: write \"64KiB\"",
        ),
        (
            "bad size: not a size",
            persistent("replay_window = \"big\""),
            "5:17",
            "replay_window: \"big\" is not a size",
        ),
        (
            "negative size",
            persistent("max_initial_body = -1"),
            "5:20",
            "max_initial_body: -1 is negative",
        ),
        (
            "max_line below 2",
            persistent("max_line = 1"),
            "5:12",
            "max_line must be at least 2 bytes, not 1",
        ),
        (
            "missing hosts",
            "[[vhost]]\norigin = \"http://127.0.0.1:8081\"\n".to_string(),
            "1:1",
            "this [[vhost]] has no hosts",
        ),
        (
            "missing origin",
            "[[vhost]]\nhosts = [\"a.test\"]\n".to_string(),
            "1:1",
            "this [[vhost]] has no origin",
        ),
        (
            "empty hosts",
            "[[vhost]]\nhosts = []\norigin = \"http://127.0.0.1:8081\"\n".to_string(),
            "2:9",
            "hosts is empty",
        ),
        (
            "host with a port",
            "[[vhost]]\nhosts = [\"a.test:80\"]\norigin = \"http://o\"\n".to_string(),
            "2:10",
            "write host names without a port",
        ),
        (
            "https origin",
            "[[vhost]]\nhosts = [\"a.test\"]\norigin = \"https://127.0.0.1:8443\"\n".to_string(),
            "3:10",
            "plain HTTP only",
        ),
        (
            "origin with a path",
            "[[vhost]]\nhosts = [\"a.test\"]\norigin = \"http://o.test/app\"\n".to_string(),
            "3:10",
            "an upstream URL has no path",
        ),
        (
            "duplicate host across vhosts",
            cat(&[
                VH,
                "[[vhost]]\nhosts = [\"b.test\", \"A.Test\"]\norigin = \"http://o\"\n",
            ]),
            "5:20",
            "host \"a.test\" is already used by another vhost (line 2)",
        ),
        (
            "duplicate host within a vhost",
            "[[vhost]]\nhosts = [\"a.test\", \"a.test\"]\norigin = \"http://o\"\n".to_string(),
            "2:20",
            "host \"a.test\" is listed twice in this vhost",
        ),
        (
            "duplicate *",
            "[[vhost]]\nhosts = [\"*\"]\norigin = \"http://o\"\n[[vhost]]\nhosts = [\"*\"]\norigin = \"http://p\"\n"
                .to_string(),
            "5:10",
            "\"*\" (the default vhost) is already used by another vhost (line 2)",
        ),
        (
            "clashing listeners across keys",
            server("listen = [\"127.0.0.1:8080\"]\nadmin_listen = \"127.0.0.1:8080\""),
            "3:16",
            "admin_listen: the address 127.0.0.1:8080 is already used by listen (line 2)",
        ),
        (
            "clashing listeners in one key",
            server("listen = [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]"),
            "2:29",
            "listen: the address 127.0.0.1:8080 is already used by listen (line 2)",
        ),
        (
            "listener clashing with a default",
            server("listen = [\"127.0.0.1:9900\"]"),
            "2:11",
            "is already used by the default admin_listen (127.0.0.1:9900)",
        ),
        (
            "unspecified address overlaps",
            server("listen = [\"0.0.0.0:8080\", \"127.0.0.1:8080\"]"),
            "2:27",
            "127.0.0.1:8080 clashes with listen (line 2)",
        ),
        (
            "bad socket address",
            server("listen = [\"localhost:8080\"]"),
            "2:11",
            "\"localhost:8080\" is not a socket address",
        ),
        (
            "no listener at all",
            server("listen = []"),
            "2:10",
            "listen and tls_listen are both empty",
        ),
        (
            "unreadable certificate",
            cat(&[
                TLS_SERVER,
                VH,
                "[vhost.tls]\ncert = \"missing.pem\"\nkey = \"key.pem\"\n",
            ]),
            "7:8",
            "cannot read the certificate file \"missing.pem\"",
        ),
        (
            "certificate is a directory",
            cat(&[TLS_SERVER, VH, "[vhost.tls]\ncert = \".\"\nkey = \"key.pem\"\n"]),
            "7:8",
            "it is a directory",
        ),
        (
            "tls without key",
            cat(&[TLS_SERVER, VH, "[vhost.tls]\ncert = \"cert.pem\"\n"]),
            "6:1",
            "[vhost.tls] has no key",
        ),
        (
            "bad mode",
            persistent("mode = \"streams\""),
            "5:8",
            "mode: \"streams\" is not a mode; write \"stream\" or \"message\"",
        ),
        (
            "wildcard accept",
            persistent("accept = [\"application/*\"]"),
            "5:11",
            "wildcards never match",
        ),
        (
            "bad glob: no leading slash",
            persistent("paths = [\"*.pphp\", \"chat.pphp\"]"),
            "5:20",
            "paths: \"chat.pphp\" is not a valid glob: a path glob must start with \"/\" or \"*\"",
        ),
        (
            "bad glob: unbalanced class",
            persistent("paths = [\"/[ab\"]"),
            "5:10",
            "is never closed",
        ),
        (
            "empty paths",
            persistent("paths = []"),
            "5:9",
            "paths is empty",
        ),
        (
            "bad worker URL",
            persistent("workers = [\"http://127.0.0.1:9001\", \"127.0.0.1:9002\"]"),
            "5:37",
            "workers: \"127.0.0.1:9002\" is not a URL; write it with http:// in front",
        ),
        (
            "https worker",
            persistent("workers = [\"https://w.test\"]"),
            "5:12",
            "plain HTTP only",
        ),
        (
            "zero max_sessions",
            persistent("max_sessions = 0"),
            "5:16",
            "max_sessions must be at least 1, not 0",
        ),
        (
            "max_lines_per_second too large",
            persistent("max_lines_per_second = 5000000000"),
            "5:24",
            "max_lines_per_second must be at most 4294967295",
        ),
        (
            "allowed origin with trailing slash",
            persistent("allowed_origins = [\"https://app.test/\"]"),
            "5:20",
            "an origin has no path and no trailing slash",
        ),
        (
            "redirect_http is not a boolean",
            cat(&[TLS_SERVER, VH, TLS_TABLE, "redirect_http = \"yes\"\n"]),
            "9:17",
            "redirect_http must be true or false, not a string",
        ),
        (
            "redirect_http outside [vhost.tls]",
            cat(&[TLS_SERVER, VH, "redirect_http = true\n"]),
            "6:1",
            "unknown key \"redirect_http\" in [[vhost]] (it belongs in [vhost.tls])",
        ),
        (
            "enabled is not a boolean",
            persistent("enabled = \"yes\""),
            "5:11",
            "enabled must be true or false, not a string",
        ),
        (
            "no vhost",
            "[server]\nlisten = [\"127.0.0.1:8080\"]\n".to_string(),
            "3:1",
            "the file has no [[vhost]]",
        ),
        (
            "single [vhost] table",
            "[vhost]\nhosts = [\"a.test\"]\norigin = \"http://o\"\n".to_string(),
            "1:2",
            "write [[vhost]] with double brackets",
        ),
        (
            "empty admin_token",
            server("admin_token = \"\""),
            "2:15",
            "admin_token is empty",
        ),
        (
            "TOML syntax error: only that one is reported",
            cat(&["listn = 1\n[server]\nidle_timeout = \"10x\n", VH]),
            "3:20",
            "TOML syntax error: invalid basic string",
        ),
        (
            "TOML duplicate key",
            cat(&[VH, "origin = \"http://p\"\n"]),
            "4:1",
            "TOML syntax error: duplicate key",
        ),
    ];
    assert!(rows.len() >= 25);
    let mut failures = Vec::new();
    for (name, text, position, fragment) in &rows {
        let errors = match parse_in_dir(&dir, text) {
            Ok(_) => {
                failures.push(format!("{name}: parsed without error"));
                continue;
            }
            Err(errors) => errors,
        };
        let rendered = errors.to_string();
        if errors.len() != 1 {
            failures.push(format!("{name}: expected one error, got:\n{rendered}"));
            continue;
        }
        let e = &errors.errors[0];
        let got = format!("{}:{}", e.line, e.column);
        if got != *position || !e.message.contains(fragment) {
            failures.push(format!(
                "{name}: expected {position} with {fragment:?}, got {got}: {}",
                e.message
            ));
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn all_errors_are_reported_in_file_order() {
    // Found in the order idle_timeout, listener clash, vhost; printed by line.
    let text = "[server]\n\
                listen = [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]\n\
                idle_timeout = \"soon\"\n\
                [[vhost]]\n\
                hosts = [\"a.test\"]\n";
    let errors = parse("t.toml", text).unwrap_err();
    let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(lines.len(), 3, "{errors}");
    assert!(
        lines[0].starts_with("t.toml:2:29: listen: the address"),
        "{errors}"
    );
    assert!(
        lines[1].starts_with("t.toml:3:16: idle_timeout: \"soon\""),
        "{errors}"
    );
    assert!(
        lines[2].starts_with("t.toml:4:1: this [[vhost]] has no origin"),
        "{errors}"
    );
    assert_eq!(errors.to_string(), lines.join("\n"));
}

#[test]
fn display_is_file_line_column_sentence() {
    let errors = parse(
        "conf/tether.toml",
        "[[vhost]]\nhosts = [\"a\"]\norigin = 5\n",
    )
    .unwrap_err();
    assert_eq!(
        errors.to_string(),
        "conf/tether.toml:3:10: origin must be a URL like \"http://127.0.0.1:8081\", not an integer"
    );
}

#[test]
fn columns_count_characters() {
    let text = "[[vhost]]\nhosts = [\"\u{e9}t\u{e9}\", \"x:1\"]\norigin = \"http://o\"\n";
    let errors = parse("t.toml", text).unwrap_err();
    // `"x:1"` starts at character 17 (byte 19: é takes two bytes).
    let positions: Vec<_> = errors.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(positions, vec![(2, 10), (2, 17)], "{errors}");
}

fn origin(host: &str, port: u16, written: &str, authority: &str) -> OriginUrl {
    OriginUrl {
        as_written: written.to_string(),
        authority: authority.to_string(),
        host: host.to_string(),
        port,
    }
}

#[test]
fn minimal_file_gets_the_spec_defaults() {
    let config = parse("t.toml", VH).unwrap();
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    let s = &config.server;
    assert_eq!(s.listen, vec![addr("127.0.0.1:8080")]);
    assert!(s.tls_listen.is_empty());
    assert_eq!(s.admin_listen, addr("127.0.0.1:9900"));
    assert_eq!(s.admin_token, None);
    assert_eq!(s.header_read_timeout, Duration::from_secs(10));
    assert_eq!(s.idle_timeout, Duration::from_secs(60));
    assert_eq!(s.origin_connect_timeout, Duration::from_secs(5));
    assert_eq!(s.origin_response_timeout, Duration::from_secs(60));
    assert_eq!(s.max_header_bytes, 65536);
    assert_eq!(s.max_connections, 20000);
    assert_eq!(s.max_connections_per_ip, 2000);
    assert_eq!(s.drain_timeout, Duration::from_secs(30));
    assert_eq!(
        config,
        Config {
            server: ServerConfig::default(),
            vhosts: vec![VhostConfig {
                hosts: vec!["a.test".to_string()],
                origin: origin("127.0.0.1", 8081, "http://127.0.0.1:8081", "127.0.0.1:8081"),
                tls: None,
                persistent: None,
            }],
            cluster: None,
        }
    );
}

#[test]
fn empty_persistent_table_gets_the_spec_defaults() {
    let config = parse("t.toml", &cat(&[VH, "[vhost.persistent]\n"])).unwrap();
    let p = config.vhosts[0]
        .persistent
        .as_ref()
        .expect("enabled by default");
    assert_eq!(p.paths, vec!["*.pphp"]);
    assert_eq!(p.globs, vec![PathGlob::new("*.pphp").unwrap()]);
    assert_eq!(p.workers, vec![config.vhosts[0].origin.clone()]);
    assert_eq!(p.mode, SessionMode::Stream);
    assert_eq!(p.accept, vec!["application/x-persistent"]);
    assert_eq!(p.resume_grace, Duration::from_secs(120));
    assert_eq!(p.replay_window, 256 * 1024);
    assert_eq!(p.detached_backlog, 1024 * 1024);
    assert_eq!(p.max_line, 64 * 1024);
    assert_eq!(p.max_initial_body, 4 * 1024 * 1024);
    assert_eq!(p.max_sessions, 100_000);
    assert_eq!(p.max_sessions_per_ip, 1_000);
    assert_eq!(p.max_lines_per_second, 10_000);
    assert_eq!(p.worker_retry, Duration::from_secs(30));
    assert!(p.allowed_origins.is_empty());
    assert_eq!(
        *p,
        PersistentConfig::with_defaults(&config.vhosts[0].origin)
    );
}

#[test]
fn disabled_persistent_is_none_but_still_checked() {
    let config = parse(
        "t.toml",
        &cat(&[VH, "[vhost.persistent]\nenabled = false\n"]),
    )
    .unwrap();
    assert_eq!(config.vhosts[0].persistent, None);
    let errors = parse(
        "t.toml",
        &cat(&[VH, "[vhost.persistent]\nenabled = false\nmode = \"x\"\n"]),
    )
    .unwrap_err();
    assert_eq!(errors.len(), 1);
}

#[test]
fn the_spec_example_parses_to_the_defaults() {
    // SPEC section 1's example without [vhost.tls] (its files do not exist).
    let text = r#"
[server]
listen = ["127.0.0.1:8080"]          # plain HTTP listeners
tls_listen = []                      # TLS listeners (vhosts with [vhost.tls])
admin_listen = "127.0.0.1:9900"      # metrics, health, push API; never public by default
admin_token = "change-me"            # bearer token for the push API; no default: push API off
header_read_timeout = "10s"          # whole request head must arrive within this
idle_timeout = "60s"                 # idle keep-alive between plain requests
origin_connect_timeout = "5s"
origin_response_timeout = "60s"      # until the origin's response head
max_header_bytes = "64KiB"
max_connections = 20000              # client connections in all
max_connections_per_ip = 2000
drain_timeout = "30s"                # SIGTERM: how long plain requests may finish

[[vhost]]
hosts = ["example.test", "www.example.test"]   # Host header (port ignored); "*" = default vhost
origin = "http://127.0.0.1:8081"                # plain requests go here

[vhost.persistent]                   # absent or enabled = false: vhost is a plain proxy
enabled = true
paths = ["*.pphp"]                   # globs on the path
workers = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]  # default: [origin]
mode = "stream"                      # "stream" or "message" (section 6)
accept = ["application/x-persistent"]  # capability media types (section 2)
resume_grace = "120s"                # how long a detached session waits for its client
replay_window = "256KiB"             # lines sent toward the client, kept for replay (section 4)
detached_backlog = "1MiB"            # output buffered while detached before backpressure
max_line = "64KiB"                   # longest line in either direction, LF included
max_initial_body = "4MiB"            # longest initial body a worker may send
worker_retry = "30s"                 # message mode: how long an unreachable worker is waited for (section 6)
max_sessions = 100000                # live sessions on this vhost
max_sessions_per_ip = 1000
max_lines_per_second = 10000         # per session and direction; excess is read more slowly
allowed_origins = []                 # extra Origin values for WebSocket; own host is always allowed
"#;
    let config = parse("t.toml", text).unwrap();
    let mut server = ServerConfig::default();
    assert_eq!(config.server.admin_token.as_deref(), Some("change-me"));
    server.admin_token = Some("change-me".to_string());
    assert_eq!(config.server, server);
    let vhost = &config.vhosts[0];
    let mut persistent = PersistentConfig::with_defaults(&vhost.origin);
    persistent.workers = vec![
        origin("127.0.0.1", 9001, "http://127.0.0.1:9001", "127.0.0.1:9001"),
        origin("127.0.0.1", 9002, "http://127.0.0.1:9002", "127.0.0.1:9002"),
    ];
    assert_eq!(vhost.persistent.as_ref(), Some(&persistent));
}

#[test]
fn full_file_parses_every_key() {
    let dir = cert_dir();
    let text = r#"
[server]
listen = ["0.0.0.0:80", "[::1]:8080"]
tls_listen = ["0.0.0.0:443"]
admin_listen = "127.0.0.1:9999"
admin_token = "s3cret"
header_read_timeout = "5s"
idle_timeout = "2m"
origin_connect_timeout = "500ms"
origin_response_timeout = "1h"
max_header_bytes = 16384
max_connections = 100
max_connections_per_ip = 10
drain_timeout = "0s"
max_upstream_connections = 64

[[vhost]]
hosts = ["Chat.Example.TEST", "*"]
origin = "http://Origin.Test/"

[vhost.tls]
cert = "cert.pem"
key = "key.pem"

[vhost.persistent]
enabled = true
paths = ["*.pphp", "/live/[a-z]?/*"]
workers = ["http://10.0.0.1:9001", "http://[::1]"]
mode = "message"
accept = ["Application/X-Persistent", "text/x-lines"]
resume_grace = "250us"
replay_window = "1MiB"
detached_backlog = "1GiB"
max_line = "512B"
max_initial_body = 0
max_sessions = 7
max_sessions_per_ip = 3
max_lines_per_second = 42
allowed_origins = ["HTTPS://App.Example.Test", "http://localhost:3000"]
max_sessions_per_worker = 12
unused_grace = "1s"
worker_retry = "0s"
page_sessions = true
message_format = "form"

[[vhost]]
hosts = ["plain.test"]
origin = "http://127.0.0.1"

[vhost.persistent]
enabled = false
"#;
    let config = parse_in_dir(&dir, text).unwrap();
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert_eq!(
        config.server,
        ServerConfig {
            listen: vec![addr("0.0.0.0:80"), addr("[::1]:8080")],
            tls_listen: vec![addr("0.0.0.0:443")],
            admin_listen: addr("127.0.0.1:9999"),
            admin_token: Some("s3cret".to_string()),
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            origin_connect_timeout: Duration::from_millis(500),
            origin_response_timeout: Duration::from_secs(3600),
            max_header_bytes: 16384,
            max_connections: 100,
            max_connections_per_ip: 10,
            drain_timeout: Duration::ZERO,
            max_upstream_connections: 64,
        }
    );
    let chat_origin = origin("origin.test", 80, "http://Origin.Test/", "Origin.Test");
    let expected_chat = VhostConfig {
        hosts: vec!["chat.example.test".to_string(), "*".to_string()],
        origin: chat_origin,
        tls: Some(TlsConfig {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            redirect_http: false,
        }),
        persistent: Some(PersistentConfig {
            paths: vec!["*.pphp".to_string(), "/live/[a-z]?/*".to_string()],
            globs: vec![
                PathGlob::new("*.pphp").unwrap(),
                PathGlob::new("/live/[a-z]?/*").unwrap(),
            ],
            workers: vec![
                origin("10.0.0.1", 9001, "http://10.0.0.1:9001", "10.0.0.1:9001"),
                origin("::1", 80, "http://[::1]", "[::1]"),
            ],
            mode: SessionMode::Message,
            accept: vec![
                "application/x-persistent".to_string(),
                "text/x-lines".to_string(),
            ],
            resume_grace: Duration::from_micros(250),
            replay_window: 1 << 20,
            detached_backlog: 1 << 30,
            max_line: 512,
            max_initial_body: 0,
            max_sessions: 7,
            max_sessions_per_ip: 3,
            max_lines_per_second: 42,
            allowed_origins: vec![
                "https://app.example.test".to_string(),
                "http://localhost:3000".to_string(),
            ],
            max_sessions_per_worker: 12,
            unused_grace: Duration::from_secs(1),
            worker_retry: Duration::ZERO,
            page_sessions: true,
            message_format: MessageFormat::Form,
        }),
    };
    assert_eq!(config.vhosts[0], expected_chat);
    assert_eq!(
        config.vhosts[1],
        VhostConfig {
            hosts: vec!["plain.test".to_string()],
            origin: origin("127.0.0.1", 80, "http://127.0.0.1", "127.0.0.1"),
            tls: None,
            persistent: None,
        }
    );
    assert_eq!(config.vhosts[0].label(), "chat.example.test");
    let globs = &config.vhosts[0].persistent.as_ref().unwrap().globs;
    assert!(globs[1].matches(b"/live/ab/x"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn inline_vhost_tables_are_accepted() {
    let text = "vhost = [{ hosts = [\"a.test\"], origin = \"http://o\", persistent = { mode = \"message\" } }]\n";
    let config = parse("t.toml", text).unwrap();
    let p = config.vhosts[0].persistent.as_ref().unwrap();
    assert_eq!(p.mode, SessionMode::Message);
}

#[test]
fn certificate_files_must_hold_pem() {
    let dir = cert_dir();
    std::fs::write(dir.join("garbage.pem"), "garbage\n").unwrap();
    let text = cat(&[
        TLS_SERVER,
        VH,
        "[vhost.tls]\ncert = \"garbage.pem\"\nkey = \"cert.pem\"\n",
    ]);
    let errors = parse_in_dir(&dir, &text).unwrap_err();
    let lines: Vec<(usize, &str)> = errors
        .iter()
        .map(|e| (e.line, e.message.as_str()))
        .collect();
    assert_eq!(lines.len(), 2, "{errors}");
    assert!(lines[0].1.contains("holds no PEM certificate"), "{errors}");
    assert!(lines[1].1.contains("no usable PEM private key"), "{errors}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn load_reports_unreadable_and_non_utf8_files() {
    let dir = cert_dir();
    let missing = dir.join("missing.toml");
    let errors = load(&missing).unwrap_err();
    assert_eq!(errors.len(), 1);
    let line = errors.to_string();
    assert!(
        line.starts_with(&format!(
            "{}:1:1: cannot read the configuration file",
            missing.display()
        )),
        "{line}"
    );

    let latin1 = dir.join("latin1.toml");
    std::fs::write(&latin1, b"# ok\n# caf\xe9\n").unwrap();
    let errors = load(&latin1).unwrap_err();
    assert_eq!((errors.errors[0].line, errors.errors[0].column), (2, 6));
    assert!(errors.errors[0].message.contains("not valid UTF-8"));

    // Certificates are looked up next to the file, not in the cwd.
    let good = dir.join("tether.toml");
    std::fs::write(&good, cat(&[TLS_SERVER, VH, TLS_TABLE])).unwrap();
    let config = load(&good).unwrap();
    assert_eq!(
        config.vhosts[0].tls.as_ref().unwrap().cert,
        dir.join("cert.pem")
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The fenced blocks of docs/configuration.md that follow `marker`.
fn doc_block(marker: &str, fence: &str) -> String {
    let doc = include_str!("../../../../docs/configuration.md");
    let after = &doc[doc.find(marker).expect("marker in the doc")..];
    let start = after.find(fence).expect("fence after marker") + fence.len();
    let end = after[start..].find("```").expect("closing fence");
    after[start..start + end].to_string()
}

#[test]
fn the_documented_examples_agree_with_the_code() {
    let dir = cert_dir();
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    for name in ["chat.example.test.pem", "chat.example.test.key"] {
        let pem = if name.contains("key") {
            TEST_KEY
        } else {
            TEST_CERT
        };
        std::fs::write(dir.join("certs").join(name), pem).unwrap();
    }
    let complete = doc_block("## A complete example", "```toml\n");
    let config = parse_in_dir(&dir, &complete).unwrap();
    assert_eq!(config.vhosts.len(), 2);
    assert!(config.vhosts[0].persistent.is_some());

    let minimal = doc_block("# Configuring tether", "```toml\n");
    assert!(parse("t.toml", &minimal).is_ok());

    let broken = doc_block("For this `broken.toml`", "```toml\n");
    let shown = doc_block("the check says:", "```console\n");
    let expected: Vec<&str> = shown
        .lines()
        .filter(|l| l.starts_with("broken.toml:"))
        .collect();
    let errors = parse("broken.toml", &broken).unwrap_err().to_string();
    assert_eq!(errors.lines().collect::<Vec<_>>(), expected);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn absurd_sizes_and_huge_files_are_refused() {
    let text = cat(&[VH, "[vhost.persistent]\ndetached_backlog = \"2GiB\"\n"]);
    let errs = parse("t.toml", &text).unwrap_err().to_string();
    assert!(
        errs.contains("t.toml:5:20: detached_backlog of 2147483648 bytes"),
        "{errs}"
    );

    // `/dev/zero` would never end; the cap answers at once.
    let errs = load(Path::new("/dev/zero")).unwrap_err().to_string();
    assert!(errs.contains("larger than 4 MiB"), "{errs}");
}

#[test]
fn hardening_keys_have_defaults_and_parse() {
    let c = parse("t.toml", VH).unwrap();
    assert_eq!(c.server.max_upstream_connections, 1024);
    let text = cat(&[
        "[server]\nmax_upstream_connections = 8\n",
        VH,
        "[vhost.persistent]\nmax_sessions_per_worker = 3\nunused_grace = \"5s\"\n",
    ]);
    let c = parse("t.toml", &text).unwrap();
    assert_eq!(c.server.max_upstream_connections, 8);
    let p = c.vhosts[0].persistent.as_ref().unwrap();
    assert_eq!(p.max_sessions_per_worker, 3);
    assert_eq!(p.unused_grace, Duration::from_secs(5));
    let d = parse("t.toml", &cat(&[VH, "[vhost.persistent]\n"])).unwrap();
    let p = d.vhosts[0].persistent.as_ref().unwrap();
    assert_eq!(p.max_sessions_per_worker, 10_000);
    assert_eq!(p.unused_grace, Duration::from_secs(30));
}

#[test]
fn risky_settings_are_warned_about() {
    let quiet = parse("t.toml", VH).unwrap();
    assert!(warnings(&quiet, Some(1 << 20)).is_empty());
    let text = cat(&[
        "[server]\nadmin_listen = \"0.0.0.0:9900\"\nadmin_token = \"short\"\n",
        VH,
    ]);
    let loud = parse("t.toml", &text).unwrap();
    let w = warnings(&loud, Some(1024)).join("\n");
    assert!(
        w.contains("admin_listen 0.0.0.0:9900 is not a loopback address"),
        "{w}"
    );
    assert!(w.contains("admin_token has 5 characters"), "{w}");
    assert!(
        w.contains("file descriptors, but this process may open 1024"),
        "{w}"
    );
}

#[test]
fn redirect_http_parses_and_warns_without_a_tls_listener() {
    let dir = cert_dir();
    let on = cat(&[TLS_SERVER, VH, TLS_TABLE, "redirect_http = true\n"]);
    let config = parse_in_dir(&dir, &on).unwrap();
    assert!(config.vhosts[0].tls.as_ref().unwrap().redirect_http);
    assert!(warnings(&config, None).is_empty());
    let off = parse_in_dir(&dir, &cat(&[TLS_SERVER, VH, TLS_TABLE])).unwrap();
    assert!(!off.vhosts[0].tls.as_ref().unwrap().redirect_http);
    let lonely = parse_in_dir(&dir, &cat(&[VH, TLS_TABLE, "redirect_http = true\n"])).unwrap();
    let w = warnings(&lonely, None).join("\n");
    assert!(
        w.contains("vhost a.test redirects plain HTTP to https (redirect_http), but [server] has no tls_listen"),
        "{w}"
    );
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let dir = cert_dir();
    std::fs::write(
        dir.join("other-key.pem"),
        include_str!("../../testdata/other-key.pem"),
    )
    .unwrap();
    let text = cat(&[
        TLS_SERVER,
        VH,
        "[vhost.tls]\ncert = \"cert.pem\"\nkey = \"other-key.pem\"\n",
    ]);
    let errs = parse_in_dir(&dir, &text).unwrap_err().to_string();
    assert!(errs.contains(":8:7: the private key "), "{errs}");
    assert!(
        errs.contains("does not belong to the certificate"),
        "{errs}"
    );
    // The matching pair still loads.
    assert!(parse_in_dir(&dir, &cat(&[TLS_SERVER, VH, TLS_TABLE])).is_ok());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_vhost_without_hosts_has_an_empty_label() {
    let mut v = parse("t.toml", VH).unwrap().vhosts.remove(0);
    assert_eq!(v.label(), "a.test");
    v.hosts.clear();
    assert_eq!(v.label(), "");
}

/// A complete `[cluster]` after the vhost (lines 4 to 8 of the file).
const CLUSTER: &str = "[cluster]\nnode = \"gw1\"\nnats = [\"nats://127.0.0.1:4222\"]\npeer_listen = \"127.0.0.1:7401\"\npeer_token = \"s3cret-of-the-cluster\"\n";

#[test]
fn cluster_table_is_read_and_defaults_apply() {
    let config = parse("t.toml", &cat(&[VH, CLUSTER])).unwrap();
    let c = config.cluster.expect("[cluster] given");
    assert_eq!(c.node, "gw1");
    assert_eq!(c.nats, vec!["nats://127.0.0.1:4222"]);
    assert_eq!(
        c.peer_listen,
        "127.0.0.1:7401".parse::<SocketAddr>().unwrap()
    );
    // peer_advertise defaults to peer_listen.
    assert_eq!(c.peer_advertise, c.peer_listen);
    assert!(
        !format!("{c:?}").contains("s3cret"),
        "the token stays out of logs"
    );
    let minimal = "[cluster]\nnode = \"a1\"\npeer_listen = \"0.0.0.0:7401\"\npeer_advertise = \"10.0.0.1:7401\"\npeer_token = \"t\"\n";
    let c = parse("t.toml", &cat(&[VH, minimal]))
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(c.nats, vec!["nats://127.0.0.1:4222"]);
    assert_eq!(
        c.peer_advertise,
        "10.0.0.1:7401".parse::<SocketAddr>().unwrap()
    );
    assert!(parse("t.toml", VH).unwrap().cluster.is_none());
}

#[test]
fn cluster_errors_are_positioned() {
    let with = |from: &str, to: &str| cat(&[VH, &CLUSTER.replace(from, to)]);
    let rows: Vec<(&str, String, &str, &str)> = vec![
        (
            "unknown key",
            with("node =", "nod = \"x\"\nnode ="),
            "5:1",
            "unknown key \"nod\" in [cluster] (did you mean \"node\"?)",
        ),
        (
            "bad node",
            with("\"gw1\"", "\"GW-1\""),
            "5:8",
            "node \"GW-1\" must be 1 to 16 characters",
        ),
        (
            "long node",
            with("\"gw1\"", "\"abcdefghij0123456\""),
            "5:8",
            "must be 1 to 16",
        ),
        (
            "missing node",
            with("node = \"gw1\"\n", ""),
            "4:1",
            "[cluster] needs node",
        ),
        (
            "empty nats",
            with("[\"nats://127.0.0.1:4222\"]", "[]"),
            "6:8",
            "nats is empty",
        ),
        (
            "bad nats",
            with("nats://127.0.0.1:4222", "http://x:1"),
            "6:9",
            "nats: \"http://x:1\" is not a NATS URL",
        ),
        (
            "bad peer_listen",
            with("127.0.0.1:7401", "nowhere"),
            "7:15",
            "peer_listen: \"nowhere\" is not a socket address",
        ),
        (
            "unspecified, no advertise",
            with("127.0.0.1:7401", "0.0.0.0:7401"),
            "7:15",
            "set peer_advertise",
        ),
        (
            "missing token",
            with("peer_token = \"s3cret-of-the-cluster\"\n", ""),
            "4:1",
            "[cluster] needs peer_token",
        ),
        (
            "empty token",
            with("\"s3cret-of-the-cluster\"", "\" \""),
            "8:14",
            "peer_token is empty",
        ),
        (
            "clash",
            cat(&["[server]\nlisten = [\"127.0.0.1:7401\"]\n", VH, CLUSTER]),
            "9:15",
            "peer_listen: the address 127.0.0.1:7401 is already used by listen (line 2)",
        ),
        (
            "not a table",
            cat(&[VH.replace("[[vhost]]", "cluster = 1\n[[vhost]]").as_str()]),
            "1:11",
            "cluster must be a table",
        ),
    ];
    let mut failures = Vec::new();
    for (name, text, position, fragment) in &rows {
        let errors = match parse("t.toml", text) {
            Ok(_) => {
                failures.push(format!("{name}: parsed without error"));
                continue;
            }
            Err(errors) => errors,
        };
        let e = &errors.errors[0];
        let got = format!("{}:{}", e.line, e.column);
        if errors.len() != 1 || got != *position || !e.message.contains(fragment) {
            failures.push(format!(
                "{name}: expected {position} with {fragment:?}, got:\n{errors}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn form_messages_need_message_mode_and_formats_are_named() {
    let errors = parse(
        "t.toml",
        "[[vhost]]\nhosts = [\"a\"]\norigin = \"http://127.0.0.1\"\n[vhost.persistent]\nmessage_format = \"form\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("t.toml:5:18:") && errors.contains("needs mode = \"message\""),
        "{errors}"
    );
    let errors = parse(
        "t.toml",
        "[[vhost]]\nhosts = [\"a\"]\norigin = \"http://127.0.0.1\"\n[vhost.persistent]\nmode = \"message\"\nmessage_format = \"json\"\npage_sessions = \"yes\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("t.toml:6:18:") && errors.contains("\"json\" is not a format"),
        "{errors}"
    );
    assert!(
        errors.contains("t.toml:7:17:") && errors.contains("page_sessions must be true or false"),
        "{errors}"
    );
    let p = parse(
        "t.toml",
        "[[vhost]]\nhosts = [\"a\"]\norigin = \"http://127.0.0.1\"\n[vhost.persistent]\n",
    )
    .unwrap()
    .vhosts[0]
        .persistent
        .clone()
        .unwrap();
    assert!(!p.page_sessions);
    assert_eq!(p.message_format, MessageFormat::Lines);
}
