//! Test harness: starting real servers on free loopback ports.
//!
//! Every server here (tether itself, nginx, Apache + PHP, a WebSocket echo
//! origin) runs as a child process, from a config written into its own
//! temporary directory, on ports picked with [`free_port`]. Start-up is
//! synchronised on readiness (the port accepts, or the child prints a line),
//! never on sleeps; every guard stops and reaps its process on `Drop`.
//!
//! Layout:
//! - [`process`]: a child-process guard (signals, bounded waits, reaping);
//! - [`tether`]: the gateway under test ([`Tether`]);
//! - [`nginx`], [`apache`]: origins ([`Nginx`], [`Apache`]);
//! - [`ws_echo`]: a WebSocket echo origin ([`WsEcho`]);
//! - [`raw_http`]: an exact-bytes HTTP/1.x client ([`RawConn`], [`Response`]);
//! - [`websocket`]: hand-written RFC 6455 client frames ([`WsClient`]);
//! - [`tls_relay`]: a plain port relayed over TLS, so that those clients
//!   reach TLS listeners ([`TlsRelay`]);
//! - [`access_log`]: reading origins' access logs ([`AccessLog`]);
//! - [`payload`]: deterministic large bodies and their digests;
//! - [`session`]: the `line_worker` test worker and a raw native session
//!   client (handshake, resume, `DELETE`).

pub mod access_log;
pub mod apache;
pub mod nats;
pub mod nginx;
pub mod payload;
pub mod process;
pub mod raw_http;
pub mod session;
pub mod tether;
pub mod tls_relay;
pub mod websocket;
pub mod ws_echo;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use access_log::AccessLog;
pub use apache::Apache;
pub use nginx::Nginx;
pub use process::{ChildGuard, Signal};
pub use raw_http::{metric, RawConn, Response};
pub use tempfile::TempDir;
pub use tether::Tether;
pub use tls_relay::TlsRelay;
pub use websocket::{WsClient, WsFrame};
pub use ws_echo::WsEcho;

/// How long any server may take to start accepting.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Slack added to a SPEC deadline when a test asserts it (a busy 2-core
/// machine, the `kill` child that sends a signal, 10 ms polling): never a
/// speed requirement of its own. A behaviour late by more than this fails.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// Asserts that `elapsed`, measured by the test from the moment a SPEC
/// deadline starts running, is at most `deadline` + [`DEADLINE_MARGIN`].
/// Prints the measure (`--nocapture` shows it).
#[track_caller]
pub fn assert_within_deadline(what: &str, elapsed: Duration, deadline: Duration) {
    eprintln!(
        "timing: {what}: {elapsed:.3?} (SPEC: within {deadline:?}, margin {DEADLINE_MARGIN:?})"
    );
    assert!(
        elapsed <= deadline + DEADLINE_MARGIN,
        "SPEC: {what} within {deadline:?}; took {elapsed:.3?} (more than the {DEADLINE_MARGIN:?} margin late)"
    );
}

/// Asserts that `elapsed` is at least `earliest` (the SPEC forbids the
/// event before it: e.g. a session ending before its `resume_grace`) and
/// at most `deadline` + [`DEADLINE_MARGIN`].
#[track_caller]
pub fn assert_between(what: &str, elapsed: Duration, earliest: Duration, deadline: Duration) {
    assert!(
        elapsed >= earliest,
        "SPEC: {what} not before {earliest:?}; it came after {elapsed:.3?}"
    );
    assert_within_deadline(what, elapsed, deadline);
}

/// A free TCP port on 127.0.0.1 (bound to port 0, then released).
///
/// Ports handed out once in this process are never handed out again, so two
/// servers started by parallel tests of one binary cannot get the same port.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no free port found after 100 tries");
}

/// A new temporary directory, readable by other users (Apache's and nginx's
/// workers may run as `www-data` when the tests run as root).
pub fn temp_dir() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("tether-test-")
        .tempdir()
        .expect("create temp dir");
    set_mode(dir.path(), 0o755);
    dir
}

/// `chmod MODE PATH`.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// True when this process runs as root (uid 0).
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .map(|uid| uid == "0")
        .unwrap_or(false)
}

/// Polls `addr` until a TCP connect succeeds, or `timeout` passes.
///
/// `alive` is asked between attempts; when it returns an error (the server
/// exited), waiting stops with that error.
pub fn wait_until_accepts(
    addr: SocketAddr,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        alive()?;
        if Instant::now() >= deadline {
            return Err(format!("{addr} did not accept within {timeout:?}"));
        }
        // Poll interval, not synchronisation: the loop ends on readiness.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after
/// `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Samples the RSS of `pid` every 50 ms on a thread until the returned
/// guard is finished; [`RssSampler::finish`] gives the peak in KiB.
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak.max(rss_kib(pid).unwrap_or(0))
        });
        RssSampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling; the peak RSS seen, in KiB.
    pub fn finish(mut self) -> u64 {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Serialises the heavy tests (hundreds of MiB moved) of one test binary so
/// that they do not starve each other on a small machine.
pub fn heavy_lock() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Raises this process's soft limit of open files to its hard limit
/// (children inherit it); returns the new soft limit. For tests that hold
/// thousands of connections.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).expect("setrlimit(RLIMIT_NOFILE)");
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Path of a file in `tests/fixtures/`.
pub fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}
