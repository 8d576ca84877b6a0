//! [`SessionHandle`]: a [`Session`] run by its own task, for full duplex.
//!
//! The task owns the session and `select!`s between the caller's commands
//! (lines to send, close), handing read lines to the event channel, and the
//! connection's reads and writes; resumes happen inside the task. The event
//! channel is bounded: when the caller does not take lines, the task stops
//! reading (backpressure reaches the gateway), but keeps writing.

use std::collections::VecDeque;

use bytes::Bytes;
use tether_wire::SessionId;
use tokio::sync::{mpsc, oneshot};

use crate::session::{checked_line, Resumed, Session};
use crate::ClientError;

/// Bytes queued for the connection above which the task takes no more lines
/// from [`SessionSender::send_line`] until some are written.
const OUT_HIGH_WATER: usize = 64 * 1024;
/// Capacity of the command and event channels.
const CHANNEL: usize = 64;

/// What a running session reports.
#[derive(Debug)]
pub enum SessionEvent {
    /// A line from the gateway, LF included, byte-exact.
    Line(Bytes),
    /// The connection dropped and the session was resumed; `resent` of our
    /// lines that the gateway had not received went out again. Replayed lines
    /// from the gateway follow as ordinary [`SessionEvent::Line`]s.
    Resumed {
        /// Our lines sent again.
        resent: u64,
        /// Resumes so far.
        resumes: u64,
    },
    /// The session ended normally (EOF then 410, or after `close`). Last
    /// event.
    Ended,
    /// The session failed. Last event.
    Failed(ClientError),
}

pub(crate) enum Command {
    Line(Bytes, oneshot::Sender<Result<(), ClientError>>),
    Close(oneshot::Sender<Result<(), ClientError>>),
    DropConnection,
}

/// The sending side of a running session; cheap to clone.
#[derive(Debug, Clone)]
pub struct SessionSender {
    cmds: mpsc::Sender<Command>,
    max_line: usize,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Line(l, _) => write!(f, "Line({} bytes)", l.len()),
            Command::Close(_) => f.write_str("Close"),
            Command::DropConnection => f.write_str("DropConnection"),
        }
    }
}

impl SessionSender {
    /// Sends one line (see [`Session::send_line`] for the rules). Returns
    /// once the session task has queued it and kept it for resending; it
    /// waits while the task is resuming or its output is full.
    pub async fn send_line(&self, line: &[u8]) -> Result<(), ClientError> {
        let line = checked_line(line, self.max_line)?;
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Command::Line(line, tx))
            .await
            .map_err(|_| ClientError::Ended)?;
        rx.await.map_err(|_| ClientError::Ended)?
    }

    /// Ends the session like [`Session::close`] (every sent line is synced
    /// first, then `DELETE`). The task then keeps delivering the lines the
    /// gateway still sends until its EOF, and reports
    /// [`SessionEvent::Ended`].
    pub async fn close(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Command::Close(tx))
            .await
            .map_err(|_| ClientError::Ended)?;
        rx.await.map_err(|_| ClientError::Ended)?
    }

    /// **Test and fault-injection hook**: see
    /// [`Session::drop_connection_for_test`].
    pub async fn drop_connection_for_test(&self) {
        let _ = self.cmds.send(Command::DropConnection).await;
    }
}

/// A session running in its own task: `tx` sends, `rx` receives events.
///
/// Dropping the handle (both halves) stops the task and drops the connection
/// without `DELETE`: the gateway keeps the session for `resume_grace`.
#[derive(Debug)]
pub struct SessionHandle {
    /// Sends lines and closes.
    pub tx: SessionSender,
    /// Lines, resumes and the end, in order.
    pub rx: mpsc::Receiver<SessionEvent>,
    id: SessionId,
    initial_body: Bytes,
}

