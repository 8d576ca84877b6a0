//! A child process that is stopped and reaped when its guard is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Signals the harness sends (through `kill(1)`: the workspace forbids
/// `unsafe`, so no direct `libc::kill`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Term,
    Int,
    Hup,
    Kill,
    Quit,
    /// SPEC 10: upgrade to a new binary.
    Usr2,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Int => "INT",
            Signal::Hup => "HUP",
            Signal::Kill => "KILL",
            Signal::Quit => "QUIT",
            Signal::Usr2 => "USR2",
        }
    }
}

/// Sends `signal` to process `pid` (through `kill(1)`, like
/// [`ChildGuard::signal`]), for processes that are not the test's own
/// children (e.g. a tether started by another tether's upgrade); `false`
/// when `kill` failed (no such process).
pub fn send_signal(pid: u32, signal: Signal) -> bool {
    Command::new("kill")
        .arg(format!("-{}", signal.name()))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// How a guard stops its child on `Drop`.
#[derive(Clone, Copy, Debug)]
pub enum StopWith {
    /// SIGKILL at once.
    Kill,
    /// This signal, then SIGKILL if the child is still there after the
    /// grace period (servers with worker processes must get the chance to
    /// stop them).
    Graceful(Signal, Duration),
}

/// A running child process; its stderr goes to a file.
pub struct ChildGuard {
    name: String,
    child: Child,
    stderr_path: PathBuf,
    stop: StopWith,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin null (unless already set), stdout null
    /// (unless already set) and stderr appended to `stderr_path`.
    pub fn spawn(name: &str, mut cmd: Command, stderr_path: &Path, stop: StopWith) -> ChildGuard {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", stderr_path.display()));
        cmd.stderr(Stdio::from(stderr));
        // Own process group: Apache's parent signals its whole group on
        // shutdown, which would otherwise include the test process.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().unwrap_or_else(|e| {
            // A missing tool fails the test, never skips it.
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (not installed? `make test` installs the test packages: \
                 scripts/install-test-deps.sh)"
            } else {
                ""
            };
            panic!("cannot start {name} ({cmd:?}): {e}{hint}")
        });
        ChildGuard {
            name: name.to_string(),
            child,
            stderr_path: stderr_path.to_path_buf(),
            stop,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// What the child wrote on stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// `Err` with the exit status and stderr when the child has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.try_wait() {
            None => Ok(()),
            Some(status) => Err(format!(
                "{} exited early ({status}); stderr ({}):\n{}",
                self.name,
                self.stderr_path.display(),
                self.stderr_text()
            )),
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Sends `signal` (no-op once the child has been reaped).
    pub fn signal(&mut self, signal: Signal) {
        if self.try_wait().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .arg(format!("-{}", signal.name()))
            .arg(self.child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` and waits up to `timeout` for the exit status; panics
    /// (after SIGKILL) when the child does not exit in time.
    pub fn stop_with(&mut self, signal: Signal, timeout: Duration) -> ExitStatus {
        self.signal(signal);
        match self.wait_timeout(timeout) {
            Some(status) => status,
            None => {
                self.kill_and_reap();
                panic!(
                    "{} did not exit within {timeout:?} of SIG{}; stderr:\n{}",
                    self.name,
                    signal.name(),
                    self.stderr_text()
                );
            }
        }
    }

    fn kill_and_reap(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let StopWith::Graceful(signal, grace) = self.stop {
            self.signal(signal);
            self.wait_timeout(grace);
        }
        self.kill_and_reap();
    }
}
