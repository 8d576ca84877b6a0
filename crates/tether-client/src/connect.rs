//! `tether connect URL`: a line-oriented terminal client for persistent
//! sessions (like websocat, for this protocol).
//!
//! - Lines read from stdin are sent as session lines (an LF is added to a
//!   last line without one).
//! - The initial body, then every session line, is written to stdout as it
//!   arrives, byte-exact.
//! - Resumes and the end are reported on stderr: `# resumed after drop (n
//!   lines replayed)` (n: our lines that the gateway had not received and
//!   that were sent again), `# session ended`.
//! - EOF on stdin (Ctrl-D) ends the session once the answers have come:
//!   lines are printed until the worker ends the session or nothing came for
//!   [`ConnectOptions::linger`] (`--linger`, default 1 s), then every sent
//!   line is synced and the session is ended (`DELETE`); the lines the
//!   gateway still sends are printed until its EOF, and the run returns
//!   `Ok(())` (exit 0). Without the linger, `printf 'x\n' | tether connect`
//!   would end the session while the answer to `x` was still on its way
//!   (a message-mode worker answers after the request). With
//!   [`ConnectOptions::close_on_eof`] off, the session stays open after
//!   stdin ends, until the worker ends it.
//! - The SessionID is on stderr at once: `# session <id> opened`, or with
//!   [`ConnectOptions::resume`] (`--resume ID --received N`, a session
//!   taken over by hand) `# session <id> taken over (N lines received)`;
//!   the gateway then replays the lines after N.
//! - An answer that opens no session (any status, or a `200` without
//!   `Connection-Type: Persistent`) is printed: `# not a persistent
//!   session: status <s>` and its header fields (`# Name: value`) on
//!   stderr, its body on stdout; then it is returned as the error.
//! - A session that fails (lost: `410` on a resume after a drop, ...) is
//!   reported on stderr (`# session failed: <reason>`) and returned as the
//!   error (non-zero exit). A native client learns nothing
//!   more than EOF when the gateway ends a session (SPEC 2), so an EOF
//!   followed by `410` is the normal end.
//! - A line over `max_line` is reported (`# line not sent: ...`) and
//!   skipped; any other failure is returned.
//!
//! Stdin is read by a plain thread, not tokio's blocking pool, so that a
//! pending terminal read never holds up the runtime's shutdown.

use std::io::BufRead;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::{ClientConfig, ClientError, Session, SessionEvent, SessionId};

/// Options of [`run_connect`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `Accept` header; `None`: `application/x-persistent`.
    pub accept: Option<String>,
    /// Extra request headers (`-H name:value`).
    pub headers: Vec<(String, String)>,
    /// `DELETE` the session when stdin ends (default `true`).
    pub close_on_eof: bool,
    /// Write the initial body to stdout (default `true`).
    pub print_initial_body: bool,
    /// After stdin ends, how long no line from the gateway means that no
    /// more answers are coming (default 1 s).
    pub linger: Duration,
    /// Take over this session, whose client already received this many
    /// lines, instead of opening one ([`Session::take_over`]).
    pub resume: Option<(SessionId, u64)>,
    /// The transport: native HTTP/1.1 (default) or WebSocket ([`crate::ws`]).
    pub transport: Transport,
}

/// How `tether connect` reaches the session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    /// SPEC 2: the session channel is the HTTP/1.1 connection itself.
    #[default]
    Native,
    /// SPEC 3: a WebSocket with the `persistent` subprotocol.
    WebSocket,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            accept: None,
            headers: Vec::new(),
            close_on_eof: true,
            print_initial_body: true,
            linger: Duration::from_secs(1),
            resume: None,
            transport: Transport::Native,
        }
    }
}

impl ConnectOptions {
    /// The client configuration these options give for `url`.
    pub fn config(&self, url: &str) -> ClientConfig {
        let mut config = ClientConfig::new(url);
        if let Some(accept) = &self.accept {
            config.accept.clone_from(accept);
        }
        config.extra_headers.clone_from(&self.headers);
        config
    }
}

/// Runs `tether connect URL` on the process's stdin, stdout and stderr.
pub async fn run_connect(url: &str, opts: ConnectOptions) -> Result<(), ClientError> {
    let config = opts.config(url);
    run_connect_with(
        config,
        &opts,
        stdin_lines(),
        tokio::io::stdout(),
        tokio::io::stderr(),
    )
    .await
}

