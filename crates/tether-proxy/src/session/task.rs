//! The session task: one per session, owning the worker connection, the
//! replay window, the queues and the counters (DESIGN "One task per
//! session"). Client connections attach and detach; the task never waits
//! on one of them, so a takeover is answered whatever the state of the
//! older connection (SPEC 4 "Takeover", "Promptness").
//!
//! Its life is SPEC's `Opening -> Attached <-> Detached -> Finishing ->
//! Closed`, in two enums: [`State`], whether a client link is attached
//! (changed only by [`Session::transition`], which does what goes with a
//! change once), and [`Phase`], whether the worker side is still live
//! (changed only by [`Session::finish`]). Finishing is the phase in which
//! the worker side is gone but lines are still owed to the client.

use std::future::Future;
use std::mem;
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
use super::rate::RateGate;
use super::registry::{Registry, SessionHandle, SessionSlot};
use super::worker_side::{MessageTarget, Unfinished, WorkerGone, WorkerSide};
use crate::config::PersistentConfig;
use crate::metrics::{Direction, SessionState, VhostMetrics};

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
    /// Upgrade (SPEC 10): the session leaves this process, as soon as no
    /// message request is on its way; its state comes back on `reply`.
    Move { reply: oneshot::Sender<Moved> },
    /// The HTTP transport's up channel (SPEC 13): `lines` follow the
    /// client's `sent` lines; those the session already delivered are
    /// skipped. `ack` is the down channel's count (like WebSocket `ack`).
    /// Taken whether or not a link is attached.
    Post {
        sent: u64,
        lines: Vec<Bytes>,
        ack: Option<u64>,
        reply: oneshot::Sender<Posted>,
    },
}

/// What became of a POST's lines (SPEC 13).
#[derive(Debug)]
pub(crate) enum Posted {
    /// Taken (those at or below the count skipped): the new count.
    Taken(u64),
    /// The POST starts after a line the session never got: nothing taken,
    /// the count to resend from.
    Gap(u64),
    /// Too many POSTs of this session are waiting already.
    Busy,
}

/// POSTs a session holds while their lines wait for the worker or the
/// rate limit; a client has one or two in flight, a retry included.
const MAX_POSTS: usize = 8;

/// A POST whose lines are being taken, in arrival order; its count is
/// checked when it reaches the front, after the POSTs before it.
struct Post {
    sent: u64,
    lines: std::collections::VecDeque<Bytes>,
    checked: bool,
    reply: oneshot::Sender<Posted>,
}

/// How the session task stops: the session ended, or it moves to another
/// process.
enum Exit {
    Ended(EndReason),
    Moving,
}

