//! The gateway under test, run as `tether run -c FILE`.
//!
//! After an upgrade (SPEC 10: SIGUSR2 starts the same binary, which takes
//! over, and the old process exits) the process that serves is no longer
//! the test's child: [`Tether`] follows it by the pid its predecessor logs
//! (`upgrade: new process started pid=N`), signals it, reaps it (the test
//! process becomes a child subreaper, so orphaned tethers are its
//! children) and kills every process an upgrade started on `Drop`.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::process::{send_signal, ChildGuard, Signal, StopWith};
use crate::{free_port, temp_dir, wait_until_accepts, TempDir, STARTUP_TIMEOUT};

/// Logged by the old process once it has started the new one, with
/// `pid=<N>` (SPEC 10).
pub const UPGRADE_STARTED: &str = "upgrade: new process started";
/// Logged by the new process once it holds everything, with `sessions=<N>`
/// and `elapsed_ms=<N>`.
pub const UPGRADE_COMPLETE: &str = "upgrade: handover complete";
/// Logged by the process that goes on serving after a refused or failed
/// upgrade.
pub const UPGRADE_FAILED: &str = "upgrade failed";

/// A running tether; killed and reaped on `Drop`, with every process that
/// its upgrades started.
pub struct Tether {
    dir: TempDir,
    child: ChildGuard,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    /// The process that serves now: the child until an upgrade completes.
    serving: u32,
    /// Pids of the processes that upgrades started, in order.
    started: Vec<u32>,
}

/// A completed upgrade (see [`Tether::upgrade`]).
#[derive(Debug)]
pub struct Upgrade {
    pub old_pid: u32,
    pub new_pid: u32,
    /// The old process's exit status.
    pub old_exit: ExitStatus,
    /// The new process's `upgrade: handover complete` log line.
    pub complete_line: String,
    /// From SIGUSR2 until the test saw that line (measured by the test).
    pub elapsed: Duration,
}

impl Upgrade {
    /// `sessions=<N>` of the `handover complete` line.
    pub fn sessions(&self) -> Option<u64> {
        log_field(&self.complete_line, "sessions")
    }

    /// `elapsed_ms=<N>` of the `handover complete` line.
    pub fn elapsed_ms(&self) -> Option<u64> {
        log_field(&self.complete_line, "elapsed_ms")
    }
}

