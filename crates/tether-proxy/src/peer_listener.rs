//! The peer listener of a cluster (SPEC 11): connections from the other
//! instances, each carrying one client's relayed resume. After the
//! handshake (cluster::peer) the connection is served by the ordinary
//! HTTP/1.1 loop as the client's own, under the client's address and its
//! connection limits, so a relayed resume takes the same path as a local
//! one.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{peer, Cluster};
use crate::conn_limits::LimitHit;
use crate::exchange::ConnInfo;
use crate::http1::conn::Http1Conn;
use crate::listener::{Accepting, Counted};
use crate::metrics::{ConnectionGauge, Limit, PeerRefusal};

/// Accepts peer connections until the drain.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    cluster: Arc<Cluster>,
    ctx: Accepting,
    stop: CancellationToken,
) {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "peer".into(), |a| a.to_string());
    tracing::info!(%addr, "listening for peers");
    // `tether_connections_active{listener}` counts relayed clients too.
    let gauge = ctx.runtime.borrow().metrics.listener(&addr);
    loop {
        // Stopped first: an upgrade's old process accepts nothing more.
        let (stream, _) = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = ctx.drain.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (cluster, ctx, gauge) = (cluster.clone(), ctx.clone(), gauge.clone());
        ctx.tracker.clone().spawn(async move {
            let accepted = Instant::now();
            let shaken =
                tokio::time::timeout(peer::HANDSHAKE_TIME, peer::handshake(stream, &cluster)).await;
            let (stream, preamble) = match shaken {
                Ok(Ok(done)) => done,
                Ok(Err(why)) => {
                    cluster.metrics.cluster.refused(why);
                    tracing::warn!(target: "tether", reason = ?why, "peer connection refused");
                    return;
                }
                Err(_) => {
                    cluster.metrics.cluster.refused(PeerRefusal::Protocol);
                    tracing::warn!(target: "tether", "peer connection refused: handshake too slow");
                    return;
                }
            };
            let rt = ctx.runtime.borrow().clone();
            // The client's connection counts here as it would on a
            // listener: per-IP limits are the client's (SPEC 11).
            let permit = match ctx.limits.try_acquire(
                preamble.client.ip(),
                rt.server.max_connections,
                rt.server.max_connections_per_ip,
            ) {
                Ok(p) => p,
                Err(hit) => {
                    rt.metrics.limit_hit(match hit {
                        LimitHit::Connections => Limit::Connections,
                        LimitHit::ConnectionsPerIp => Limit::ConnectionsPerIp,
                    });
                    crate::listener::turn_away(stream).await;
                    return;
                }
            };
            let stream = Counted::new(stream, permit, ConnectionGauge::open(&gauge));
            let info = ConnInfo {
                peer: preamble.client,
                https: preamble.https,
            };
            Http1Conn::serve(
                stream,
                BytesMut::new(),
                accepted,
                rt,
                info,
                ctx.drain.clone(),
            )
            .await;
        });
    }
}
