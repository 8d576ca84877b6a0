//! A WebSocket echo origin: `tests/fixtures/ws_echo.py` (python3-websockets)
//! as a child process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::process::{ChildGuard, StopWith};
use crate::{fixture, temp_dir, TempDir, STARTUP_TIMEOUT};

/// The running echo origin; killed and reaped on `Drop`.
pub struct WsEcho {
    // Field order: the child goes before its temp dir.
    child: ChildGuard,
    _dir: TempDir,
    addr: SocketAddr,
}

/// The Python that has `websockets`: `$PYTHON`, else `/usr/bin/python3`
/// (Debian's, where python3-websockets installs), else `python3`.
pub fn python() -> String {
    if let Ok(p) = std::env::var("PYTHON") {
        return p;
    }
    if std::path::Path::new("/usr/bin/python3").is_file() {
        return "/usr/bin/python3".into();
    }
    "python3".into()
}

impl WsEcho {
    /// Starts the script on a free port and waits for the port it prints.
    pub fn start() -> WsEcho {
        let dir = temp_dir();
        let mut cmd = Command::new(python());
        cmd.arg(fixture("ws_echo.py"))
            .arg("0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let stderr = dir.path().join("ws_echo.stderr");
        let mut child = ChildGuard::spawn("ws_echo.py", cmd, &stderr, StopWith::Kill);
        let stdout = child.child_mut().stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(STARTUP_TIMEOUT).unwrap_or_default();
        let port: u16 = line.trim().parse().unwrap_or_else(|_| {
            panic!(
                "ws_echo.py did not print its port (got {line:?}); is python3-websockets \
                 installed (make test installs it)? stderr:\n{}",
                child.stderr_text()
            )
        });
        WsEcho {
            child,
            _dir: dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stderr_text(&self) -> String {
        self.child.stderr_text()
    }
}