/// The value of the numeric field `name` in a log line: `name=123` (human
/// format) or `"name":123` (JSON).
pub fn log_field(line: &str, name: &str) -> Option<u64> {
    for pat in [format!("{name}="), format!("\"{name}\":")] {
        let mut from = 0;
        while let Some(i) = line[from..].find(&pat).map(|i| i + from) {
            let boundary = !matches!(
                line[..i].chars().next_back(),
                Some(c) if c.is_ascii_alphanumeric() || c == '_'
            );
            let digits: String = line[i + pat.len()..]
                .trim_start_matches('"')
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if boundary && !digits.is_empty() {
                return digits.parse().ok();
            }
            from = i + pat.len();
        }
    }
    None
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
        let serving = child.pid();
        Tether {
            dir,
            child,
            listen,
            admin,
            serving,
            started: Vec::new(),
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
        wait_caught(
            self.pid(),
            HUP | TERM,
            "tether's SIGHUP and SIGTERM handlers",
        );
    }

    /// Waits until the serving process has installed its SIGUSR2 handler
    /// (SPEC 10), so that SIGUSR2 cannot kill it by the default action.
    pub fn wait_upgrade_handler(&self) {
        const USR2: u64 = 1 << 11;
        wait_caught(self.pid(), USR2, "tether's SIGUSR2 handler (SPEC 10)");
    }

    /// The process that serves now (after upgrades: the newest).
    pub fn pid(&self) -> u32 {
        self.serving
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

    /// Sends `signal` to the serving process without waiting.
    pub fn signal(&mut self, signal: Signal) {
        if self.serving == self.child.pid() {
            self.child.signal(signal);
        } else {
            send_signal(self.serving, signal);
        }
    }

    /// Waits up to `timeout` for the serving process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.wait_pid_exit(self.serving, timeout)
    }

    /// Waits up to `timeout` for process `pid` (the child, or one that an
    /// upgrade started and that is now the test's child) to exit, and
    /// reaps it.
    pub fn wait_pid_exit(&mut self, pid: u32, timeout: Duration) -> Option<ExitStatus> {
        if pid == self.child.pid() {
            return self.child.wait_timeout(timeout);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match reap(pid) {
                Reaped::Status(status) => return Some(status),
                Reaped::NotOurs if !process_exists(pid) => panic!(
                    "tether process {pid} ended but is not the test's child: \
                     its exit status cannot be read"
                ),
                _ => {}
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Length of tether's stderr now: log lines after this offset are new
    /// (every process of an upgrade writes to the same stderr).
    pub fn log_mark(&self) -> usize {
        self.stderr_text().len()
    }

    /// The first log line after `mark` that contains `needle`, if any.
    pub fn log_line_after(&self, mark: usize, needle: &str) -> Option<String> {
        let text = self.stderr_text();
        text.get(mark..)
            .unwrap_or("")
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_string)
    }

    /// Waits up to `timeout` for a log line after `mark` that contains
    /// `needle`; panics with the log after `mark` when none comes.
    pub fn wait_log_line(&self, mark: usize, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log_line_after(mark, needle) {
                return line;
            }
            if Instant::now() >= deadline {
                let text = self.stderr_text();
                panic!(
                    "no log line with {needle:?} within {timeout:?}; log since:\n{}",
                    tail(text.get(mark..).unwrap_or(""), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends SIGUSR2 to the serving process (SPEC 10) and returns the log
    /// mark from just before it. The test process becomes a child
    /// subreaper first, so that a new tether orphaned by its predecessor's
    /// exit becomes the test's child (reaped by the test, its exit status
    /// readable, its pid never reused while the guard holds it).
    pub fn send_upgrade(&mut self) -> usize {
        become_subreaper();
        self.wait_upgrade_handler();
        let mark = self.log_mark();
        self.signal(Signal::Usr2);
        mark
    }

    /// Waits for `upgrade: new process started pid=N` after `mark`;
    /// remembers `N` (killed on `Drop`) and returns it.
    pub fn wait_upgrade_started(&mut self, mark: usize, timeout: Duration) -> u32 {
        let line = self.wait_log_line(mark, UPGRADE_STARTED, timeout);
        let pid = log_field(&line, "pid")
            .unwrap_or_else(|| panic!("no pid=<N> in the log line {line:?}"))
            as u32;
        if !self.started.contains(&pid) {
            self.started.push(pid);
        }
        pid
    }

    /// Waits for `upgrade: handover complete` after `mark`, then for the
    /// serving process to exit (reaped, its status returned); from then on
    /// `new_pid` is the serving process.
    pub fn wait_handover(
        &mut self,
        mark: usize,
        new_pid: u32,
        timeout: Duration,
    ) -> (String, ExitStatus) {
        let line = self.wait_log_line(mark, UPGRADE_COMPLETE, timeout);
        let old = self.serving;
        let status = self.wait_pid_exit(old, timeout).unwrap_or_else(|| {
            panic!(
                "SPEC 10: the old process {old} did not exit within {timeout:?} of the \
                 handover; log:\n{}",
                tail(&self.stderr_text(), 60)
            )
        });
        self.serving = new_pid;
        (line, status)
    }

    /// A whole upgrade: SIGUSR2, the new process's pid, `handover
    /// complete`, the old process's exit; each step waited for at most
    /// `timeout`.
    pub fn upgrade(&mut self, timeout: Duration) -> Upgrade {
        let old_pid = self.serving;
        let started = Instant::now();
        let mark = self.send_upgrade();
        let new_pid = self.wait_upgrade_started(mark, timeout);
        let line = self.wait_log_line(mark, UPGRADE_COMPLETE, timeout);
        let elapsed = started.elapsed();
        let (complete_line, old_exit) = self.wait_handover(mark, new_pid, timeout);
        debug_assert_eq!(line, complete_line);
        Upgrade {
            old_pid,
            new_pid,
            old_exit,
            complete_line,
            elapsed,
        }
    }

    /// Pids of the processes that upgrades started (as logged), in order.
    pub fn upgrade_pids(&self) -> &[u32] {
        &self.started
    }

    /// Sends `signal` to the process the test started and returns its exit
    /// status (waits up to 60 s).
    pub fn stop_with(&mut self, signal: Signal) -> ExitStatus {
        self.child.stop_with(signal, Duration::from_secs(60))
    }

    /// `Err` with the exit status and stderr if the process the test
    /// started has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        self.child.check_alive()
    }
}

impl Drop for Tether {
    /// Kills every tether that an upgrade started (newest first, also those
    /// whose start was logged but not yet waited for), then the child, and
    /// reaps what is the test's to reap. Only processes named like the
    /// tether binary whose parent is the test or one of these tethers are
    /// signalled: a pid is never killed after it was reused.
    fn drop(&mut self) {
        let mut pids = self.started.clone();
        for line in self.stderr_text().lines() {
            if line.contains(UPGRADE_STARTED) {
                if let Some(pid) = log_field(line, "pid").map(|p| p as u32) {
                    if !pids.contains(&pid) {
                        pids.push(pid);
                    }
                }
            }
        }
        let mut family = vec![std::process::id(), self.child.pid()];
        family.extend_from_slice(&pids);
        for &pid in pids.iter().rev() {
            if is_tether_of(pid, &family) {
                send_signal(pid, Signal::Kill);
            }
        }
        self.child.signal(Signal::Kill);
        self.child.wait_timeout(Duration::from_secs(5));
        // Killed tethers whose parent died too are now the test's children.
        let deadline = Instant::now() + Duration::from_secs(5);
        for &pid in &pids {
            while matches!(reap(pid), Reaped::Running) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Waits until every signal of `mask` is caught by `pid` (`SigCgt` of
/// `/proc/PID/status`).
fn wait_caught(pid: u32, mask: u64, what: &str) {
    crate::wait_for(what, STARTUP_TIMEOUT, || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())?;
        (caught & mask == mask).then_some(())
    });
}

/// What `waitpid(pid, WNOHANG)` found.
enum Reaped {
    Status(ExitStatus),
    Running,
    /// Not a child of the test (or already reaped).
    NotOurs,
}

fn reap(pid: u32) -> Reaped {
    use rustix::process::{waitpid, Pid, WaitOptions};
    let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Reaped::NotOurs;
    };
    match waitpid(Some(p), WaitOptions::NOHANG) {
        Ok(Some((_, status))) => Reaped::Status(ExitStatus::from_raw(status.as_raw())),
        Ok(None) => Reaped::Running,
        Err(_) => Reaped::NotOurs,
    }
}

/// Makes the test process a child subreaper (once): orphans among its
/// descendants become its children instead of init's.
fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .expect("prctl(PR_SET_CHILD_SUBREAPER)");
    });
}

/// `/proc/PID/stat`: (comm, state, ppid).
fn proc_stat(pid: u32) -> Option<(String, char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// Whether `pid` is a live process (not a zombie).
pub fn process_exists(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(_, state, _)| state != 'Z')
}

/// Whether `pid` runs the tether binary and its parent is in `family`.
fn is_tether_of(pid: u32, family: &[u32]) -> bool {
    let bin = tether_bin();
    let name = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // comm holds at most 15 bytes of the name.
    let short: String = name.chars().take(15).collect();
    proc_stat(pid).is_some_and(|(comm, _, ppid)| comm == short && family.contains(&ppid))
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
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

    #[test]
    fn reads_log_fields() {
        let human = "2026-12-06T11:00:00Z  INFO tether: upgrade: new process started pid=4242";
        assert_eq!(log_field(human, "pid"), Some(4242));
        let done = "INFO tether: upgrade: handover complete sessions=10000 elapsed_ms=812";
        assert_eq!(log_field(done, "sessions"), Some(10000));
        assert_eq!(log_field(done, "elapsed_ms"), Some(812));
        assert_eq!(log_field("x old_pid=1 pid=2", "pid"), Some(2));
        assert_eq!(log_field("{\"fields\":{\"pid\":77}}", "pid"), Some(77));
        assert_eq!(log_field("pid=", "pid"), None);
    }
}
