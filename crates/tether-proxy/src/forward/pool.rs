//! Upstream connections kept open between requests, per upstream, with
//! that upstream's `max_upstream_connections`.
//!
//! A connection goes back only after a whole answer, on a connection both
//! sides keep alive, with nothing unread. It is looked at before it is
//! used again: an origin that closed it while idle (Apache stopping, its
//! keep-alive timeout) is known to the kernel at once, and writing there
//! would lose a request after it was written, which for a message request
//! ends the session (SPEC 6). The look is one non-blocking `MSG_PEEK`,
//! and every request gets it, though it is one system call in five per
//! proxied request: bytes waiting on an idle connection are no answer to
//! anything (an origin that answered twice, or a smuggled answer), and a
//! connection that has them must never carry the next request, whose
//! answer they would become. A close that comes after the look still
//! races the request; a safe request without a body is then sent again
//! on a new connection (forward's `send_once`).

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::BytesMut;

pub(crate) use crate::body::upstream::UpstreamConn as Conn;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// How long an idle upstream connection is kept for reuse: shorter than
/// Apache's default `KeepAliveTimeout` (5 s), so that the gateway, not
/// the origin, closes it. An origin that closes first races the next
/// request written on the connection, and a written request that gets no
/// answer is a 502 for a plain request and the session's end for a
/// message request (SPEC 6). An idle connection also holds an Apache
/// prefork child that could serve someone else.
pub(crate) const POOL_IDLE: Duration = Duration::from_secs(4);

/// How often idle connections past [`POOL_IDLE`] are closed.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// A read buffer larger than this is not kept with an idle connection.
const KEEP_BUFFER: usize = 8 * 1024;

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The connections of one upstream.
pub(crate) struct Pool {
    /// Requests in flight to this upstream (one connection each).
    pub(crate) limit: Arc<Semaphore>,
    max_idle: usize,
    idle: Mutex<IdleList>,
}

#[derive(Default)]
struct IdleList {
    /// Oldest first; the newest, warmest, is taken first.
    conns: Vec<Idle>,
    /// A reaper task is running for this list.
    reaping: bool,
}

impl Pool {
    fn new(limit: Arc<Semaphore>, max_idle: usize) -> Arc<Pool> {
        Arc::new(Pool {
            limit,
            max_idle,
            idle: Mutex::new(IdleList::default()),
        })
    }

    /// The newest idle connection that is still open and has nothing to
    /// read, if any.
    pub(crate) fn take(&self) -> Option<Conn> {
        loop {
            let idle = self.idle.lock().expect("pool lock").conns.pop()?;
            if idle.since.elapsed() >= POOL_IDLE {
                // Every older one is expired too.
                self.idle.lock().expect("pool lock").conns.clear();
                return None;
            }
            if still_open(&idle.conn.stream) {
                return Some(idle.conn);
            }
            tracing::debug!("idle upstream connection closed by its peer; not used");
        }
    }

    /// Keeps `conn` for the next request, unless enough are kept already.
    pub(crate) fn put(self: &Arc<Self>, mut conn: Conn) {
        if !conn.buf.is_empty() {
            return;
        }
        if conn.buf.capacity() > KEEP_BUFFER {
            conn.buf = BytesMut::new();
        }
        let mut list = self.idle.lock().expect("pool lock");
        if list.conns.len() >= self.max_idle {
            return;
        }
        list.conns.push(Idle {
            conn,
            since: Instant::now(),
        });
        if !list.reaping {
            list.reaping = true;
            tokio::spawn(reap(Arc::downgrade(self)));
        }
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().expect("pool lock").conns.len()
    }
}

/// Closes connections idle for [`POOL_IDLE`] until none is left (or the
/// pool, a past config load's, is gone).
async fn reap(pool: Weak<Pool>) {
    loop {
        tokio::time::sleep(REAP_EVERY).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut list = pool.idle.lock().expect("pool lock");
        list.conns.retain(|i| i.since.elapsed() < POOL_IDLE);
        if list.conns.is_empty() {
            list.reaping = false;
            return;
        }
    }
}

