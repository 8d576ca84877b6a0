//! Running the gateway: bind every listener, serve, reload on request,
//! drain on shutdown (SPEC 8).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::cluster::{self, Cluster};
use crate::config::Config;
use crate::conn_limits::ConnLimits;
use crate::forward::Upstreams;
use crate::gateway::Runtime;
use crate::listener::{self, Accepting};
use crate::metrics::Metrics;
use crate::notify;
use crate::peer_listener;
use crate::session::{Home, Registry};
use crate::upgrade::{self, ListenerKind, ListenerRecord, Relaunch, Taking};

/// What the process asks of a running gateway (SIGHUP, SIGTERM/SIGINT,
/// SIGUSR2).
#[derive(Debug)]
pub enum Control {
    /// A new, already validated configuration.
    Reload(Box<Config>),
    /// A SIGHUP whose file had errors (already logged): counted.
    ReloadRefused,
    /// Drain and stop.
    Shutdown,
    /// Hand everything to a new process started as said (SPEC 10).
    Upgrade(Relaunch),
}

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("{0}")]
    Upgrade(String),
    /// SPEC 11: the peer listener cannot be bound.
    #[error("{0}")]
    Cluster(String),
    /// SPEC 11: another instance runs as this node (exit 64, like a
    /// configuration error).
    #[error("{0}")]
    DuplicateNode(String),
}

/// A listener and a copy of its socket, kept to hand over on upgrade.
struct Listening {
    accepting: AcceptLoop,
    socket: OwnedFd,
}

/// A listener's running accept loop.
struct AcceptLoop {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl AcceptLoop {
    fn stop(&self) {
        self.stop.cancel();
    }

