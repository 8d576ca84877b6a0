//! A session leaving this process on upgrade, and one arriving (SPEC 10).
//! Both ends use the same record ([`SessionState`]); an old process whose
//! handover failed takes its sessions back through [`restore`] too, so
//! there is one way in.

use std::os::fd::OwnedFd;

use tether_wire::{split_lines, LineQueue};

use super::*;
use crate::config::parse_upstream;
use crate::forward::Upstreams;
use crate::metrics::Metrics;
use crate::session::handover::{
    ClientState, ReplayState, SessionState, Settings, StatsState, WorkerState,
};
use crate::session::link::Link;
use crate::session::worker_side::{MessageSide, StreamSide};

/// A session on its way out: its record, and beside it the sockets it
/// names (the client connection first when attached, then the worker's in
/// stream mode).
#[derive(Debug)]
pub(crate) struct Moved {
    pub(crate) state: SessionState,
    pub(crate) sockets: Vec<OwnedFd>,
}

/// What a session arriving in this process joins.
pub(crate) struct Home {
    pub(crate) registry: Arc<Registry>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) upstreams: Upstreams,
}

/// Why an arriving session could not be taken.
#[derive(Debug, thiserror::Error)]
#[error("session record not usable: {0}")]
pub(crate) struct NotRestored(pub(crate) String);

fn bad(what: impl Into<String>) -> NotRestored {
    NotRestored(what.into())
}

impl Session {
    /// Whether the session can leave now: not while a message request is
    /// on its way (it completes here first, SPEC 10).
    pub(super) fn can_move(&self) -> bool {
        match &self.phase {
            Phase::Live(worker) => worker.can_move(),
            Phase::Finishing(_) => true,
        }
    }

    /// Takes the session apart into its record and sockets and sends them
    /// to the upgrade, leaving nothing of it here: no end is counted or
    /// logged, no close event sent, its worker and client connections stay
    /// open in the descriptors that travel.
    pub(super) fn move_out(mut self) {
        let Some(reply) = self.moving.take() else {
            return;
        };
        self.mailbox.close();
        self.registry.remove(&self.id);
        let now = Instant::now();
        let grace_left = |grace: &Timer| grace.deadline().saturating_duration_since(now);
        let mut sockets = Vec::new();
        let old = mem::replace(&mut self.state, State::Closed);
        if let Some(gauge) = gauge_of(&old) {
            self.metrics.session_state(gauge, -1);
        }
        let mut replaying_from = None;
        let client = match old {
            State::Awaiting { from, grace } => ClientState::Awaiting {
                from,
                grace_left: grace_left(&grace),
            },
            State::Detached { grace } => ClientState::Detached {
                grace_left: grace_left(&grace),
            },
            State::Attached { link, .. } => match link.export() {
                Ok((state, socket)) => {
                    replaying_from = self.replay.replay_position();
                    sockets.push(socket);
                    ClientState::Attached(state)
                }
                Err(link) => {
                    // TLS cannot move: the client is closed (WebSocket
                    // 1012) and resumes against the new process.
                    link.abort(Closing::Ended(EndReason::Shutdown));
                    ClientState::Detached {
                        grace_left: self.grace_time(),
                    }
                }
            },
            State::Closed => ClientState::Detached {
                grace_left: self.grace_time(),
            },
        };
        let phase = mem::replace(&mut self.phase, Phase::Finishing(EndReason::Shutdown));
        let worker = match phase {
            Phase::Live(side) => match side.export() {
                Ok((state, socket)) => {
                    sockets.extend(socket);
                    state
                }
                Err(_) => {
                    tracing::error!(session = %self.id.as_str(), "worker side could not move; session lost");
                    return;
                }
            },
            Phase::Finishing(reason) => WorkerState::Finishing(reason),
        };
        // A close event owed after a request still on its way goes from
        // here, once; the moved session then sends none.
        let message = match (self.message.take(), self.unfinished.take()) {
            (Some(target), None) => Some(target.export()),
            (Some(target), unfinished) => {
                target.send_close(unfinished);
                None
            }
            (None, _) => None,
        };
        self.metrics.backlog_bytes(-(self.backlog.bytes() as i64));
        self.metrics
            .replay_bytes(-(self.replay.held_bytes() as i64));
        let s = &self.stats;
        let state = SessionState {
            id: self.id.as_str().to_owned(),
            vhost: self.vhost.to_string(),
            hosts: self.hosts.to_vec(),
            settings: Settings {
                resume_grace: self.config.resume_grace,
                unused_grace: self.config.unused_grace,
                replay_window: self.config.replay_window,
                detached_backlog: self.config.detached_backlog,
                max_line: self.config.max_line,
                max_lines_per_second: self.config.max_lines_per_second,
                worker_retry: self.config.worker_retry,
                worker: self._pin.0.url.as_written.clone(),
            },
            peer: self.peer,
            age: self.started.elapsed(),
            delivered: self.delivered,
            gen: self.gen,
            backlog: self.backlog.iter().flat_map(|l| l.into_owned()).collect(),
            replay: ReplayState {
                sent: self.replay.sent(),
                held: self.replay.held_lines(),
                replaying_from,
            },
            client,
            worker,
            message,
            stats: StatsState {
                lines_to_worker: s.lines_to_worker,
                bytes_to_worker: s.bytes_to_worker,
                lines_to_client: s.lines_to_client,
                bytes_to_client: s.bytes_to_client,
                resumes: s.resumes,
                takeovers: s.takeovers,
            },
        };
        let _ = reply.send(Moved { state, sockets });
    }
}

