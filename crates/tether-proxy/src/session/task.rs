//! The session task: one per session, owning the worker connection, the
//! replay window, the queues and the counters (DESIGN "One task per
//! session"). Client connections attach and detach; the task never waits
//! on one of them, so a takeover is answered whatever the state of the
//! older connection (SPEC 4 "Takeover", "Promptness").
//!
//! States (derived, never stored twice): *attached* (a link), *detached*
//! (no link; the grace timer runs), *finishing* (the worker is gone but
//! lines are still owed to the client), then the task ends.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tether_wire::{LineQueue, ReplayWindow, SessionId};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use super::balance::WorkerPin;
use super::end::Closing;
pub(crate) use super::end::EndReason;
use super::link::{ClientRead, Link, NotUtf8};
use super::mailbox::Mailbox;
use super::registry::{Registry, SessionHandle, SessionSlot};
use super::worker_side::{MessageTarget, WorkerGone, WorkerSide};
use crate::config::PersistentConfig;
use crate::metrics::{Direction, Limit, Metrics, SessionState, VhostMetrics};

/// Worker output read ahead while attached, beyond what the client link
/// has queued: the rest stays in the worker's socket (backpressure).
const ATTACHED_AHEAD: usize = 64 * 1024;
/// Bytes queued on the client link before the task stops feeding it.
const LINK_HIGH: usize = 16 * 1024;
/// A client link that makes no write progress this long while output is
/// pending is dropped (SPEC 4 "Liveness of native clients").
const WRITE_STALL: Duration = Duration::from_secs(30);
/// Steps before the task yields to others.
const BUDGET: usize = 64;

/// Messages to a session task.
pub(crate) enum Command {
    /// A resume (or takeover) with the client's count.
    Resume {
        received: u64,
        reply: oneshot::Sender<Result<Resumed, Gone>>,
    },
    /// The client connection of generation `gen`, after its answer head.
    /// Boxed so that the command channel's slots stay small: every idle
    /// session holds one.
    Attach { gen: u64, link: Box<Link> },
    /// `DELETE`: the worker connection is closed before the reply.
    End { reply: oneshot::Sender<()> },
    /// SIGTERM: the worker connection is closed, an attached client gets
    /// its remaining lines and EOF (WebSocket: close 1012).
    Shutdown,
    /// Push API: lines appended to the session's output as channel lines.
    Push {
        lines: Vec<Bytes>,
        reply: oneshot::Sender<Result<(), PushRefused>>,
    },
    /// Push API `DELETE`: the worker side ends as a worker's end does.
    AdminEnd { reply: oneshot::Sender<bool> },
    /// The opening transport found the session unusable (a WebSocket
    /// client and an initial body that is not UTF-8): it ends at once.
    Fail(EndReason),
}

/// A successful resume: the answer carries `delivered`; the connection that
/// gets it attaches as generation `gen`.
#[derive(Debug)]
pub(crate) struct Resumed {
    pub(crate) delivered: u64,
    pub(crate) gen: u64,
}

/// A resume that cannot be served; the session has ended.
#[derive(Debug)]
pub(crate) struct Gone;

/// Why a push was not taken (nothing of it was appended).
#[derive(Debug)]
pub(crate) enum PushRefused {
    /// The worker side has ended (worker end, `DELETE`): `404`.
    Ended,
    /// It would take unsent output over `detached_backlog`: `503`.
    Full,
}

/// Everything a new session starts with.
pub(crate) struct Opening {
    pub(crate) id: SessionId,
    pub(crate) vhost: Arc<str>,
    pub(crate) hosts: Arc<[String]>,
    pub(crate) config: Arc<PersistentConfig>,
    pub(crate) peer: SocketAddr,
    pub(crate) worker: WorkerSide,
    /// Message mode: where requests go (for the final `close` event).
    pub(crate) message: Option<Arc<MessageTarget>>,
    pub(crate) slot: SessionSlot,
    pub(crate) pin: WorkerPin,
    pub(crate) registry: Arc<Registry>,
    pub(crate) metrics: Arc<VhostMetrics>,
}

