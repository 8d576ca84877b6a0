//! Running the gateway: bind every listener, serve, reload on request,
//! drain on shutdown (SPEC 8).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::conn_limits::ConnLimits;
use crate::forward::Upstreams;
use crate::gateway::Runtime;
use crate::listener::{self, Accepting};
use crate::metrics::Metrics;
use crate::session::Registry;

/// What the process asks of a running gateway (SIGHUP, SIGTERM/SIGINT).
#[derive(Debug)]
pub enum Control {
    /// A new, already validated configuration.
    Reload(Box<Config>),
    /// A SIGHUP whose file had errors (already logged): counted.
    ReloadRefused,
    /// Drain and stop.
    Shutdown,
}

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// Binds the listeners of `config` and serves until told to shut down (or
/// until `control` closes). Then it drains: `/readyz` turns 503, listeners
/// stop accepting, requests in flight finish, then every session ends, all
/// within `drain_timeout`.
pub async fn run(config: Config, mut control: mpsc::Receiver<Control>) -> Result<(), RunError> {
    let mut bound = Vec::new();
    for (addr, tls) in listen_set(&config) {
        bound.push((addr, tls, bind(addr).await?));
    }
    warn_about_tls(&config);
    let admin_listener = bind(config.server.admin_listen).await?;

    let metrics = Arc::new(Metrics::default());
    let sessions = Arc::new(Registry::new(metrics.clone()));
    let upstreams = Upstreams::new(&config.server, config.upstream_authorities());
    let (runtime_tx, runtime_rx) = watch::channel(Arc::new(Runtime::new(
        &config,
        upstreams,
        sessions.clone(),
        metrics.clone(),
    )));
    let ctx = Accepting {
        runtime: runtime_rx,
        limits: Arc::new(ConnLimits::default()),
        drain: CancellationToken::new(),
        tracker: TaskTracker::new(),
    };
    let admin_state = Arc::new(AdminState::default());
    let admin_stop = CancellationToken::new();
    tokio::spawn(admin::serve(
        admin_listener,
        admin_state.clone(),
        ctx.runtime.clone(),
        admin_stop.clone(),
    ));
    let mut listeners = HashMap::new();
    for (addr, tls, l) in bound {
        listeners.insert((addr, tls), start(l, addr, tls, &ctx));
    }
    admin_state.ready.store(true, Ordering::Release);

    let mut current = config;
    // A closed channel means the same as a shutdown.
    loop {
        let new = match control.recv().await {
            Some(Control::Reload(new)) => new,
            Some(Control::ReloadRefused) => {
                metrics.reload(false);
                continue;
            }
            Some(Control::Shutdown) | None => break,
        };
        match reload(&current, &new, &mut listeners, &ctx).await {
            Ok(()) => {
                let upstreams = Upstreams::new(&new.server, new.upstream_authorities());
                let runtime = Runtime::new(&new, upstreams, sessions.clone(), metrics.clone());
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
    }

    tracing::info!("draining");
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
    // Then every session ends: workers closed, native clients get their
    // remaining lines and EOF, within the same deadline.
    sessions.shutdown_all();
    while sessions.total_live() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    admin_stop.cancel();
    Ok(())
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

fn start(
    listener: TcpListener,
    configured: SocketAddr,
    tls: bool,
    ctx: &Accepting,
) -> CancellationToken {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tls, "listening");
    }
    let stop = CancellationToken::new();
    ctx.tracker.spawn(listener::accept_loop(
        listener,
        configured,
        tls,
        stop.clone(),
        ctx.clone(),
    ));
    stop
}

/// Applies listener changes: new ones are bound first (any failure refuses
/// the reload and changes nothing), then removed ones stop accepting.
async fn reload(
    old: &Config,
    new: &Config,
    listeners: &mut HashMap<(SocketAddr, bool), CancellationToken>,
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
        listeners.insert((addr, tls), start(l, addr, tls, ctx));
    }
    listeners.retain(|key, stop| {
        let keep = wanted.contains(key);
        if !keep {
            tracing::info!(addr = %key.0, "listener removed");
            stop.cancel();
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
