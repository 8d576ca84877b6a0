//! Upgrade in place (SPEC 10): on SIGUSR2 the running process starts the
//! binary it was started from and hands it its listeners and every
//! session over a private Unix socket; the sockets go as descriptors.
//!
//! The exchange, old process first:
//!
//! 1. both send `HELLO` and their handover version; the new process has
//!    checked its configuration before (with errors it exits, having taken
//!    nothing);
//! 2. `Listeners` with the listening sockets; the new process accepts on
//!    them and answers `Listening`; the old one stops accepting;
//! 3. `Counters`: the old process's counter values, carried on;
//! 4. per batch, `Expect` (the SessionIDs coming, so that a resume for one
//!    waits in the new process), one `Session` per session with its
//!    sockets, then `Sync`, answered by `Taken` with the count so far,
//!    then `Commit`. The new process rebuilds each session as it comes
//!    but runs none before `Commit`; the old one keeps its copy of every
//!    socket until it has sent `Commit`. So a session runs in exactly one
//!    process: a failure before `Commit` leaves the batch with the old
//!    process, which takes it back as it was (nothing has touched its
//!    connections meanwhile); after it, the batch is the new process's;
//! 5. `Done`, answered by `Taken`: the old process drains and exits 0.
//!
//! The new process exits at once on any failure before `Done`; the
//! sessions it runs are those of committed batches, which the old process
//! no longer holds.

mod channel;

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tether_wire::SessionId;

use self::channel::{Channel, MAX_FDS};
use crate::metrics::Metrics;
use crate::session::handover::{self, SessionState};
use crate::session::{prepare, restore, Home, Moved, Prepared, Registry};

/// What the old process runs again: the binary at the absolute path it
/// was started from, with the same arguments.
#[derive(Debug, Clone)]
pub struct Relaunch {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// The environment variable that tells a process it is the new side of
/// an upgrade; its standard input is then the channel.
pub const UPGRADE_ENV: &str = "TETHER_UPGRADE";

const HELLO: &[u8] = b"tether-handover";
/// How long a step of the exchange may take before the upgrade fails
/// (the new process loads its configuration within the first one).
const STEP: Duration = Duration::from_secs(30);
/// Sessions moved between two acknowledgements.
const BATCH: usize = 256;

/// A listening socket as it is handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ListenerRecord {
    pub(crate) addr: SocketAddr,
    pub(crate) kind: ListenerKind,
}

/// What a listening socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ListenerKind {
    Plain,
    Tls,
    Admin,
    /// The cluster's peer listener (SPEC 11).
    Peer,
}

#[derive(Debug, Serialize, Deserialize)]
enum Message {
    Listeners(Vec<ListenerRecord>),
    Listening,
    Counters(Vec<(String, f64)>),
    Expect(Vec<String>),
    Session(Box<SessionState>),
    Sync,
    Commit,
    Done,
    Taken(u64),
}

fn send(channel: &mut Channel, message: &Message, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    channel.send(&handover::encode(message), fds)
}

fn recv(channel: &mut Channel) -> io::Result<(Message, Vec<OwnedFd>)> {
    let (bytes, fds) = channel.recv()?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the other process closed the channel",
        )
    })?;
    let message = handover::decode(&bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    Ok((message, fds))
}

fn hello(channel: &mut Channel) -> io::Result<()> {
    let mut mine = HELLO.to_vec();
    mine.extend_from_slice(&handover::VERSION.to_be_bytes());
    channel.send(&mine, &[])?;
    let (theirs, _) = channel.recv()?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the other process ended before its hello (in the new one: a configuration with errors, or a failed start)",
        )
    })?;
    match theirs.strip_prefix(HELLO).map(<[u8; 4]>::try_from) {
        Some(Ok(v)) if u32::from_be_bytes(v) == handover::VERSION => Ok(()),
        Some(Ok(v)) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "handover version {} on the other side, {} here",
                u32::from_be_bytes(v),
                handover::VERSION
            ),
        )),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a tether handover",
        )),
    }
}

/// Blocking channel work from async code. On the multi-thread runtime
/// other tasks move to another worker meanwhile; the single-threaded
/// runtime (one core) waits, as the channel's peer is answering already.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

// ---------------------------------------------------------------- old side

/// An upgrade under way, seen from the old process.
pub(crate) struct Handing {
    channel: Channel,
    child: Child,
    started: Instant,
    moved: u64,
}