/// Lines per second in one direction; over the limit, reading waits for
/// the next one-second window (backpressure, never a drop).
struct RateGate {
    limit: u32,
    count: u32,
    window_end: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl RateGate {
    fn new(limit: u32) -> RateGate {
        RateGate {
            limit,
            count: 0,
            window_end: None,
            sleep: None,
        }
    }

    /// Whether a line may be read now; the first refusal of a window is
    /// counted as a `line_rate` limit hit.
    fn allow(&mut self, cx: &mut Context<'_>, metrics: &Metrics) -> bool {
        if self.count < self.limit {
            return true;
        }
        let end = self.window_end.unwrap_or_else(Instant::now);
        if Instant::now() >= end {
            self.count = 0;
            self.window_end = None;
            self.sleep = None;
            return true;
        }
        let sleep = self.sleep.get_or_insert_with(|| {
            metrics.limit_hit(Limit::LineRate);
            Box::pin(tokio::time::sleep_until(end))
        });
        if sleep.as_mut().poll(cx).is_ready() {
            self.count = 0;
            self.window_end = None;
            self.sleep = None;
            return true;
        }
        false
    }

    fn note(&mut self) {
        let now = Instant::now();
        if self.window_end.is_none_or(|end| now >= end) {
            self.window_end = Some(now + Duration::from_secs(1));
            self.count = 0;
        }
        self.count += 1;
    }
}

/// Per-session counts for the end-of-session log line.
#[derive(Default)]
struct Stats {
    lines_to_worker: u64,
    bytes_to_worker: u64,
    lines_to_client: u64,
    bytes_to_client: u64,
    resumes: u64,
    takeovers: u64,
}

struct Session {
    id: SessionId,
    vhost: Arc<str>,
    config: Arc<PersistentConfig>,
    peer: SocketAddr,
    started: Instant,
    mailbox: Arc<Mailbox>,
    worker: Option<WorkerSide>,
    /// Message mode: where `Session-Event: close` goes when the session ends.
    message: Option<Arc<MessageTarget>>,
    /// Client lines delivered to the worker (`Session-Received`).
    delivered: u64,
    /// Worker lines not yet sent toward the client, stored back to back
    /// so that short lines cost their bytes and no more.
    backlog: LineQueue,
    replay: ReplayWindow,
    link: Option<Link>,
    /// The newest resume's generation, and its count while its link is
    /// still on the way.
    gen: u64,
    awaiting: Option<u64>,
    grace: Option<Pin<Box<Sleep>>>,
    write_stall: Option<Pin<Box<Sleep>>>,
    /// Why the session ends once its remaining lines are out, when the
    /// gateway (not the worker) closed the worker side.
    ending: Option<EndReason>,
    worker_rate: RateGate,
    client_rate: RateGate,
    stats: Stats,
    metrics: Arc<VhostMetrics>,
    /// The state this session is counted in by `tether_sessions`.
    counted_as: Option<SessionState>,
    registry: Arc<Registry>,
    _slot: SessionSlot,
    _pin: WorkerPin,
}

/// Starts the task of a session that just opened; it waits for its first
/// client link (generation 0) and is reachable through the handle.
pub(crate) fn spawn(opening: Opening) -> SessionHandle {
    let mailbox = Arc::new(Mailbox::default());
    let handle = SessionHandle {
        id: opening.id.clone(),
        hosts: opening.hosts,
        mailbox: mailbox.clone(),
        max_line: opening.config.max_line,
    };
    let config = opening.config;
    let session = Session {
        id: opening.id,
        vhost: opening.vhost,
        peer: opening.peer,
        started: Instant::now(),
        mailbox,
        worker: Some(opening.worker),
        message: opening.message,
        delivered: 0,
        // The ring may grow to what reading can queue: the larger of the
        // two read limits (plus the one line that crosses it).
        backlog: LineQueue::new(config.detached_backlog.max(ATTACHED_AHEAD)),
        replay: ReplayWindow::new(config.replay_window),
        link: None,
        gen: 0,
        awaiting: Some(0),
        // Nothing carried yet: the short grace of an unused session.
        grace: Some(Box::pin(tokio::time::sleep(
            config.resume_grace.min(config.unused_grace),
        ))),
        write_stall: None,
        ending: None,
        worker_rate: RateGate::new(config.max_lines_per_second),
        client_rate: RateGate::new(config.max_lines_per_second),
        config,
        stats: Stats::default(),
        metrics: opening.metrics,
        counted_as: None,
        registry: opening.registry,
        _slot: opening.slot,
        _pin: opening.pin,
    };
    // In the index before the task runs, so that its removal at the end
    // always comes after.
    session.registry.insert(handle.clone());
    tokio::spawn(session.run());
    handle
}

impl Session {
    async fn run(mut self) {
        self.count_as(Some(SessionState::Detached));
        let reason = std::future::poll_fn(|cx| self.poll_session(cx)).await;
        if let Some(link) = self.link.take() {
            link.abort(Closing::Ended(reason));
        }
        self.mailbox.close();
        self.registry.remove(&self.id);
        if let Some(target) = self.message.take() {
            target.send_close();
        }
        self.count_as(None);
        self.metrics.session_ended(reason.as_str());
        self.metrics.backlog_bytes(-(self.backlog.bytes() as i64));
        self.metrics
            .replay_bytes(-(self.replay.held_bytes() as i64));
        let s = &self.stats;
        tracing::info!(
            target: "tether::session",
            vhost = %self.vhost,
            client = %self.peer,
            session = ?self.id,
            reason = reason.as_str(),
            duration_ms = self.started.elapsed().as_millis() as u64,
            lines_to_worker = s.lines_to_worker,
            bytes_to_worker = s.bytes_to_worker,
            lines_to_client = s.lines_to_client,
            bytes_to_client = s.bytes_to_client,
            resumes = s.resumes,
            takeovers = s.takeovers,
            "session ended"
        );
    }

