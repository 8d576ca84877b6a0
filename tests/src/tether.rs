//! The gateway under test, run as `tether run -c FILE`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::process::{ChildGuard, Signal, StopWith};
use crate::{free_port, temp_dir, wait_until_accepts, TempDir, STARTUP_TIMEOUT};

/// A running tether; killed and reaped on `Drop`.
pub struct Tether {
    dir: TempDir,
    child: ChildGuard,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
}

/// The tether binary: `$TETHER_BIN`, else `<target dir>/debug/tether` found
/// among the ancestors of the running test executable.
pub fn tether_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TETHER_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "TETHER_BIN={} is not a file; build it with `cargo build -p tether`",
            bin.display()
        );
        return bin;
    }
    let exe = std::env::current_exe().expect("current_exe");
    for dir in exe.ancestors().skip(1) {
        let candidate = dir.join("tether");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "tether binary not found next to {} or its parent directories; \
         run `cargo build -p tether` first (make test does), or set TETHER_BIN",
        exe.display()
    );
}

impl Tether {
    /// Writes `config_toml` to `tether.toml` in a new temp dir, runs
    /// `tether run -c` on it and waits until the first address of
    /// `[server] listen` accepts. Panics with tether's stderr if it exits
    /// or does not accept within [`STARTUP_TIMEOUT`].
    pub fn start(config_toml: &str) -> Tether {
        let dir = temp_dir();
        let config = dir.path().join("tether.toml");
        std::fs::write(&config, config_toml).expect("write tether.toml");
        let listen = first_listen_addr(config_toml)
            .expect("the config must have [server] listen = [\"127.0.0.1:PORT\", ...]");
        let admin = admin_addr(config_toml);
        let mut cmd = Command::new(tether_bin());
        cmd.arg("run")
            .arg("-c")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .env("RUST_BACKTRACE", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let stderr = dir.path().join("tether.stderr");
        let mut child = ChildGuard::spawn("tether", cmd, &stderr, StopWith::Kill);
        if let Err(e) = wait_until_accepts(listen, STARTUP_TIMEOUT, || child.check_alive()) {
            panic!("tether did not start: {e}");
        }
        Tether {
            dir,
            child,
            listen,
            admin,
        }
    }

    /// A config with one listener, an admin listener, `server_extra` lines
    /// in `[server]` and the given vhost tables (each a complete
    /// `[[vhost]]` block).
    pub fn config(server_extra: &str, vhosts: &[String]) -> String {
        let mut c = format!(
            "[server]\nlisten = [\"127.0.0.1:{}\"]\nadmin_listen = \"127.0.0.1:{}\"\n{server_extra}\n",
            free_port(),
            free_port()
        );
        for v in vhosts {
            c.push('\n');
            c.push_str(v);
            c.push('\n');
        }
        c
    }

    /// A `[[vhost]]` block for `hosts` proxying to `origin` (`127.0.0.1:PORT`).
    pub fn vhost(hosts: &[&str], origin: SocketAddr) -> String {
        let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
        format!(
            "[[vhost]]\nhosts = [{}]\norigin = \"http://{origin}\"\n",
            hosts.join(", ")
        )
    }

    /// Starts tether with one vhost `hosts` → `origin` and `server_extra`.
    pub fn in_front_of(hosts: &[&str], origin: SocketAddr, server_extra: &str) -> Tether {
        Tether::start(&Tether::config(
            server_extra,
            &[Tether::vhost(hosts, origin)],
        ))
    }

    /// The first plain listener.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Waits until tether has installed its SIGHUP and SIGTERM handlers
    /// (read from `/proc/PID/status`), so that a signal sent next cannot
    /// kill it by the default action.
    pub fn wait_signal_handlers(&self) {
        const HUP: u64 = 1 << 0;
        const TERM: u64 = 1 << 14;
        let pid = self.pid();
        crate::wait_for(
            "tether's SIGHUP and SIGTERM handlers",
            STARTUP_TIMEOUT,
            || {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let mask = status
                    .lines()
                    .find_map(|l| l.strip_prefix("SigCgt:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())?;
                (mask & (HUP | TERM) == HUP | TERM).then_some(())
            },
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        crate::rss_kib(self.pid())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// tether's stderr so far (logs), for diagnostics.
    pub fn stderr_text(&self) -> String {
        self.child.stderr_text()
    }

    /// Sends `signal` without waiting.
    pub fn signal(&mut self, signal: Signal) {
        self.child.signal(signal);
    }

    /// Waits up to `timeout` for the exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.wait_timeout(timeout)
    }

    /// Sends `signal` and returns the exit status (waits up to 60 s).
    pub fn stop_with(&mut self, signal: Signal) -> ExitStatus {
        self.child.stop_with(signal, Duration::from_secs(60))
    }

    /// `Err` with the exit status and stderr if tether has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        self.child.check_alive()
    }
}

/// First address of `listen = [...]` in the `[server]` table.
fn first_listen_addr(toml: &str) -> Option<SocketAddr> {
    let line = toml
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("listen") && l["listen".len()..].trim_start().starts_with('='))?;
    let start = line.find('"')? + 1;
    let end = start + line[start..].find('"')?;
    line[start..end].parse().ok()
}

fn admin_addr(toml: &str) -> Option<SocketAddr> {
    let line = toml
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("admin_listen"))?;
    let start = line.find('"')? + 1;
    let end = start + line[start..].find('"')?;
    line[start..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listen_address() {
        let c = "[server]\ntls_listen = [\"127.0.0.1:1\"]\nlisten = [\"127.0.0.1:2\", \"127.0.0.1:3\"]\nadmin_listen = \"127.0.0.1:4\"\n";
        assert_eq!(first_listen_addr(c), Some("127.0.0.1:2".parse().unwrap()));
        assert_eq!(admin_addr(c), Some("127.0.0.1:4".parse().unwrap()));
    }
}
