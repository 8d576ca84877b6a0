//! Running the gateway: bind every listener, serve, drain on shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::forward::Upstreams;
use crate::gateway::Runtime;
use crate::listener::{self, ConnLimits};
use crate::session::Registry;

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// Binds the listeners of `config`, serves until `shutdown` resolves, then
/// drains: listeners stop accepting, requests in flight finish (up to
/// `drain_timeout`), and the function returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let mut plain = Vec::new();
    for addr in &config.server.listen {
        plain.push(bind(*addr).await?);
    }
    let admin_listener = bind(config.server.admin_listen).await?;
    for l in &plain {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "listening");
        }
    }

    let upstreams = Upstreams::new(&config.server);
    let sessions = Arc::new(Registry::default());
    let (_runtime_tx, runtime_rx) =
        watch::channel(Arc::new(Runtime::new(&config, upstreams, sessions)));
    let drain = CancellationToken::new();
    let tracker = TaskTracker::new();
    let limits = Arc::new(ConnLimits::default());
    let admin_state = Arc::new(AdminState::default());
    let admin_stop = CancellationToken::new();
    tokio::spawn(admin::serve(
        admin_listener,
        admin_state.clone(),
        admin_stop.clone(),
    ));
    for l in plain {
        tracker.spawn(listener::accept_loop(
            l,
            runtime_rx.clone(),
            limits.clone(),
            drain.clone(),
            tracker.clone(),
        ));
    }
    admin_state.ready.store(true, Ordering::Release);

    shutdown.await;
    tracing::info!("draining");
    admin_state.draining.store(true, Ordering::Release);
    drain.cancel();
    tracker.close();
    let drain_timeout = config.server.drain_timeout;
    if tokio::time::timeout(drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(?drain_timeout, "drain timeout: closing what is left");
    }
    admin_stop.cancel();
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RunError> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|source| RunError::Bind { addr, source })?;
    socket
        .set_reuseaddr(true)
        .map_err(|source| RunError::Bind { addr, source })?;
    socket
        .bind(addr)
        .map_err(|source| RunError::Bind { addr, source })?;
    socket
        .listen(1024)
        .map_err(|source| RunError::Bind { addr, source })
}
