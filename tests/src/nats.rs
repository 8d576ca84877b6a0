//! A real `nats-server` (Debian package `nats-server`) on a free loopback
//! port, for the cluster tests (SPEC 11); stoppable and restartable on the
//! same port.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::process::{ChildGuard, StopWith};
use crate::{free_port, temp_dir, wait_until_accepts, TempDir, STARTUP_TIMEOUT};

pub struct NatsServer {
    addr: SocketAddr,
    dir: TempDir,
    child: Option<ChildGuard>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut n = NatsServer {
            addr,
            dir: temp_dir(),
            child: None,
        };
        n.restart();
        n
    }

    /// The URL for `[cluster] nats`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Kills the server (SIGKILL): clients see their connection drop.
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// Starts it (again) on the same port and waits until it accepts.
    pub fn restart(&mut self) {
        let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())
            .unwrap_or("nats-server");
        let mut cmd = Command::new(bin);
        cmd.arg("-a")
            .arg(self.addr.ip().to_string())
            .arg("-p")
            .arg(self.addr.port().to_string())
            .stdout(Stdio::null());
        let stderr = self.dir.path().join("nats.stderr");
        let mut child = ChildGuard::spawn("nats-server", cmd, &stderr, StopWith::Kill);
        if let Err(e) = wait_until_accepts(self.addr, STARTUP_TIMEOUT, || child.check_alive()) {
            panic!("nats-server did not start: {e}");
        }
        self.child = Some(child);
    }
}
