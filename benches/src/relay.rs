//! Session line traffic: many sessions open at once, each sending lines
//! through tether to the line-echo worker and reading the echoes, driven
//! by tasks on the bench's tokio runtime (one task per session, so 2 000
//! clients cost this process timers and wake-ups, not threads).
//!
//! Two paces: **sparse** (each session one line per period, the sessions'
//! first lines spread evenly over the first period, so tether sees a
//! steady trickle and not a burst each second) and **windowed** (each
//! session keeps a window of lines in flight and sends a new one per echo
//! that comes back, as fast as the echoes return).
//!
//! Every line is 32 bytes and names its session and sequence number, so
//! each echo is checked against the line expected next; an echo that never
//! comes back within the drain time is counted lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// Bytes per line, LF included.
pub(crate) const LINE_BYTES: usize = 32;

/// How long, after sending stops, echoes still in flight are waited for
/// before they count as lost.
const DRAIN: Duration = Duration::from_secs(3);

/// How each session sends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pace {
    /// One line every `period`; session `i` of `n` sends its first at
    /// `i * period / n` after the start.
    Every(Duration),
    /// This many lines in flight, a new one sent per echo read.
    Window(usize),
}

/// Counts shared by the session tasks, read by the bench while they run.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Lines written to tether.
    pub(crate) sent: AtomicU64,
    /// Echoes read back.
    pub(crate) received: AtomicU64,
    /// Echoes that were not the line expected next (order or content).
    pub(crate) wrong: AtomicU64,
}

impl Counters {
    /// (sent, received) now.
    pub(crate) fn snapshot(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }
}

/// Line `seq` of session `session`: 32 bytes, LF-terminated.
pub(crate) fn line(session: u32, seq: u64) -> [u8; LINE_BYTES] {
    let mut out = [b' '; LINE_BYTES];
    let text = format!("s{session:07} line {seq:017}");
    let n = text.len().min(LINE_BYTES - 1);
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out[LINE_BYTES - 1] = b'\n';
    out
}

/// The lines whose LF is in `buf[..len]`, as (start, end past the LF),
/// and how many bytes of a partial line follow the last one.
fn complete_lines(buf: &[u8]) -> (Vec<(usize, usize)>, usize) {
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            lines.push((start, i + 1));
            start = i + 1;
        }
    }
    (lines, buf.len() - start)
}