impl From<EndReason> for Exit {
    fn from(reason: EndReason) -> Exit {
        Exit::Ended(reason)
    }
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
    /// The transport it opened over, for the end log line.
    pub(crate) transport: &'static str,
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

type Timer = Pin<Box<Sleep>>;

/// Whether a client link is attached (SPEC 2, 4). Changed only by
/// [`Session::transition`].
enum State {
    /// Opened (generation 0) or resumed: waiting for the link of the
    /// newest generation, which has received `from` lines; the grace
    /// timer runs meanwhile.
    Awaiting { from: u64, grace: Timer },
    /// A client link takes the session's lines; `write_stall` runs while
    /// it makes no write progress with output pending. The link stays in
    /// the box it came in: a session without one stays small.
    Attached {
        link: Box<Link>,
        write_stall: Option<Timer>,
    },
    /// The client left; the grace timer runs.
    Detached { grace: Timer },
    /// Before the session opened and after it ended: counted nowhere.
    Closed,
}

/// What [`Session::transition`] moves to.
enum To {
    Awaiting { from: u64 },
    Attached { link: Box<Link>, from: u64 },
    Detached,
    Closed,
}

/// Whether the worker side is live. Changed only by [`Session::finish`].
enum Phase {
    Live(WorkerSide),
    /// The worker side is gone (closed by the worker or by the gateway):
    /// the session ends for this reason once its remaining lines are out
    /// to an attached client, or when a detached one's grace runs out.
    Finishing(EndReason),
}

struct Session {
    id: SessionId,
    vhost: Arc<str>,
    /// The hosts of the vhost that opened it (they move with it).
    hosts: Arc<[String]>,
    config: Arc<PersistentConfig>,
    peer: SocketAddr,
    started: Instant,
    mailbox: Arc<Mailbox>,
    state: State,
    phase: Phase,
    /// Message mode: where `Session-Event: close` goes when the session ends.
    message: Option<Arc<MessageTarget>>,
    /// Message mode: the request that was in flight when the worker side
    /// was closed; it finishes before the close event goes.
    unfinished: Option<Unfinished>,
    /// Client lines delivered to the worker (`Session-Received`).
    delivered: u64,
    /// Worker lines not yet sent toward the client, stored back to back
    /// so that short lines cost their bytes and no more.
    backlog: LineQueue,
    replay: ReplayWindow,
    /// The newest resume's generation: only its link may attach.
    gen: u64,
    worker_rate: RateGate,
    client_rate: RateGate,
    stats: Stats,
    metrics: Arc<VhostMetrics>,
    registry: Arc<Registry>,
    /// Upgrade: where the session's state goes once it can move.
    moving: Option<oneshot::Sender<Moved>>,
    /// Up channel POSTs whose lines are not all taken yet (SPEC 13).
    posts: std::collections::VecDeque<Post>,
    /// The transport of the newest client link (the one it opened with
    /// until a link attaches), for the end log line.
    transport: &'static str,
    _slot: SessionSlot,
    _pin: WorkerPin,
}

/// Starts the task of a session that just opened; it waits for its first
/// client link (generation 0) and is reachable through the handle.
pub(crate) fn spawn(opening: Opening) -> SessionHandle {
    let mailbox = Arc::new(Mailbox::default());
    let handle = SessionHandle {
        id: opening.id.clone(),
        hosts: opening.hosts.clone(),
        mailbox: mailbox.clone(),
        max_line: opening.config.max_line,
    };
    let config = opening.config;
    let mut session = Session {
        id: opening.id,
        vhost: opening.vhost,
        hosts: opening.hosts,
        peer: opening.peer,
        started: Instant::now(),
        mailbox,
        state: State::Closed,
        phase: Phase::Live(opening.worker),
        message: opening.message,
        unfinished: None,
        delivered: 0,
        // The ring may grow to what reading can queue: the larger of the
        // two read limits (plus the one line that crosses it).
        backlog: LineQueue::new(config.detached_backlog.max(ATTACHED_AHEAD)),
        replay: ReplayWindow::new(config.replay_window),
        gen: 0,
        worker_rate: RateGate::new(config.max_lines_per_second),
        client_rate: RateGate::new(config.max_lines_per_second),
        config,
        stats: Stats::default(),
        metrics: opening.metrics,
        registry: opening.registry,
        moving: None,
        posts: Default::default(),
        transport: opening.transport,
        _slot: opening.slot,
        _pin: opening.pin,
    };
    // Opening: the answer is on its way to the client, whose link will be
    // generation 0 and has received nothing.
    session.transition(To::Awaiting { from: 0 });
    // In the index before the task runs, so that its removal at the end
    // always comes after.
    session.registry.insert(handle.clone());
    tokio::spawn(session.run());
    handle
}

/// A session's task: the session itself, polled until it ends. Written
/// by hand rather than as an `async fn` taking the session, whose state
/// machine held the session twice (the argument and its local), which
/// made every idle session's task twice its size (1.6 KiB, not 0.8).
struct Running(Option<Session>);

impl std::future::Future for Running {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(session) = self.0.as_mut() else {
            return Poll::Ready(());
        };
        let exit = std::task::ready!(session.poll_session(cx));
        if let Some(session) = self.0.take() {
            session.exit(exit);
        }
        Poll::Ready(())
    }
}

impl Session {
    fn run(self) -> Running {
        Running(Some(self))
    }