/// Starts the new process and hands it the listeners; returns once it
/// accepts on them. On `Err` nothing was handed over and the new process
/// is gone.
pub(crate) async fn start(
    relaunch: &Relaunch,
    listeners: &[(ListenerRecord, BorrowedFd<'_>)],
) -> Result<Handing, String> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socket pair: {e}"))?;
    let child = Command::new(&relaunch.program)
        .args(&relaunch.args)
        .env(UPGRADE_ENV, "1")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", relaunch.program.display()))?;
    tracing::info!(target: "tether", pid = child.id(), program = %relaunch.program.display(), "upgrade: new process started");
    let mut handing = Handing {
        channel: Channel::new(ours),
        child,
        started: Instant::now(),
        moved: 0,
    };
    let result = blocking(|| -> io::Result<()> {
        let channel = &mut handing.channel;
        channel.set_timeout(Some(STEP))?;
        hello(channel)?;
        let records: Vec<ListenerRecord> = listeners.iter().map(|(r, _)| *r).collect();
        let fds: Vec<BorrowedFd<'_>> = listeners.iter().map(|(_, fd)| *fd).collect();
        send(channel, &Message::Listeners(records), &[])?;
        for chunk in fds.chunks(MAX_FDS) {
            channel.send(&[], chunk)?;
        }
        match recv(channel)?.0 {
            Message::Listening => Ok(()),
            other => Err(unexpected(&other)),
        }
    });
    match result {
        Ok(()) => Ok(handing),
        Err(e) => Err(handing.abandon(e)),
    }
}

fn unexpected(m: &Message) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("unexpected {m:?}"))
}

impl Handing {
    /// The new process failed: it is stopped (if still there) and reaped,
    /// and the error says what happened.
    fn abandon(mut self, e: io::Error) -> String {
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        match status {
            Some(s) if !s.success() => format!("{e} (new process: {s})"),
            _ => e.to_string(),
        }
    }

    /// Hands over the old process's counters, then every session now
    /// live, in batches. On `Err` every session not acknowledged by the
    /// new process is running here again and the new process is gone.
    pub(crate) async fn move_sessions(
        &mut self,
        metrics: &Metrics,
        registry: &Registry,
        home: &Home,
        first: bool,
    ) -> Result<(), String> {
        if first {
            let counters = Message::Counters(metrics.counter_samples());
            let channel = &mut self.channel;
            blocking(|| send(channel, &counters, &[])).map_err(|e| e.to_string())?;
        }
        registry.set_handing_over(true);
        let handles = registry.handles();
        // Every SessionID first: a resume for one that comes to the new
        // process before its session does waits for it there.
        let ids = Message::Expect(handles.iter().map(|h| h.id.as_str().to_owned()).collect());
        let channel = &mut self.channel;
        if let Err(e) = blocking(|| send(channel, &ids, &[])) {
            registry.set_handing_over(false);
            return Err(self.fail(e));
        }
        for batch in handles.chunks(BATCH) {
            let waiting: Vec<_> = batch.iter().filter_map(|h| h.move_out()).collect();
            let mut unacked: Vec<Moved> = Vec::with_capacity(waiting.len());
            let mut failure = None;
            for moved in waiting {
                // A session that ended meanwhile sends nothing.
                let Ok(moved) = moved.await else { continue };
                if failure.is_none() {
                    let channel = &mut self.channel;
                    let fds: Vec<BorrowedFd<'_>> =
                        moved.sockets.iter().map(|s| s.as_fd()).collect();
                    let record = Message::Session(Box::new(moved.state.clone()));
                    failure = blocking(|| send(channel, &record, &fds)).err();
                }
                unacked.push(moved);
            }
            if failure.is_none() {
                let channel = &mut self.channel;
                let want = self.moved + unacked.len() as u64;
                failure = blocking(|| -> io::Result<()> {
                    send(channel, &Message::Sync, &[])?;
                    match recv(channel)?.0 {
                        Message::Taken(n) if n == want => {}
                        other => return Err(unexpected(&other)),
                    }
                    // From here the batch is the new process's: it starts
                    // the sessions once it reads this.
                    send(channel, &Message::Commit, &[])
                })
                .err();
            }
            if let Some(e) = failure {
                // Taken back: what the new process did not acknowledge.
                let mut kept = 0;
                for moved in unacked {
                    match restore(moved, home) {
                        Ok(_) => kept += 1,
                        Err(e) => {
                            tracing::error!(error = %e, "upgrade: a session could not be taken back")
                        }
                    }
                }
                tracing::warn!(kept, "upgrade: sessions not handed over stay here");
                registry.set_handing_over(false);
                return Err(self.fail(e));
            }
            self.moved += unacked.len() as u64;
        }
        Ok(())
    }

    fn fail(&mut self, e: io::Error) -> String {
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(s) if !s.success() => format!("{e} (new process: {s})"),
            _ => e.to_string(),
        }
    }

    /// The end of the handover: the new process confirms it has every
    /// session. Returns how many moved.
    pub(crate) async fn finish(mut self) -> Result<u64, String> {
        let want = self.moved;
        let channel = &mut self.channel;
        let done = blocking(|| -> io::Result<()> {
            send(channel, &Message::Done, &[])?;
            match recv(channel)?.0 {
                Message::Taken(n) if n == want => Ok(()),
                other => Err(unexpected(&other)),
            }
        });
        match done {
            Ok(()) => {
                tracing::info!(target: "tether", sessions = want, elapsed_ms = self.started.elapsed().as_millis() as u64, "upgrade: handed over; exiting");
                Ok(want)
            }
            Err(e) => Err(self.fail(e)),
        }
    }
}