    /// Stops the loop and returns once it has ended. An upgrade waits for
    /// this before it moves a session: a loop that had not yet seen its
    /// stop could otherwise accept a client's resume after its session
    /// left, and answer it `410` (SPEC 10).
    async fn stopped(&mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }
}

/// Binds the listeners of `config` and serves until told to shut down (or
/// until `control` closes). Then it drains: `/readyz` turns 503, listeners
/// stop accepting, requests in flight finish, then every session ends, all
/// within `drain_timeout`.
pub async fn run(config: Config, control: mpsc::Receiver<Control>) -> Result<(), RunError> {
    serve(config, control, None).await
}

/// [`run`] in the new process of an upgrade: `channel` (its standard
/// input) leads to the old process, whose listeners and sessions it takes.
pub async fn run_upgraded(
    config: Config,
    control: mpsc::Receiver<Control>,
    channel: UnixStream,
) -> Result<(), RunError> {
    let taking =
        crate::upgrade::blocking(|| Taking::connect(channel)).map_err(RunError::Upgrade)?;
    serve(config, control, Some(taking)).await
}

async fn serve(
    config: Config,
    mut control: mpsc::Receiver<Control>,
    mut taking: Option<Taking>,
) -> Result<(), RunError> {
    let mut bound = Vec::new();
    for (addr, tls) in listen_set(&config) {
        bound.push((
            addr,
            tls,
            take_or_bind(&mut taking, addr, client_kind(tls)).await?,
        ));
    }
    warn_about_tls(&config);
    let admin_addr = config.server.admin_listen;
    let admin_listener = take_or_bind(&mut taking, admin_addr, ListenerKind::Admin).await?;
    let admin_socket = dup(&admin_listener, admin_addr)?;

    let metrics = Arc::new(Metrics::default());
    let sessions = Arc::new(Registry::new(metrics.clone()));
    // SPEC 11: the peer listener is bound with the others, before NATS is
    // asked whether this node name is free.
    // The new process of an upgrade (SPEC 10) runs as the same node: the
    // old one still answers for the name. It hands its peer listener over
    // like the others; a new `peer_listen` is bound beside the old one's
    // (SO_REUSEPORT), which closes when the old process drains.
    let upgrading = taking.is_some();
    let cluster = match &config.cluster {
        Some(c) => {
            let handed = taking
                .as_mut()
                .and_then(|t| t.listener(c.peer_listen, ListenerKind::Peer));
            let peers = match handed {
                Some(socket) => relisten(&socket, c.peer_listen)?,
                None => cluster::peer::bind(c.peer_listen)
                    .map_err(|e| RunError::Cluster(e.to_string()))?,
            };
            let started = Cluster::start(
                c,
                &config.server,
                sessions.clone(),
                metrics.clone(),
                !upgrading,
            )
            .await
            .map_err(|e| match e {
                cluster::ClusterError::Duplicate(_) => RunError::DuplicateNode(e.to_string()),
                other => RunError::Cluster(other.to_string()),
            })?;
            Some((started, peers, c.peer_listen))
        }
        None => None,
    };
    let upstreams = Upstreams::new(&config.server, config.upstream_authorities());
    let home = |upstreams: &Upstreams| Home {
        registry: sessions.clone(),
        metrics: metrics.clone(),
        upstreams: upstreams.clone(),
    };
    let mut current_home = home(&upstreams);
    let (runtime_tx, runtime_rx) = watch::channel(Arc::new(Runtime::new(
        &config,
        upstreams,
        sessions.clone(),
        metrics.clone(),
        cluster.as_ref().map(|(c, _, _)| c.clone()),
    )));
    let ctx = Accepting {
        runtime: runtime_rx,
        limits: Arc::new(ConnLimits::default()),
        drain: CancellationToken::new(),
        tracker: TaskTracker::new(),
    };
    // The cluster and its peer listener, whose socket is kept to hand
    // over on upgrade as the others are.
    let (cluster, mut peering) = match cluster {
        Some((c, peers, addr)) => {
            let socket = dup(&peers, addr)?;
            let accepting = start_peers(peers, &c, &ctx);
            (Some(c), Some((addr, Listening { accepting, socket })))
        }
        None => (None, None),
    };
    let admin_state = Arc::new(AdminState::default());
    let mut admin_stop = CancellationToken::new();
    tokio::spawn(admin::serve(
        admin_listener,
        admin_state.clone(),
        ctx.runtime.clone(),
        admin_stop.clone(),
    ));
    let mut listeners = HashMap::new();
    for (addr, tls, l) in bound {
        let socket = dup(&l, addr)?;
        let accepting = start(l, addr, tls, &ctx);
        listeners.insert((addr, tls), Listening { accepting, socket });
    }
    admin_state.ready.store(true, Ordering::Release);
    if let Some(taking) = taking.take() {
        tokio::spawn(taking.receive(metrics.clone(), home(&current_home.upstreams)));
    } else {
        notify::ready();
    }

    let mut current = config;
    let mut handing = None;
    // A closed channel means the same as a shutdown.
    loop {
        let new = match control.recv().await {
            Some(Control::Reload(new)) => new,
            Some(Control::ReloadRefused) => {
                metrics.reload(false);
                notify::reloaded();
                continue;
            }
            Some(Control::Upgrade(relaunch)) => {
                let records: Vec<(ListenerRecord, BorrowedFd<'_>)> = listeners
                    .iter()
                    .map(|((addr, tls), l)| {
                        let record = ListenerRecord {
                            addr: *addr,
                            kind: client_kind(*tls),
                        };
                        (record, l.socket.as_fd())
                    })
                    .chain(std::iter::once((
                        ListenerRecord {
                            addr: admin_addr,
                            kind: ListenerKind::Admin,
                        },
                        admin_socket.as_fd(),
                    )))
                    .chain(peering.iter().map(|(addr, l)| {
                        let record = ListenerRecord {
                            addr: *addr,
                            kind: ListenerKind::Peer,
                        };
                        (record, l.socket.as_fd())
                    }))
                    .collect();
                let mut started = match upgrade::start(&relaunch, &records).await {
                    Ok(h) => h,
                    Err(e) => {
                        metrics.upgrade(false);
                        tracing::error!(target: "tether", error = %e, "upgrade failed; this process goes on serving");
                        continue;
                    }
                };
                // The new process accepts now; this one stops.
                for l in listeners.values_mut() {
                    l.accepting.stopped().await;
                }
                if let Some((_, l)) = peering.as_mut() {
                    l.accepting.stopped().await;
                }
                admin_stop.cancel();
                match started
                    .move_sessions(&metrics, &sessions, &current_home, true)
                    .await
                {
                    Ok(()) => {
                        handing = Some(started);
                        break;
                    }
                    Err(e) => {
                        metrics.upgrade(false);
                        tracing::error!(target: "tether", error = %e, "upgrade failed; this process goes on serving");
                        // Accepting again, on the sockets kept.
                        for ((addr, tls), l) in listeners.iter_mut() {
                            let listener = relisten(&l.socket, *addr)?;
                            l.accepting = start(listener, *addr, *tls, &ctx);
                        }
                        if let (Some((addr, l)), Some(c)) = (peering.as_mut(), cluster.as_ref()) {
                            l.accepting = start_peers(relisten(&l.socket, *addr)?, c, &ctx);
                        }
                        admin_stop = CancellationToken::new();
                        tokio::spawn(admin::serve(
                            relisten(&admin_socket, admin_addr)?,
                            admin_state.clone(),
                            ctx.runtime.clone(),
                            admin_stop.clone(),
                        ));
                        continue;
                    }
                }
            }
            Some(Control::Shutdown) | None => break,
        };
        notify::reloading();
        let mut new = new;
        if new.cluster != current.cluster {
            // The node name is in every SessionID minted and the peers know
            // this instance by it: it stays what the process started with.
            tracing::warn!("[cluster] changes take effect at the next start");
            new.cluster = current.cluster.clone();
        }
        match reload(&current, &new, &mut listeners, &ctx).await {
            Ok(()) => {
                let upstreams = Upstreams::new(&new.server, new.upstream_authorities());
                current_home = home(&upstreams);
                let runtime = Runtime::new(
                    &new,
                    upstreams,
                    sessions.clone(),
                    metrics.clone(),
                    cluster.clone(),
                );
                let _ = runtime_tx.send(Arc::new(runtime));
                current = *new;
                metrics.reload(true);
                tracing::info!("configuration reloaded");
            }
            Err(e) => {
                metrics.reload(false);
                tracing::error!(error = %e, "reload refused; the old configuration stays");
            }
        }
        notify::reloaded();
    }

    if handing.is_none() {
        notify::stopping();
    }
    // The copies kept for an upgrade would keep the ports accepting into
    // their queues: closed, the ports refuse (or, after an upgrade, are
    // the new process's alone).
    for l in listeners.values() {
        l.accepting.stop();
    }
    drop(listeners);
    if let Some((_, l)) = peering.take() {
        l.accepting.stop();
    }
    tracing::info!("draining");
    if let Some(c) = &cluster {
        c.stop();
    }
    admin_state.draining.store(true, Ordering::Release);
    ctx.drain.cancel();
    ctx.tracker.close();
    let drain_timeout = current.server.drain_timeout;
    let deadline = Instant::now() + drain_timeout;
    // Sessions get a slice of the deadline of their own, so that requests
    // that never finish cannot leave them no time to hand over their lines.
    let for_sessions = (drain_timeout / 4).min(Duration::from_secs(1));
    if tokio::time::timeout_at(deadline - for_sessions, ctx.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(?drain_timeout, "drain timeout: closing the requests left");
    }
    if let Some(mut handing) = handing {
        // Sessions that requests in flight opened meanwhile move too.
        let moved = handing
            .move_sessions(&metrics, &sessions, &current_home, false)
            .await;
        let finished = match moved {
            Ok(()) => handing.finish().await,
            Err(e) => Err(e),
        };
        match finished {
            Ok(_) => {
                admin_stop.cancel();
                return Ok(());
            }
            Err(e) => {
                // Too late to serve again: the listeners are the new
                // process's. The sessions taken back end as in a drain.
                metrics.upgrade(false);
                tracing::error!(target: "tether", error = %e, "upgrade failed at its end; the sessions left here end");
            }
        }
    }
    // Then every session ends: workers closed, native clients get their
    // remaining lines and EOF, within the same deadline.
    sessions.shutdown_all();
    while sessions.total_live() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    admin_stop.cancel();
    Ok(())
}

/// A copy of a listener's socket, to hand over or to accept on again.
fn dup(listener: &TcpListener, addr: SocketAddr) -> Result<OwnedFd, RunError> {
    listener
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| RunError::Bind { addr, source })
}

/// A listener on a kept socket.
fn relisten(socket: &OwnedFd, addr: SocketAddr) -> Result<TcpListener, RunError> {
    let err = |source| RunError::Bind { addr, source };
    let std = std::net::TcpListener::from(socket.try_clone().map_err(err)?);
    std.set_nonblocking(true).map_err(err)?;
    TcpListener::from_std(std).map_err(err)
}

/// The listener the old process handed over for `addr`, else a new one.
async fn take_or_bind(
    taking: &mut Option<Taking>,
    addr: SocketAddr,
    kind: ListenerKind,
) -> Result<TcpListener, RunError> {
    if let Some(socket) = taking.as_mut().and_then(|t| t.listener(addr, kind)) {
        return relisten(&socket, addr);
    }
    bind(addr).await
}

fn client_kind(tls: bool) -> ListenerKind {
    if tls {
        ListenerKind::Tls
    } else {
        ListenerKind::Plain
    }
}

/// The peer listener's accept loop (SPEC 11).
fn start_peers(listener: TcpListener, cluster: &Arc<Cluster>, ctx: &Accepting) -> AcceptLoop {
    let stop = CancellationToken::new();
    let task = tokio::spawn(peer_listener::accept_loop(
        listener,
        cluster.clone(),
        ctx.clone(),
        stop.clone(),
    ));
    AcceptLoop { stop, task }
}

/// Every listener of a config: plain ones, then TLS ones.
fn listen_set(config: &Config) -> Vec<(SocketAddr, bool)> {
    let plain = config.server.listen.iter().map(|a| (*a, false));
    let tls = config.server.tls_listen.iter().map(|a| (*a, true));
    plain.chain(tls).collect()
}

fn warn_about_tls(config: &Config) {
    let tls_vhosts = config.vhosts.iter().filter(|v| v.tls.is_some()).count();
    if !config.server.tls_listen.is_empty() && tls_vhosts == 0 {
        tracing::warn!(
            "tls_listen is set but no vhost has [vhost.tls]: TLS connections are closed"
        );
    }
    if config.server.tls_listen.is_empty() && tls_vhosts > 0 {
        tracing::warn!(
            "vhosts have [vhost.tls] but tls_listen is empty: nothing is served over TLS"
        );
    }
}

fn start(listener: TcpListener, configured: SocketAddr, tls: bool, ctx: &Accepting) -> AcceptLoop {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tls, "listening");
    }
    let stop = CancellationToken::new();
    let task = ctx.tracker.spawn(listener::accept_loop(
        listener,
        configured,
        tls,
        stop.clone(),
        ctx.clone(),
    ));
    AcceptLoop { stop, task }
}