    fn poll_session(&mut self, cx: &mut Context<'_>) -> Poll<EndReason> {
        for _ in 0..BUDGET {
            match self.step(cx) {
                Err(reason) => return Poll::Ready(reason),
                Ok(true) => continue,
                Ok(false) => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// One pass over every source; `Ok(true)` if anything moved.
    fn step(&mut self, cx: &mut Context<'_>) -> Result<bool, EndReason> {
        let mut moved = false;
        while let Poll::Ready(cmd) = self.mailbox.poll_recv(cx) {
            self.command(cmd)?;
            moved = true;
        }
        if self
            .link
            .as_mut()
            .is_some_and(|l| l.poll_dead(cx).is_ready())
        {
            tracing::debug!(session = ?self.id, "no pong for 30 s: detached");
            self.detached();
            moved = true;
        }
        moved |= self.read_worker(cx)?;
        moved |= self.feed_link()?;
        moved |= self.write_link(cx);
        moved |= self.read_client(cx)?;
        moved |= self.write_worker(cx);
        if self.worker.is_none() && self.backlog.is_empty() && !self.replay.is_replaying() {
            let reason = self.finish_reason();
            if let Some(link) = &mut self.link {
                // Finishing and attached: every line written, then EOF
                // (WebSocket: close 1000, or 1012 when the gateway stops).
                if link.poll_finish(cx, Closing::Ended(reason)).is_ready() {
                    self.link = None;
                    return Err(reason);
                }
            }
        }
        if self.link.is_none() {
            let grace_time = self.grace_time();
            let grace = self
                .grace
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(grace_time)));
            if grace.as_mut().poll(cx).is_ready() {
                return Err(if self.worker.is_none() {
                    self.finish_reason()
                } else {
                    EndReason::GraceExpired
                });
            }
        }
        Ok(moved)
    }

    fn count_as(&mut self, state: Option<SessionState>) {
        if self.counted_as == state {
            return;
        }
        if let Some(old) = self.counted_as {
            self.metrics.session_state(old, -1);
        }
        if let Some(new) = state {
            self.metrics.session_state(new, 1);
        }
        self.counted_as = state;
    }

    fn finish_reason(&self) -> EndReason {
        self.ending.unwrap_or(EndReason::WorkerEnd)
    }

    fn command(&mut self, cmd: Command) -> Result<(), EndReason> {
        match cmd {
            Command::Resume { received, reply } => {
                if !self.replay.can_resume(received) {
                    let _ = reply.send(Err(Gone));
                    return Err(EndReason::ResumeGone);
                }
                if let Some(old) = self.link.take() {
                    old.abort(Closing::TakenOver);
                    self.stats.takeovers += 1;
                    self.metrics.takeover();
                }
                self.detached();
                self.gen += 1;
                self.awaiting = Some(received);
                self.stats.resumes += 1;
                let _ = reply.send(Ok(Resumed {
                    delivered: self.delivered,
                    gen: self.gen,
                }));
            }
            Command::Attach { gen, link } => {
                let Some(from) = self.awaiting.filter(|_| gen == self.gen) else {
                    // A connection overtaken before it could attach.
                    return Ok(());
                };
                self.awaiting = None;
                // Replayed as the client takes lines, like live ones: a
                // client that resumes and does not read must not make the
                // link hold a copy of the whole window.
                self.replay.start_replay(from);
                self.link = Some(*link);
                self.count_as(Some(SessionState::Attached));
                self.grace = None;
                self.write_stall = None;
            }
            Command::End { reply } => {
                self.worker = None;
                self.ending = Some(EndReason::ClientEnd);
                // Ended now: an attached client still gets its lines, but
                // no request can reach the session any more (a resume gets
                // the 410 of SPEC 4).
                self.mailbox.close();
                let _ = reply.send(());
                if self.link.is_none() {
                    return Err(EndReason::ClientEnd);
                }
            }
            Command::Fail(reason) => return Err(reason),
            Command::Push { lines, reply } => {
                if self.worker.is_none() {
                    let _ = reply.send(Err(PushRefused::Ended));
                    return Ok(());
                }
                let size: usize = lines.iter().map(Bytes::len).sum();
                let unsent = self.backlog.bytes() + self.link.as_ref().map_or(0, Link::pending);
                if unsent + size > self.config.detached_backlog {
                    let _ = reply.send(Err(PushRefused::Full));
                    return Ok(());
                }
                for line in lines {
                    self.stats.lines_to_client += 1;
                    self.stats.bytes_to_client += line.len() as u64;
                    self.metrics.line(Direction::ToClient, line.len());
                    self.metrics.backlog_bytes(line.len() as i64);
                    self.backlog.push_back(&line);
                }
                let _ = reply.send(Ok(()));
            }
            Command::AdminEnd { reply } => {
                let live = self.worker.take().is_some();
                if live {
                    self.ending = Some(EndReason::Admin);
                }
                let _ = reply.send(live);
            }
            Command::Shutdown => {
                self.worker = None;
                self.ending = Some(EndReason::Shutdown);
                self.mailbox.close();
                if self.link.is_none() {
                    return Err(EndReason::Shutdown);
                }
            }
        }
        Ok(())
    }

    /// The client link is gone (or replaced): grace starts.
    fn detached(&mut self) {
        self.link = None;
        self.replay.stop_replay();
        self.count_as(Some(SessionState::Detached));
        self.write_stall = None;
        self.grace = Some(Box::pin(tokio::time::sleep(self.grace_time())));
    }

    /// `resume_grace`, or `unused_grace` when that is shorter and the
    /// channel never carried a line: an open-and-drop costs the attacker
    /// nothing, so it may hold a worker connection only briefly.
    fn grace_time(&self) -> std::time::Duration {
        let used = self.stats.lines_to_worker > 0 || self.stats.lines_to_client > 0;
        if used {
            self.config.resume_grace
        } else {
            self.config.resume_grace.min(self.config.unused_grace)
        }
    }

    fn read_worker(&mut self, cx: &mut Context<'_>) -> Result<bool, EndReason> {
        let mut moved = false;
        loop {
            let Some(worker) = &mut self.worker else {
                return Ok(moved);
            };
            let limit = if self.link.is_some() {
                ATTACHED_AHEAD
            } else {
                self.config.detached_backlog
            };
            if self.backlog.bytes() >= limit || !self.worker_rate.allow(cx, self.registry.metrics())
            {
                return Ok(moved);
            }
            match worker.poll_line(cx) {
                Poll::Pending => return Ok(moved),
                Poll::Ready(Ok(line)) => {
                    moved = true;
                    self.stats.lines_to_client += 1;
                    self.stats.bytes_to_client += line.len() as u64;
                    self.worker_rate.note();
                    self.metrics.line(Direction::ToClient, line.len());
                    self.metrics.backlog_bytes(line.len() as i64);
                    self.backlog.push_back(&line);
                }
                Poll::Ready(Err(gone)) => {
                    // The worker side is over; whole lines are still owed
                    // to the client (SPEC 2 "Worker end", SPEC 6).
                    self.worker = None;
                    self.ending.get_or_insert(match gone {
                        WorkerGone::Closed => EndReason::WorkerEnd,
                        WorkerGone::Status(s) => EndReason::WorkerStatus(s),
                        WorkerGone::Unreachable => EndReason::WorkerUnreachable,
                        WorkerGone::LineTooLong => return Err(EndReason::LineTooLong),
                    });
                    return Ok(true);
                }
            }
        }
    }

    /// Moves the lines a resume replays, then worker lines, onto the client
    /// link; from here worker lines count as sent and are kept for replay.
    fn feed_link(&mut self) -> Result<bool, EndReason> {
        let Some(link) = &mut self.link else {
            return Ok(false);
        };
        let mut moved = false;
        let replay = &mut self.replay;
        while link.pending() < LINK_HIGH {
            if let Some(line) = replay.next_replay() {
                if link.queue(&line).is_err() {
                    // A session opened natively, resumed over WebSocket,
                    // with lines a browser cannot take.
                    return Err(EndReason::ProtocolError);
                }
                moved = true;
                continue;
            }
            let held = replay.held_bytes();
            let fed = self.backlog.pop_front_with(|line| {
                let queued = link.queue(line);
                if queued.is_ok() {
                    replay.push(line);
                }
                (line.len(), queued)
            });
            let Some((len, queued)) = fed else {
                break;
            };
            self.metrics.backlog_bytes(-(len as i64));
            if let Err(NotUtf8) = queued {
                return Err(EndReason::ProtocolError);
            }
            self.metrics
                .replay_bytes(replay.held_bytes() as i64 - held as i64);
            moved = true;
        }
        Ok(moved)
    }

    fn write_link(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(link) = &mut self.link else {
            return false;
        };
        if link.pending() == 0 {
            self.write_stall = None;
            return false;
        }
        match link.poll_write_some(cx) {
            Poll::Ready(Ok(())) => {
                self.write_stall = None;
                true
            }
            Poll::Ready(Err(_)) => {
                self.detached();
                true
            }
            Poll::Pending => {
                let stall = self
                    .write_stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
                if stall.as_mut().poll(cx).is_ready() {
                    tracing::debug!(session = ?self.id, "client made no write progress: detached");
                    self.detached();
                    return true;
                }
                false
            }
        }
    }

    fn read_client(&mut self, cx: &mut Context<'_>) -> Result<bool, EndReason> {
        let mut moved = false;
        loop {
            let Some(link) = &mut self.link else {
                return Ok(moved);
            };
            if !self.worker.as_ref().is_none_or(WorkerSide::can_take)
                || !self.client_rate.allow(cx, self.registry.metrics())
            {
                return Ok(moved);
            }
            let queued = link.pending();
            match link.poll_line(cx) {
                // A pong queued while reading must go out now, not with the
                // next line.
                Poll::Pending => return Ok(moved || link.pending() > queued),
                Poll::Ready(ClientRead::Line(line)) => {
                    moved = true;
                    // After the worker's end, client lines have nowhere to go.
                    if let Some(worker) = &mut self.worker {
                        self.client_rate.note();
                        self.metrics.line(Direction::ToWorker, line.len());
                        self.stats.lines_to_worker += 1;
                        self.stats.bytes_to_worker += line.len() as u64;
                        self.delivered += 1;
                        worker.deliver(&line);
                    }
                }
                Poll::Ready(ClientRead::Ack(n)) => {
                    moved = true;
                    let held = self.replay.held_bytes();
                    self.replay.ack(n.min(self.replay.sent()));
                    self.metrics
                        .replay_bytes(self.replay.held_bytes() as i64 - held as i64);
                }
                Poll::Ready(ClientRead::Gone) => {
                    if let Some(link) = self.link.take() {
                        link.release();
                    }
                    self.detached();
                    return Ok(true);
                }
                Poll::Ready(ClientRead::End) => {
                    // Close 1000 from the client: answered at once, unsent
                    // lines discarded, the worker closed (SPEC 3).
                    return Err(EndReason::ClientEnd);
                }
                Poll::Ready(ClientRead::TooLong) => return Err(EndReason::LineTooLong),
                Poll::Ready(ClientRead::Broken) => return Err(EndReason::ProtocolError),
            }
        }
    }

    fn write_worker(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(worker) = &mut self.worker else {
            return false;
        };
        match worker.poll_send(cx) {
            Ok(moved) => moved,
            Err(_) => {
                // The worker cannot take lines any more: its end.
                self.worker = None;
                self.ending.get_or_insert(EndReason::WorkerEnd);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests;