// ---------------------------------------------------------------- new side

/// An upgrade under way, seen from the new process.
pub(crate) struct Taking {
    channel: Channel,
    started: Instant,
    /// The listening sockets handed over, by address.
    listeners: Vec<(ListenerRecord, OwnedFd)>,
}

impl Taking {
    /// Greets the old process (its standard input is the channel) and
    /// takes its listening sockets.
    pub(crate) fn connect(stream: UnixStream) -> Result<Taking, String> {
        let mut channel = Channel::new(stream);
        let started = Instant::now();
        let listeners = (|| -> io::Result<Vec<(ListenerRecord, OwnedFd)>> {
            channel.set_timeout(Some(STEP))?;
            hello(&mut channel)?;
            let records = match recv(&mut channel)?.0 {
                Message::Listeners(r) => r,
                other => return Err(unexpected(&other)),
            };
            let mut fds = Vec::new();
            while fds.len() < records.len() {
                let (bytes, more) = channel.recv()?.ok_or(io::ErrorKind::UnexpectedEof)?;
                if !bytes.is_empty() || more.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "listener sockets",
                    ));
                }
                fds.extend(more);
            }
            if fds.len() != records.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "listener sockets",
                ));
            }
            Ok(records.into_iter().zip(fds).collect())
        })()
        .map_err(|e| format!("upgrade: {e}"))?;
        Ok(Taking {
            channel,
            started,
            listeners,
        })
    }

    /// The handed-over listening socket for `addr`, if there is one.
    pub(crate) fn listener(&mut self, addr: SocketAddr, kind: ListenerKind) -> Option<OwnedFd> {
        let at = self
            .listeners
            .iter()
            .position(|(r, _)| r.addr == addr && r.kind == kind)?;
        Some(self.listeners.swap_remove(at).1)
    }

    /// Tells the old process that this one accepts now, then takes every
    /// session it sends. Any failure ends this process at once: the old
    /// one still holds every connection and goes on serving.
    pub(crate) async fn receive(mut self, metrics: Arc<Metrics>, home: Home) {
        // Before `Listening`: the old process moves sessions (and closes
        // TLS clients) as soon as it has sent the list, which this process
        // reads a moment later.
        home.registry.list_coming();
        let sessions = blocking(|| self.take_all(&metrics, &home));
        match sessions {
            Ok(n) => {
                home.registry.transit_over();
                metrics.upgrade(true);
                metrics.handover_sessions(n);
                tracing::info!(target: "tether", sessions = n, elapsed_ms = self.started.elapsed().as_millis() as u64, "upgrade: handover complete");
            }
            Err(e) => {
                tracing::error!(target: "tether", error = %e, "upgrade failed in the new process; exiting, the old process keeps serving");
                std::process::exit(1);
            }
        }
    }

    fn take_all(&mut self, metrics: &Metrics, home: &Home) -> io::Result<u64> {
        // The listeners dropped here were in the old configuration only.
        self.listeners.clear();
        send(&mut self.channel, &Message::Listening, &[])?;
        // Sessions wait as long as the old process needs for its own.
        self.channel.set_timeout(None)?;
        let mut taken = 0u64;
        let mut parked: Vec<Prepared> = Vec::new();
        loop {
            let (message, fds) = recv(&mut self.channel)?;
            match message {
                Message::Counters(c) => metrics.carry(c),
                Message::Expect(ids) => home.registry.expect(
                    ids.iter()
                        .filter_map(|id| SessionId::parse(id.as_bytes()).ok()),
                ),
                Message::Session(state) => {
                    if fds.len() != state.descriptors() {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "a session came without its sockets",
                        ));
                    }
                    let moved = Moved {
                        state: *state,
                        sockets: fds,
                    };
                    // One session that cannot be used is lost with a log
                    // line; the others still come.
                    match prepare(moved, home) {
                        Ok(session) => parked.push(session),
                        Err(e) => tracing::error!(error = %e, "upgrade: a session was lost"),
                    }
                    taken += 1;
                }
                Message::Sync => send(&mut self.channel, &Message::Taken(taken), &[])?,
                Message::Commit => {
                    for session in parked.drain(..) {
                        session.start();
                    }
                }
                Message::Done => {
                    for session in parked.drain(..) {
                        session.start();
                    }
                    // systemd learns the new main PID before the old
                    // process, told below, exits.
                    crate::notify::main_pid();
                    send(&mut self.channel, &Message::Taken(taken), &[])?;
                    return Ok(taken);
                }
                other => return Err(unexpected(&other)),
            }
        }
    }
}