/// Applies listener changes: new ones are bound first (any failure refuses
/// the reload and changes nothing), then removed ones stop accepting.
async fn reload(
    old: &Config,
    new: &Config,
    listeners: &mut HashMap<(SocketAddr, bool), Listening>,
    ctx: &Accepting,
) -> Result<(), RunError> {
    if new.server.admin_listen != old.server.admin_listen {
        tracing::warn!("admin_listen changes take effect at the next start");
    }
    let wanted = listen_set(new);
    let mut fresh = Vec::new();
    for (addr, tls) in &wanted {
        if !listeners.contains_key(&(*addr, *tls)) {
            fresh.push((*addr, *tls, bind(*addr).await?));
        }
    }
    for (addr, tls, l) in fresh {
        let socket = dup(&l, addr)?;
        let accepting = start(l, addr, tls, ctx);
        listeners.insert((addr, tls), Listening { accepting, socket });
    }
    listeners.retain(|key, l| {
        let keep = wanted.contains(key);
        if !keep {
            tracing::info!(addr = %key.0, "listener removed");
            l.accepting.stop();
        }
        keep
    });
    warn_about_tls(new);
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RunError> {
    use socket2::{Domain, Socket, Type};
    let err = |source| RunError::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(err)?;
    if addr.is_ipv6() {
        // `[::]:P` takes only IPv6, so that `0.0.0.0:P` can be listed too.
        socket.set_only_v6(true).map_err(err)?;
    }
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}