/// A tokio socket from a descriptor that came with a record.
fn socket(fd: Option<OwnedFd>) -> Result<tokio::net::TcpStream, NotRestored> {
    let fd = fd.ok_or_else(|| bad("a socket the record names did not come"))?;
    let std = std::net::TcpStream::from(fd);
    std.set_nonblocking(true)
        .map_err(|e| bad(format!("socket: {e}")))?;
    tokio::net::TcpStream::from_std(std).map_err(|e| bad(format!("socket: {e}")))
}

/// Starts the task of a session that moved here, in the state it left
/// the other process in, and puts it in the index.
pub(crate) fn restore(moved: Moved, home: &Home) -> Result<SessionHandle, NotRestored> {
    Ok(prepare(moved, home)?.start())
}

/// A session rebuilt here and not running yet: the new process of an
/// upgrade holds a batch so until the old one has let go of it, so that a
/// session never runs in both (the old one may still take it back).
pub(crate) struct Prepared {
    session: Session,
    handle: SessionHandle,
}

impl Prepared {
    /// Runs the session and puts it in the index (a resume waiting for
    /// it goes on).
    pub(crate) fn start(self) -> SessionHandle {
        let Prepared { session, handle } = self;
        session.registry.insert(handle.clone());
        tokio::spawn(session.run());
        handle
    }
}