    /// What follows the end of the session's loop: moving out (upgrade),
    /// or ending it for good.
    fn exit(mut self, exit: Exit) {
        let reason = match exit {
            Exit::Ended(reason) => reason,
            Exit::Moving => return self.move_out(),
        };
        if let Some(link) = self.transition(To::Closed) {
            link.abort(Closing::Ended(reason));
        }
        self.mailbox.close();
        self.registry.remove(&self.id);
        if let Phase::Live(_) = self.phase {
            self.finish(reason);
        }
        if let Some(target) = self.message.take() {
            target.send_close(self.unfinished.take());
        }
        self.metrics.session_ended(reason.metric_kind());
        self.metrics.session_lived(self.started.elapsed());
        self.metrics.backlog_bytes(-(self.backlog.bytes() as i64));
        self.metrics
            .replay_bytes(-(self.replay.held_bytes() as i64));
        let s = &self.stats;
        tracing::info!(
            target: "tether::session",
            vhost = %self.vhost,
            client = %self.peer,
            session = %self.id,
            transport = self.transport,
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

    /// The one way the state changes, doing once what goes with a change:
    /// the `tether_sessions` gauge, a fresh grace timer on entering a state
    /// without a link (`grace_time()` as of now), a write-stall timer that
    /// belongs to one attached link, and the replay, started from the
    /// client's count when a link attaches and stopped when it leaves.
    /// Gives back the link that was attached, for the caller to close as
    /// its cause requires (takeover, client gone, dead).
    fn transition(&mut self, to: To) -> Option<Box<Link>> {
        let old = mem::replace(&mut self.state, State::Closed);
        let was = gauge_of(&old);
        let link = match old {
            State::Attached { link, .. } => {
                self.replay.stop_replay();
                Some(link)
            }
            // The grace timer and the awaited count go with the state.
            State::Awaiting { .. } | State::Detached { .. } | State::Closed => None,
        };
        self.state = match to {
            To::Awaiting { from } => State::Awaiting {
                from,
                grace: self.grace_timer(),
            },
            To::Attached { link, from } => {
                // Replayed as the client takes lines, like live ones: a
                // client that resumes and does not read must not make the
                // link hold a copy of the whole window.
                self.replay.start_replay(from);
                State::Attached {
                    link,
                    write_stall: None,
                }
            }
            To::Detached => State::Detached {
                grace: self.grace_timer(),
            },
            To::Closed => State::Closed,
        };
        let now = gauge_of(&self.state);
        if was != now {
            if let Some(old) = was {
                self.metrics.session_state(old, -1);
            }
            if let Some(new) = now {
                self.metrics.session_state(new, 1);
            }
        }
        link
    }

    /// The one way into finishing: the worker side, if still live, is
    /// closed (dropped) now, and the session ends for `reason` once the
    /// client has its lines. A gateway's end (`DELETE`, SIGTERM) also
    /// renames the end of a session already finishing.
    fn finish(&mut self, reason: EndReason) {
        let old = mem::replace(&mut self.phase, Phase::Finishing(reason));
        if let Phase::Live(WorkerSide::Message(side)) = old {
            self.unfinished = side.unfinished();
        }
    }

    fn attached(&self) -> bool {
        matches!(self.state, State::Attached { .. })
    }

    fn grace_timer(&self) -> Timer {
        Box::pin(tokio::time::sleep(self.grace_time()))
    }

    /// `resume_grace`, or `unused_grace` when that is shorter and the
    /// channel never carried a line: an open-and-drop costs the attacker
    /// nothing, so it may hold a worker connection only briefly.
    fn grace_time(&self) -> Duration {
        let used = self.stats.lines_to_worker > 0 || self.stats.lines_to_client > 0;
        if used {
            self.config.resume_grace
        } else {
            self.config.resume_grace.min(self.config.unused_grace)
        }
    }

    fn poll_session(&mut self, cx: &mut Context<'_>) -> Poll<Exit> {
        for _ in 0..BUDGET {
            match self.step(cx) {
                Err(exit) => return Poll::Ready(exit),
                Ok(true) => continue,
                Ok(false) => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// One pass over every source; `Ok(true)` if anything moved.
    fn step(&mut self, cx: &mut Context<'_>) -> Result<bool, Exit> {
        let mut moved = false;
        while let Poll::Ready(cmd) = self.mailbox.poll_recv(cx) {
            self.command(cmd)?;
            moved = true;
        }
        if self.moving.is_some() && self.can_move() {
            return Err(Exit::Moving);
        }
        if let State::Attached { link, .. } = &mut self.state {
            if link.poll_dead(cx).is_ready() {
                tracing::debug!(session = %self.id, "no pong for 30 s: detached");
                self.transition(To::Detached);
                moved = true;
            }
        }
        moved |= self.read_worker(cx)?;
        moved |= self.feed_link()?;
        moved |= self.write_link(cx);
        moved |= self.read_client(cx)?;
        moved |= self.take_posts(cx);
        moved |= self.write_worker(cx);
        if let Phase::Finishing(reason) = self.phase {
            let owed = !self.backlog.is_empty() || self.replay.is_replaying();
            if let (false, State::Attached { link, .. }) = (owed, &mut self.state) {
                // Finishing and attached: every line written, then EOF
                // (WebSocket: close 1000, or 1012 when the gateway stops).
                if link.poll_finish(cx, Closing::Ended(reason)).is_ready() {
                    self.transition(To::Closed);
                    return Err(reason.into());
                }
            }
        }
        if let State::Awaiting { .. } | State::Detached { .. } = self.state {
            // Ended for requests (DELETE, SIGTERM) and its client gone: no
            // resume can reach it any more, so the grace would only hold
            // the session (and its place under max_sessions_per_ip).
            if self.mailbox.is_closed() {
                if let Phase::Finishing(reason) = self.phase {
                    return Err(reason.into());
                }
            }
        }
        if let State::Awaiting { grace, .. } | State::Detached { grace } = &mut self.state {
            if grace.as_mut().poll(cx).is_ready() {
                return Err(match self.phase {
                    Phase::Finishing(reason) => reason,
                    Phase::Live(_) => EndReason::GraceExpired,
                }
                .into());
            }
        }
        Ok(moved)
    }

    fn command(&mut self, cmd: Command) -> Result<(), EndReason> {
        match cmd {
            Command::Resume { received, reply } => {
                if !self.replay.can_resume(received) {
                    let _ = reply.send(Err(Gone));
                    return Err(EndReason::ResumeGone);
                }
                if let Some(old) = self.transition(To::Awaiting { from: received }) {
                    old.abort(Closing::TakenOver);
                    self.stats.takeovers += 1;
                    self.metrics.takeover();
                }
                self.gen += 1;
                self.stats.resumes += 1;
                let _ = reply.send(Ok(Resumed {
                    delivered: self.delivered,
                    gen: self.gen,
                }));
            }
            Command::Attach { gen, link } => {
                let State::Awaiting { from, .. } = self.state else {
                    return Ok(());
                };
                if gen != self.gen {
                    // A connection overtaken before it could attach.
                    return Ok(());
                }
                self.transport = link.kind();
                self.transition(To::Attached { link, from });
            }
            Command::End { reply } => {
                let attached = self.attached();
                match &mut self.phase {
                    // SPEC 6: the answer in flight still reaches an
                    // attached client, then EOF (`WorkerGone::Drained`).
                    Phase::Live(WorkerSide::Message(side)) if side.busy() && attached => {
                        side.wind_down();
                        self.mailbox.close();
                        let _ = reply.send(());
                        return Ok(());
                    }
                    _ => self.finish(EndReason::ClientEnd),
                }
                // Ended now: an attached client still gets its lines, but
                // no request can reach the session any more (a resume gets
                // the 410 of SPEC 4).
                self.mailbox.close();
                let _ = reply.send(());
                if !self.attached() {
                    return Err(EndReason::ClientEnd);
                }
            }
            Command::Fail(reason) => return Err(reason),
            Command::Move { reply } => self.moving = Some(reply),
            Command::Post {
                sent,
                lines,
                ack,
                reply,
            } => {
                if let Some(n) = ack {
                    self.ack(n);
                }
                if self.posts.len() >= MAX_POSTS {
                    let _ = reply.send(Posted::Busy);
                    return Ok(());
                }
                self.posts.push_back(Post {
                    sent,
                    lines: lines.into(),
                    checked: false,
                    reply,
                });
            }
            Command::Push { lines, reply } => {
                if let Phase::Finishing(_) = self.phase {
                    let _ = reply.send(Err(PushRefused::Ended));
                    return Ok(());
                }
                let size: usize = lines.iter().map(Bytes::len).sum();
                let queued = match &self.state {
                    State::Attached { link, .. } => link.pending(),
                    _ => 0,
                };
                if self.backlog.bytes() + queued + size > self.config.detached_backlog {
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
                let live = matches!(self.phase, Phase::Live(_));
                if live {
                    self.finish(EndReason::Admin);
                }
                let _ = reply.send(live);
            }
            Command::Shutdown => {
                self.finish(EndReason::Shutdown);
                self.mailbox.close();
                if !self.attached() {
                    return Err(EndReason::Shutdown);
                }
            }
        }
        Ok(())
    }

    fn read_worker(&mut self, cx: &mut Context<'_>) -> Result<bool, EndReason> {
        let limit = if self.attached() {
            ATTACHED_AHEAD
        } else {
            self.config.detached_backlog
        };
        let mut moved = false;
        loop {
            let Phase::Live(worker) = &mut self.phase else {
                return Ok(moved);
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
                    self.finish(match gone {
                        WorkerGone::Closed | WorkerGone::Ended => EndReason::WorkerEnd,
                        // Ended by the client already: no resume can come
                        // for a detached one (the mailbox is closed).
                        WorkerGone::Drained if !self.attached() => {
                            return Err(EndReason::ClientEnd)
                        }
                        WorkerGone::Drained => EndReason::ClientEnd,
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
        let State::Attached { link, .. } = &mut self.state else {
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
        let State::Attached { link, write_stall } = &mut self.state else {
            return false;
        };
        if link.pending() == 0 {
            *write_stall = None;
            return false;
        }
        match link.poll_write_some(cx) {
            Poll::Ready(Ok(())) => {
                *write_stall = None;
                return true;
            }
            Poll::Ready(Err(_)) => {}
            Poll::Pending => {
                let stall =
                    write_stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
                if stall.as_mut().poll(cx).is_pending() {
                    return false;
                }
                tracing::debug!(session = %self.id, "client made no write progress: detached");
            }
        }
        self.transition(To::Detached);
        true
    }

    fn read_client(&mut self, cx: &mut Context<'_>) -> Result<bool, EndReason> {
        let mut moved = false;
        loop {
            let State::Attached { link, .. } = &mut self.state else {
                return Ok(moved);
            };
            let worker_takes = match &self.phase {
                Phase::Live(worker) => worker.can_take(),
                Phase::Finishing(_) => true,
            };
            if !worker_takes || !self.client_rate.allow(cx, self.registry.metrics()) {
                return Ok(moved);
            }
            let queued = link.pending();
            match link.poll_line(cx) {
                // A pong queued while reading must go out now, not with the
                // next line.
                Poll::Pending => return Ok(moved || link.pending() > queued),
                Poll::Ready(ClientRead::Line(line)) => {
                    moved = true;
                    self.deliver(&line);
                }
                Poll::Ready(ClientRead::Ack(n)) => {
                    moved = true;
                    self.ack(n);
                }
                Poll::Ready(ClientRead::Gone) => {
                    if let Some(link) = self.transition(To::Detached) {
                        link.release();
                    }
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

    /// A client line, whatever its transport, delivered to the worker
    /// (SPEC 4 "Delivered"); after the worker's end, client lines have
    /// nowhere to go.
    fn deliver(&mut self, line: &[u8]) {
        if let Phase::Live(worker) = &mut self.phase {
            self.client_rate.note();
            self.metrics.line(Direction::ToWorker, line.len());
            self.stats.lines_to_worker += 1;
            self.stats.bytes_to_worker += line.len() as u64;
            self.delivered += 1;
            worker.deliver(line);
        }
    }

    /// The client has received lines up to `n`: they leave the replay
    /// window.
    fn ack(&mut self, n: u64) {
        let held = self.replay.held_bytes();
        self.replay.ack(n.min(self.replay.sent()));
        self.metrics
            .replay_bytes(self.replay.held_bytes() as i64 - held as i64);
    }

    /// Takes the lines of waiting POSTs (SPEC 13), oldest first, as fast
    /// as the worker and the rate limit take a link's lines; a POST is
    /// answered once its lines are taken. Its count is checked when it
    /// comes to the front, so a retry behind the POST it repeats skips
    /// what that one delivered.
    fn take_posts(&mut self, cx: &mut Context<'_>) -> bool {
        let mut moved = false;
        while let Some(post) = self.posts.front_mut() {
            if !post.checked {
                post.checked = true;
                if post.sent > self.delivered {
                    let post = self.posts.pop_front().expect("a front POST");
                    let _ = post.reply.send(Posted::Gap(self.delivered));
                    moved = true;
                    continue;
                }
                let skip = (self.delivered - post.sent).min(post.lines.len() as u64);
                post.lines.drain(..skip as usize);
            }
            let Some(line) = post.lines.front().cloned() else {
                let post = self.posts.pop_front().expect("a front POST");
                let _ = post.reply.send(Posted::Taken(self.delivered));
                moved = true;
                continue;
            };
            if let Phase::Live(worker) = &self.phase {
                if !worker.can_take() || !self.client_rate.allow(cx, self.registry.metrics()) {
                    return moved;
                }
            }
            post.lines.pop_front();
            self.deliver(&line);
            moved = true;
        }
        moved
    }

    fn write_worker(&mut self, cx: &mut Context<'_>) -> bool {
        let Phase::Live(worker) = &mut self.phase else {
            return false;
        };
        match worker.poll_send(cx) {
            Ok(moved) => moved,
            Err(_) => {
                // The worker cannot take lines any more: its end.
                self.finish(EndReason::WorkerEnd);
                true
            }
        }
    }
}

/// The `tether_sessions` state a session in `state` is counted in: an
/// awaited link is not attached yet.
fn gauge_of(state: &State) -> Option<SessionState> {
    match state {
        State::Attached { .. } => Some(SessionState::Attached),
        State::Awaiting { .. } | State::Detached { .. } => Some(SessionState::Detached),
        State::Closed => None,
    }
}

mod moving;
#[cfg(test)]
mod tests;

pub(crate) use moving::{prepare, restore, Home, Moved, Prepared};