/// [`run_connect`] with its input (one `Vec` per line; the channel's end is
/// stdin's EOF) and outputs given: for tests and embedding.
pub async fn run_connect_with<O, E>(
    config: ClientConfig,
    opts: &ConnectOptions,
    mut input: mpsc::Receiver<Vec<u8>>,
    mut out: O,
    mut err: E,
) -> Result<(), ClientError>
where
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let opened = match (opts.transport, &opts.resume) {
        (Transport::WebSocket, resume) => crate::ws::open(config, resume.clone()).await,
        (Transport::Native, Some((id, received))) => {
            Session::take_over(config, id.clone(), *received)
                .await
                .map(Session::spawn)
        }
        (Transport::Native, None) => Session::open(config).await.map(Session::spawn),
    };
    let mut handle = match opened {
        Ok(handle) => handle,
        Err(ClientError::NotPersistent {
            status,
            headers,
            body,
        }) => {
            note(
                &mut err,
                &format!("# not a persistent session: status {status}"),
            )
            .await;
            for (name, value) in &headers {
                note(&mut err, &format!("# {name}: {value}")).await;
            }
            out.write_all(&body).await?;
            out.flush().await?;
            return Err(ClientError::NotPersistent {
                status,
                headers,
                body,
            });
        }
        Err(e) => return Err(e),
    };
    match &opts.resume {
        Some((_, received)) => {
            note(
                &mut err,
                &format!(
                    "# session {} taken over ({received} lines received)",
                    handle.id()
                ),
            )
            .await;
        }
        None => note(&mut err, &format!("# session {} opened", handle.id())).await,
    }
    if opts.print_initial_body && !handle.initial_body().is_empty() {
        out.write_all(handle.initial_body()).await?;
        out.flush().await?;
    }
    let mut input_open = true;
    // Set when stdin ended and the session is to be closed: a line from
    // the gateway pushes it back.
    let mut linger: Option<tokio::time::Instant> = None;
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    loop {
        tokio::select! {
            event = handle.rx.recv() => match event {
                Some(SessionEvent::Line(line)) => {
                    out.write_all(&line).await?;
                    out.flush().await?;
                    if let Some(at) = &mut linger {
                        *at = tokio::time::Instant::now() + opts.linger;
                    }
                }
                Some(SessionEvent::Resumed { resent, .. }) => {
                    note(&mut err, &format!("# resumed after drop ({resent} lines replayed)")).await;
                }
                Some(SessionEvent::Ended) | None => {
                    note(&mut err, "# session ended").await;
                    return Ok(());
                }
                Some(SessionEvent::Failed(e)) => {
                    note(&mut err, &format!("# session failed: {e}")).await;
                    return Err(e);
                }
            },
            line = input.recv(), if input_open => match line {
                Some(line) => match handle.tx.send_line(&line).await {
                    Ok(()) | Err(ClientError::Ended) => {}
                    Err(ClientError::InvalidLine(why)) => {
                        note(&mut err, &format!("# line not sent: {why}")).await;
                    }
                    Err(e) => {
                        note(&mut err, &format!("# session failed: {e}")).await;
                        return Err(e);
                    }
                },
                None => {
                    input_open = false;
                    if opts.close_on_eof {
                        linger = Some(tokio::time::Instant::now() + opts.linger);
                    }
                }
            },
            _ = tokio::time::sleep_until(linger.unwrap_or(far)), if linger.is_some() => {
                linger = None;
                match handle.tx.close().await {
                    Ok(()) | Err(ClientError::Ended) => {}
                    Err(e) => {
                        note(&mut err, &format!("# close failed: {e}")).await;
                        return Err(e);
                    }
                }
            }
        }
    }
}

async fn note<E: AsyncWrite + Unpin>(err: &mut E, text: &str) {
    let _ = err.write_all(format!("{text}\n").as_bytes()).await;
    let _ = err.flush().await;
}

/// Stdin, line by line, from a plain thread.
fn stdin_lines() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    let spawned = std::thread::Builder::new()
        .name("tether-stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut stdin = stdin.lock();
            loop {
                let mut line = Vec::new();
                match stdin.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.blocking_send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the stdin reader; input is empty");
    }
    rx
}