impl SessionHandle {
    pub(crate) fn new(
        cmds: mpsc::Sender<Command>,
        max_line: usize,
        rx: mpsc::Receiver<SessionEvent>,
        id: SessionId,
        initial_body: Bytes,
    ) -> SessionHandle {
        SessionHandle {
            tx: SessionSender { cmds, max_line },
            rx,
            id,
            initial_body,
        }
    }

    /// The session's ID.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The opening answer's initial body.
    pub fn initial_body(&self) -> &[u8] {
        &self.initial_body
    }

    /// The next event; `None` after the last one.
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.rx.recv().await
    }
}

impl Session {
    /// Runs the session in a new tokio task and returns the handle that
    /// talks to it.
    pub fn spawn(self) -> SessionHandle {
        let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL);
        let (ev_tx, ev_rx) = mpsc::channel(CHANNEL);
        let handle = SessionHandle {
            tx: SessionSender {
                cmds: cmd_tx,
                max_line: self.config.max_line,
            },
            rx: ev_rx,
            id: self.id().clone(),
            initial_body: Bytes::copy_from_slice(self.initial_body()),
        };
        tokio::spawn(self.run(cmd_rx, ev_tx));
        handle
    }

    async fn run(mut self, mut cmds: mpsc::Receiver<Command>, events: mpsc::Sender<SessionEvent>) {
        let mut cmds_open = true;
        // Set once DELETE succeeded: drain to EOF, then report the end.
        let mut closing = false;
        let mut drain_deadline = tokio::time::Instant::now();
        // Resume notices, delivered before the lines read after them; never
        // awaited on their own, so a caller blocked in `send_line` cannot
        // deadlock the task.
        let mut notices: VecDeque<SessionEvent> = VecDeque::new();
        let last = loop {
            if self.ended() && !self.has_line() && notices.is_empty() {
                break SessionEvent::Ended;
            }
            let taking = cmds_open && self.out.len() < OUT_HIGH_WATER;
            let deliver = self.has_line() || !notices.is_empty();
            let ended = self.ended();
            tokio::select! {
                biased;
                _ = events.closed() => return,
                cmd = cmds.recv(), if taking => match cmd {
                    None => cmds_open = false,
                    Some(Command::Line(line, reply)) => {
                        let _ = reply.send(if closing {
                            Err(ClientError::Ended)
                        } else {
                            self.queue_checked(line)
                        });
                    }
                    Some(Command::DropConnection) => self.drop_connection_for_test(),
                    Some(Command::Close(reply)) => {
                        let result = self.close_in_place().await;
                        if result.is_ok() {
                            closing = true;
                            drain_deadline =
                                tokio::time::Instant::now() + self.config.response_timeout;
                        }
                        let _ = reply.send(result);
                    }
                },
                permit = events.reserve(), if deliver => {
                    let Ok(permit) = permit else { return };
                    if let Some(notice) = notices.pop_front() {
                        permit.send(notice);
                    } else if let Some(line) = self.pop_line() {
                        permit.send(SessionEvent::Line(line));
                    }
                }
                _ = tokio::time::sleep_until(drain_deadline), if closing && !ended => {
                    self.set_ended();
                }
                res = self.io_step(), if !ended => match res {
                    Ok(()) => {
                        if let Err(e) = self.take_whole_lines() {
                            break SessionEvent::Failed(e);
                        }
                    }
                    Err(_) if closing => self.set_ended(),
                    Err(lost) => match self.recover(lost).await {
                        Ok(Resumed::Attached { resent }) => {
                            let resumes = self.resumes();
                            notices.push_back(SessionEvent::Resumed { resent, resumes });
                        }
                        Ok(Resumed::Ended) => {}
                        Err(e) => break SessionEvent::Failed(e),
                    },
                },
            }
        };
        let _ = events.send(last).await;
    }

    /// `close` for the task: sync, then DELETE; keeps the connection so the
    /// remaining lines can still be read.
    async fn close_in_place(&mut self) -> Result<(), ClientError> {
        if self.ended() {
            return Ok(());
        }
        self.sync().await?;
        self.delete().await
    }
}