/// Whether the peer has neither closed nor reset the connection, and sent
/// nothing unasked (bytes on an idle connection are no answer to anything:
/// such a connection is not used either).
fn still_open(stream: &TcpStream) -> bool {
    use rustix::net::{recv, RecvFlags};
    let mut byte = [0u8; 1];
    matches!(
        recv(stream.as_fd(), &mut byte, RecvFlags::PEEK | RecvFlags::DONTWAIT),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK
    )
}

/// The pools of one config load, by upstream authority.
pub(crate) struct Pools {
    by_upstream: HashMap<String, Arc<Pool>>,
    /// For an upstream the config load did not name: one shared limit, a
    /// pool each. Only a message-mode session handed over by an upgrade,
    /// whose worker the new load does not name, reaches one: at most as
    /// many as worker URLs the old process had, each with at most
    /// `max_idle` idle connections.
    others: Mutex<HashMap<String, Arc<Pool>>>,
    other_limit: Arc<Semaphore>,
    max_idle: usize,
}

impl Pools {
    pub(crate) fn new<'a>(
        upstreams: impl IntoIterator<Item = &'a str>,
        cap: usize,
        max_idle: usize,
    ) -> Pools {
        Pools {
            by_upstream: upstreams
                .into_iter()
                .map(|a| {
                    (
                        a.to_owned(),
                        Pool::new(Arc::new(Semaphore::new(cap)), max_idle),
                    )
                })
                .collect(),
            others: Mutex::new(HashMap::new()),
            other_limit: Arc::new(Semaphore::new(cap)),
            max_idle,
        }
    }

    pub(crate) fn get(&self, authority: &str) -> Arc<Pool> {
        if let Some(pool) = self.by_upstream.get(authority) {
            return pool.clone();
        }
        self.others
            .lock()
            .expect("pools lock")
            .entry(authority.to_owned())
            .or_insert_with(|| Pool::new(self.other_limit.clone(), self.max_idle))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair(listener: &TcpListener) -> (Conn, TcpStream) {
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (
            Conn {
                stream: client.unwrap(),
                buf: BytesMut::new(),
            },
            server.unwrap().0,
        )
    }

    #[tokio::test]
    async fn a_connection_closed_by_the_origin_is_never_taken() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pools = Pools::new(["a"], 4, 4);
        let pool = pools.get("a");
        let (open, _keep) = pair(&listener).await;
        let (closed, server) = pair(&listener).await;
        pool.put(open);
        pool.put(closed);
        drop(server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The newest (closed) is looked at first and dropped; the older
        // open one is taken.
        let mut taken = pool.take().expect("the open connection");
        assert_eq!(pool.idle_count(), 0);
        taken.stream.write_all(b"x").await.unwrap();
        assert!(pool.take().is_none());
    }

    #[tokio::test]
    async fn a_connection_with_unasked_bytes_is_never_taken() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pools::new([], 4, 4).get("b");
        let (conn, mut server) = pair(&listener).await;
        pool.put(conn);
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take().is_none());
        let mut rest = Vec::new();
        // Dropped with bytes unread: the origin sees a reset.
        assert!(matches!(
            server.read_to_end(&mut rest).await,
            Ok(0) | Err(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_closed_after_pool_idle() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pools::new(["c"], 4, 4).get("c");
        let (conn, _server) = pair(&listener).await;
        pool.put(conn);
        tokio::time::sleep(POOL_IDLE - Duration::from_millis(100)).await;
        assert_eq!(pool.idle_count(), 1);
        tokio::time::sleep(REAP_EVERY + Duration::from_millis(200)).await;
        assert_eq!(pool.idle_count(), 0, "closed by the reaper");
    }

    #[tokio::test]
    async fn at_most_max_idle_are_kept_and_dirty_ones_never() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pools::new(["d"], 4, 2).get("d");
        let mut servers = Vec::new();
        for _ in 0..3 {
            let (conn, server) = pair(&listener).await;
            servers.push(server);
            pool.put(conn);
        }
        assert_eq!(pool.idle_count(), 2);
        let (mut dirty, _server) = pair(&listener).await;
        dirty.buf.extend_from_slice(b"left over");
        let pool = Pools::new(["e"], 4, 2).get("e");
        pool.put(dirty);
        assert_eq!(pool.idle_count(), 0);
    }
}