/// Waits for the next tick, or forever when there is no interval.
async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// One session's client: sends at `pace` from `start` until `stop`, then
/// waits up to [`DRAIN`] for the echoes still in flight. Returns how many
/// never came back (with the reason, when the connection failed).
pub(crate) async fn drive(
    stream: std::net::TcpStream,
    session: u32,
    sessions: u32,
    pace: Pace,
    start: Instant,
    stop: Instant,
    counters: Arc<Counters>,
) -> Result<(), (u64, String)> {
    let mut stream = stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpStream::from_std(stream))
        .map_err(|e| (0, format!("session {session}: {e}")))?;
    let (mut rd, mut wr) = stream.split();
    let (mut next_send, mut next_recv) = (0u64, 0u64);
    let mut interval = match pace {
        Pace::Every(period) => {
            let offset = period * session / sessions.max(1);
            let mut i = tokio::time::interval_at(start + offset, period);
            // A late tick sends one line late, never a burst to catch up.
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            Some(i)
        }
        Pace::Window(_) => None,
    };
    let lost =
        |sent: u64, recv: u64, why: String| (sent - recv, format!("session {session}: {why}"));
    let mut out = Vec::with_capacity(LINE_BYTES * 64);
    if let Pace::Window(w) = pace {
        tokio::time::sleep_until(start).await;
        for _ in 0..w {
            out.extend_from_slice(&line(session, next_send));
            next_send += 1;
        }
        wr.write_all(&out)
            .await
            .map_err(|e| lost(0, 0, format!("write: {e}")))?;
        counters.sent.fetch_add(w as u64, Ordering::Relaxed);
    }
    let mut buf = vec![0u8; 4096];
    let mut have = 0;
    loop {
        let now = Instant::now();
        if now >= stop && next_recv == next_send {
            return Ok(());
        }
        let wake = if now < stop { stop } else { stop + DRAIN };
        if now >= stop + DRAIN {
            return Err(lost(
                next_send,
                next_recv,
                "echoes still missing after the drain".into(),
            ));
        }
        tokio::select! {
            read = rd.read(&mut buf[have..]) => {
                let n = match read {
                    Ok(0) => return Err(lost(next_send, next_recv, "tether closed the connection".into())),
                    Ok(n) => n,
                    Err(e) => return Err(lost(next_send, next_recv, format!("read: {e}"))),
                };
                have += n;
                let (lines, partial) = complete_lines(&buf[..have]);
                out.clear();
                for &(a, b) in &lines {
                    if buf[a..b] != line(session, next_recv) {
                        counters.wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    next_recv += 1;
                    if matches!(pace, Pace::Window(_)) && Instant::now() < stop {
                        out.extend_from_slice(&line(session, next_send));
                        next_send += 1;
                    }
                }
                counters.received.fetch_add(lines.len() as u64, Ordering::Relaxed);
                buf.copy_within(have - partial..have, 0);
                have = partial;
                if have == buf.len() {
                    return Err(lost(next_send, next_recv, "a line longer than 4 KiB came back".into()));
                }
                if !out.is_empty() {
                    wr.write_all(&out).await.map_err(|e| lost(next_send, next_recv, format!("write: {e}")))?;
                    counters.sent.fetch_add((out.len() / LINE_BYTES) as u64, Ordering::Relaxed);
                }
            }
            () = tick(&mut interval), if now < stop => {
                wr.write_all(&line(session, next_send)).await.map_err(|e| lost(next_send, next_recv, format!("write: {e}")))?;
                next_send += 1;
                counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_fixed_size_and_distinct() {
        let a = line(7, 42);
        assert_eq!(a.len(), LINE_BYTES);
        assert_eq!(a[LINE_BYTES - 1], b'\n');
        assert_eq!(a.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_ne!(a, line(7, 43));
        assert_ne!(a, line(8, 42));
        assert!(std::str::from_utf8(&a)
            .unwrap()
            .starts_with("s0000007 line "));
    }

    #[test]
    fn splits_complete_lines_and_keeps_the_partial_one() {
        let (lines, partial) = complete_lines(b"ab\ncd\nef");
        assert_eq!(lines, vec![(0, 3), (3, 6)]);
        assert_eq!(partial, 2);
        let (lines, partial) = complete_lines(b"");
        assert!(lines.is_empty());
        assert_eq!(partial, 0);
    }

    #[test]
    fn drives_sessions_against_the_worker() {
        // Straight to the worker (no tether): both paces echo every line.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let port = crate::session::start_worker(&rt).unwrap();
        for pace in [Pace::Every(Duration::from_millis(50)), Pace::Window(8)] {
            let counters = Arc::new(Counters::default());
            let conns: Vec<_> = (0..4)
                .map(|_| crate::session::open_direct(port).unwrap().stream)
                .collect();
            let _guard = rt.enter();
            let start = Instant::now();
            let stop = start + Duration::from_millis(300);
            let tasks: Vec<_> = conns
                .into_iter()
                .enumerate()
                .map(|(i, c)| rt.spawn(drive(c, i as u32, 4, pace, start, stop, counters.clone())))
                .collect();
            rt.block_on(async {
                for t in tasks {
                    t.await.unwrap().unwrap();
                }
            });
            let (sent, received) = counters.snapshot();
            assert!(sent >= 4, "{pace:?}: {sent} sent");
            assert_eq!(sent, received, "{pace:?}");
            assert_eq!(counters.wrong.load(Ordering::Relaxed), 0);
        }
    }
}