/// Rebuilds a session from its record and sockets without running it.
pub(crate) fn prepare(moved: Moved, home: &Home) -> Result<Prepared, NotRestored> {
    let Moved { state: s, sockets } = moved;
    let mut sockets = sockets.into_iter();
    let id = SessionId::parse(s.id.as_bytes()).map_err(|_| bad("SessionID"))?;
    let url = parse_upstream(&s.settings.worker).map_err(bad)?;
    let vhost: Arc<str> = s.vhost.into();
    let metrics = home.metrics.vhost(&vhost);
    let worker = home.registry.workers().get(&vhost, &url, &metrics);
    let mut config = PersistentConfig::with_defaults(&url);
    let set = &s.settings;
    config.resume_grace = set.resume_grace;
    config.unused_grace = set.unused_grace;
    config.replay_window = set.replay_window;
    config.detached_backlog = set.detached_backlog;
    config.max_line = set.max_line;
    config.max_lines_per_second = set.max_lines_per_second;
    config.worker_retry = set.worker_retry;
    let config = Arc::new(config);
    let message = match s.message {
        Some(m) => Some(Arc::new(MessageTarget {
            upstreams: home.upstreams.clone(),
            worker: url.clone(),
            health: worker.clone(),
            retry: config.worker_retry,
            metrics: metrics.clone(),
            headers: MessageTarget::restore_headers(&m.headers)
                .ok_or_else(|| bad("a message request field"))?,
            target: m.target,
            form: m.form,
        })),
        None => None,
    };
    let client_socket = match s.client {
        ClientState::Attached(_) => Some(socket(sockets.next())?),
        _ => None,
    };
    let phase = match s.worker {
        WorkerState::Stream { input, out, eof } => Phase::Live(WorkerSide::Stream(
            StreamSide::restore(socket(sockets.next())?, &input, &out, eof, config.max_line),
        )),
        WorkerState::Message {
            queued,
            input,
            winding_down,
        } => Phase::Live(WorkerSide::Message(MessageSide::restore(
            message
                .clone()
                .ok_or_else(|| bad("message mode without its target"))?,
            (&queued, &input, winding_down),
            config.max_line,
            config.detached_backlog,
        ))),
        WorkerState::Finishing(reason) => Phase::Finishing(reason),
    };
    let mut backlog = LineQueue::new(config.detached_backlog.max(ATTACHED_AHEAD));
    for line in split_lines(&s.backlog).ok_or_else(|| bad("backlog"))? {
        backlog.push_back(line);
    }
    let mut replay = ReplayWindow::restore(config.replay_window, s.replay.sent, &s.replay.held)
        .ok_or_else(|| bad("replay window"))?;
    let slot = home
        .registry
        .admit(&vhost, s.peer.ip(), usize::MAX, usize::MAX)
        .map_err(|_| bad("no place"))?;
    let state = match s.client {
        ClientState::Awaiting { from, grace_left } => State::Awaiting {
            from,
            grace: Box::pin(tokio::time::sleep(grace_left)),
        },
        ClientState::Detached { grace_left } => State::Detached {
            grace: Box::pin(tokio::time::sleep(grace_left)),
        },
        ClientState::Attached(link) => {
            let socket = client_socket.ok_or_else(|| bad("client socket"))?;
            if let Some(from) = s.replay.replaying_from {
                replay.start_replay(from);
            }
            State::Attached {
                link: Box::new(Link::restore(link, socket, config.max_line)),
                write_stall: None,
            }
        }
    };
    if let Some(gauge) = gauge_of(&state) {
        metrics.session_state(gauge, 1);
    }
    metrics.backlog_bytes(backlog.bytes() as i64);
    metrics.replay_bytes(replay.held_bytes() as i64);
    let hosts: Arc<[String]> = s.hosts.into();
    let mailbox = Arc::new(Mailbox::default());
    let handle = SessionHandle {
        id: id.clone(),
        hosts: hosts.clone(),
        mailbox: mailbox.clone(),
        max_line: config.max_line,
    };
    let started = Instant::now()
        .checked_sub(s.age)
        .unwrap_or_else(Instant::now);
    let st = s.stats;
    let session = Session {
        id,
        vhost,
        hosts,
        peer: s.peer,
        started,
        mailbox,
        state,
        phase,
        message,
        unfinished: None,
        delivered: s.delivered,
        backlog,
        replay,
        gen: s.gen,
        worker_rate: RateGate::new(config.max_lines_per_second),
        client_rate: RateGate::new(config.max_lines_per_second),
        config,
        stats: Stats {
            lines_to_worker: st.lines_to_worker,
            bytes_to_worker: st.bytes_to_worker,
            lines_to_client: st.lines_to_client,
            bytes_to_client: st.bytes_to_client,
            resumes: st.resumes,
            takeovers: st.takeovers,
        },
        metrics,
        registry: home.registry.clone(),
        moving: None,
        _slot: slot,
        _pin: worker.pin(),
    };
    Ok(Prepared { session, handle })
}
