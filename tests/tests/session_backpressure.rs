//! Backpressure and bounded memory (SPEC 4): a worker that writes as fast as
//! it can (`/flood.pphp`) toward a client that does not read, then toward
//! no client at all, cannot make tether hold more than the configured
//! `detached_backlog` (plus the replay window): the worker's writes block.
//!
//! Everything is measured as memory, not time: what the worker wrote (its
//! `wrote` events), what sits in kernel socket buffers on both links
//! (`tx_queue`/`rx_queue` of `/proc/net/tcp`), and tether's resident memory
//! (`VmRSS`). Steady states are found by polling until the worker's output
//! stops growing.

use std::time::Duration;

use tether_tests::session::{
    open, resume_ok, start_session_tether, tcp_queues, wait_stable, LineWorker,
};
use tether_tests::RssSampler;

const WORKER: &str = env!("CARGO_BIN_EXE_line_worker");
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const BACKLOG: u64 = MIB;
const REPLAY: u64 = 4 * MIB;
const MAX_LINE: u64 = 64 * KIB;
/// Above this the worker is plainly not held back (fail fast).
const RUNAWAY: u64 = 256 * MIB;
/// tether's RSS bound for one flooding session.
const RSS_BOUND_KIB: u64 = 64 * 1024;
/// Slack for what tether may hold besides the configured buffers: one line
/// being assembled and a read buffer.
const SLACK: u64 = MAX_LINE + 64 * KIB;

fn line(i: u64, size: usize) -> String {
    let mut s = format!("{i} ");
    while s.len() < size - 1 {
        s.push('x');
    }
    s.push('\n');
    s
}

#[test]
fn detached_flood_is_bounded_by_the_backlog() {
    let worker = LineWorker::start(WORKER, "flood");
    let tether = start_session_tether(
        &worker.url(),
        &[worker.url()],
        "detached_backlog = \"1MiB\"\nreplay_window = \"4MiB\"\nmax_line = \"64KiB\"",
    );
    let baseline_kib = tether.rss_kib().expect("tether RSS");
    let sampler = RssSampler::start(tether.pid());
    let size = 1024usize;
    let path = "/flood.pphp?size=1024";
    let mut o = open(tether.addr(), path);
    let sid = o.sid.clone();
    let read = 10u64;
    for i in 1..=read {
        assert_eq!(o.chan.line(), line(i, size));
    }
    let wrote = || worker.last_wrote(&sid).map_or(0, |w| w.1);
    let quiet = Duration::from_secs(1);
    let limit = Duration::from_secs(60);

    // Attached, the client not reading: the worker is held back by the
    // client's pace (SPEC 4: "reads from the worker only as fast as the
    // client takes lines").
    let attached = wait_stable("worker output (attached)", quiet, limit, RUNAWAY, wrote);
    let gw_to_worker = worker.peer_of(&sid).expect("conn event");
    let worker_queues = || {
        let (worker_tx, _) = tcp_queues(worker.addr(), gw_to_worker).unwrap_or((0, 0));
        let (_, gw_rx) = tcp_queues(gw_to_worker, worker.addr()).unwrap_or((0, 0));
        worker_tx + gw_rx
    };
    let (_, client_rx) = tcp_queues(o.chan.local_addr(), o.chan.peer_addr()).unwrap_or((0, 0));
    let (gw_tx, _) = tcp_queues(o.chan.peer_addr(), o.chan.local_addr()).unwrap_or((0, 0));
    // Bytes that left tether toward the client: read by us (the lines and
    // what the channel buffered) or still in the client link's buffers.
    let to_client = read * size as u64 + o.chan.pending().len() as u64 + client_rx + gw_tx;
    let queued = worker_queues();
    let held_attached = attached.saturating_sub(queued + to_client);
    println!(
        "attached: worker wrote {attached} B; kernel worker link {queued} B; \
         sent toward client {to_client} B; held in tether {held_attached} B"
    );
    assert!(
        held_attached <= BACKLOG + SLACK,
        "attached to a client that does not read, tether holds {held_attached} B of worker \
         output (worker wrote {attached}, kernel {queued}, client {to_client})"
    );

    // Detached: tether buffers up to detached_backlog, then stops reading.
    o.chan.reset();
    let detached = wait_stable("worker output (detached)", quiet, limit, RUNAWAY, wrote);
    let queued = worker_queues();
    let held = detached.saturating_sub(queued + to_client);
    println!(
        "detached: worker wrote {detached} B; kernel worker link {queued} B; held in tether \
         {held} B (backlog {BACKLOG} + replay {REPLAY} + slack {SLACK})"
    );
    assert!(
        held <= BACKLOG + SLACK,
        "detached, tether read {held} B of worker output beyond what it sent (bound: \
         detached_backlog {BACKLOG} + slack {SLACK}); worker wrote {detached}, kernel {queued}"
    );
    // The coarse form: backlog + kernel buffers.
    assert!(
        detached <= to_client + BACKLOG + SLACK + queued,
        "worker wrote {detached} B"
    );
    let peak_kib = sampler.finish();
    println!("tether RSS: baseline {baseline_kib} KiB, peak {peak_kib} KiB");
    assert!(
        peak_kib < RSS_BOUND_KIB,
        "tether's RSS reached {peak_kib} KiB (bound {RSS_BOUND_KIB} KiB)"
    );

    // The session is intact: a resume replays from our count and the flood
    // goes on in order.
    let mut r = resume_ok(tether.addr(), path, &sid, read);
    for i in read + 1..=read + 4096 {
        assert_eq!(r.chan.line(), line(i, size), "line {i} after the resume");
    }
    assert_eq!(worker.conns(&sid), 1);
}
