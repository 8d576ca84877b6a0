//! Memory that one client controls in a session (issue 12, item 2): measured
//! as tether's resident memory (`VmRSS`), black-box.
//!
//! - (a) A WebSocket client that pings without reading the pongs: pending
//!   control frames are bounded, and tether stops reading that client until
//!   they drain; every ping still gets its pong once the client reads.
//! - (b) Lines held for a session, in the replay window and the detached
//!   backlog, cost their bytes whatever their length: with 1-byte lines a
//!   full window and a full backlog stay within 1.5x of the configured
//!   sizes plus a small constant per session.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tether_tests::raw_http::get;
use tether_tests::session::{open, start_session_tether, LineWorker, HOST, WAIT};
use tether_tests::websocket::{OP_BINARY, OP_PONG, OP_TEXT};
use tether_tests::{heavy_lock, wait_for, RssSampler, Tether, WsClient};

const WORKER: &str = env!("CARGO_BIN_EXE_line_worker");
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The sum of a gauge's samples on tether's `/metrics`.
fn gauge(tether: &Tether, name: &str) -> u64 {
    let admin = tether.admin_addr().expect("admin_listen");
    let body = get(admin, "admin", "/metrics").body_text();
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn rss_kib(tether: &Tether) -> u64 {
    tether.rss_kib().expect("tether's VmRSS")
}

// ------------------------------------------------------------- (a) pongs

/// Pings the client sends; a client written to hurt sends far more.
const PINGS: u64 = 400_000;
/// 125 bytes, the largest a ping may carry: each pong is 127 bytes, so
/// queueing all of them would take about 48 MiB.
const PING_PAYLOAD: usize = 125;
/// tether's growth allowed while the client does not read.
const PONG_GROWTH_BOUND_KIB: u64 = 16 * 1024;

/// A masked client ping (mask key 0: the payload goes as is).
fn ping_frame() -> Vec<u8> {
    let mut f = vec![0x89, 0x80 | PING_PAYLOAD as u8, 0, 0, 0, 0];
    f.extend(std::iter::repeat_n(b'p', PING_PAYLOAD));
    f
}

#[test]
fn unread_pongs_stop_reading_instead_of_growing_memory() {
    let _heavy = heavy_lock();
    let worker = LineWorker::start(WORKER, "worker");
    let tether = start_session_tether(&worker.url(), &[worker.url()], "");
    let (mut ws, _) = WsClient::connect(
        tether.addr(),
        HOST,
        "/echo.pphp?initial=0",
        &[("Sec-WebSocket-Protocol", "persistent")],
    )
    .unwrap_or_else(|r| panic!("no 101: {}", r.head_text()));
    ws.conn().set_read_timeout(WAIT);
    ws.send_binary(b"");
    let open = ws.read_message().expect("open record");
    assert_eq!(open.opcode, OP_BINARY, "{open:?}");

    let baseline = rss_kib(&tether);
    let sampler = RssSampler::start(tether.pid());
    // Whole frames only, from one thread, blocking: once tether stops
    // reading, the writes wait in the kernel and resume when it reads again.
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut stream: TcpStream = ws.conn().stream().try_clone().expect("clone");
    let sender = {
        let (sent, done) = (sent.clone(), done.clone());
        thread::spawn(move || {
            let batch: Vec<u8> = ping_frame().repeat(1000);
            for _ in 0..PINGS / 1000 {
                stream.write_all(&batch).expect("sending pings");
                sent.fetch_add(1000, Ordering::Relaxed);
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    // The client reads nothing for a while (or until all is sent and
    // tether had time to take it).
    let start = Instant::now();
    let mut finished_at = None;
    while start.elapsed() < Duration::from_secs(5) {
        if done.load(Ordering::Relaxed) {
            let at = *finished_at.get_or_insert_with(Instant::now);
            if at.elapsed() > Duration::from_secs(1) {
                break;
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    let peak = sampler.finish();
    let growth = peak.saturating_sub(baseline);
    let sent_while_unread = sent.load(Ordering::Relaxed);
    println!(
        "pings sent while the client read nothing: {sent_while_unread} of {PINGS}; \
         tether RSS baseline {baseline} KiB, peak {peak} KiB, growth {growth} KiB"
    );
    assert!(
        growth < PONG_GROWTH_BOUND_KIB,
        "a client that pings without reading grew tether by {growth} KiB \
         ({sent_while_unread} pings sent; bound {PONG_GROWTH_BOUND_KIB} KiB)"
    );

    // Backpressure, not loss: reading now, every ping gets its pong and
    // the session still carries lines.
    let mut pongs = 0u64;
    while pongs < PINGS {
        let f = ws
            .read_frame()
            .unwrap_or_else(|e| panic!("after {pongs} pongs of {PINGS}: {e}"));
        assert_eq!(f.opcode, OP_PONG, "after {pongs} pongs: {f:?}");
        assert_eq!(f.payload.len(), PING_PAYLOAD);
        pongs += 1;
    }
    sender.join().expect("sender");
    ws.send_text("alive");
    let echo = ws.read_message().expect("echo");
    assert_eq!((echo.opcode, echo.payload), (OP_TEXT, b"1 alive".to_vec()));
}

// ------------------------------------------------------ (b) short lines

/// Sessions filled before the baseline is taken: the first ones also pay
/// for the allocator's arena (it takes memory in 2 MiB huge pages, and
/// keeps some of what the first bursts of traffic used).
const WARM_SESSIONS: u64 = 4;
/// Sessions measured, for a per-session figure above that noise.
const SESSIONS: u64 = 16;
const REPLAY: u64 = 256 * KIB;
const BACKLOG: u64 = MIB;
/// Lines the client reads before it drops: more than the window holds, so
/// that the window is full of 1-byte lines.
const READ: u64 = 300_000;
/// What a session may cost beyond 1.5x its configured buffers: its task,
/// its worker connection and read buffer, a partial line.
const PER_SESSION_SLACK_KIB: u64 = 128;
/// What the process may grow by besides sessions: mimalloc takes memory in
/// 2 MiB huge pages here and keeps some of the buffers a session freed
/// while it grew (its ring doubles up to the limit) for the next ones.
const GLOBAL_SLACK_KIB: u64 = 8 * 1024;

/// The most `sessions` full sessions may add to tether's RSS.
fn bound_kib(sessions: u64) -> u64 {
    sessions * ((REPLAY + BACKLOG) * 3 / 2 / KIB + PER_SESSION_SLACK_KIB) + GLOBAL_SLACK_KIB
}

/// Reads from a session's channel until `want` lines (LFs) have come.
fn read_lines(mut stream: &TcpStream, already: &[u8], want: u64) {
    let mut got = already.iter().filter(|&&b| b == b'\n').count() as u64;
    let mut buf = vec![0u8; 64 * 1024];
    while got < want {
        let n = stream.read(&mut buf).expect("reading lines");
        assert!(n > 0, "EOF after {got} lines");
        got += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

/// Opens a session whose worker writes 1-byte lines, reads `READ` of them
/// and drops the connection; returns once tether holds `n` sessions' full
/// windows and backlogs.
fn fill_session(tether: &Tether, n: u64) {
    // Enough lines for the client, the window and the backlog, and more,
    // which wait in the kernel and the worker.
    let path = format!("/blank.pphp?n={}", READ + BACKLOG + MIB);
    let o = open(tether.addr(), &path);
    read_lines(o.chan.stream(), o.chan.pending(), READ);
    o.chan.reset();
    wait_for("full windows and backlogs", Duration::from_secs(60), || {
        let replay = gauge(tether, "tether_replay_bytes");
        let backlog = gauge(tether, "tether_backlog_bytes");
        (replay >= n * REPLAY && backlog >= n * BACKLOG).then_some(())
    });
}

#[test]
fn one_byte_lines_cost_their_bytes_in_the_window_and_the_backlog() {
    let _heavy = heavy_lock();
    let worker = LineWorker::start(WORKER, "worker");
    let tether = start_session_tether(
        &worker.url(),
        &[worker.url()],
        // No line rate limit: it only slows the filling, it bounds nothing.
        &format!(
            "replay_window = \"{}KiB\"\ndetached_backlog = \"{}KiB\"\n\
             max_lines_per_second = 4294967295",
            REPLAY / KIB,
            BACKLOG / KIB
        ),
    );
    for n in 1..=WARM_SESSIONS {
        fill_session(&tether, n);
    }
    let warm = rss_kib(&tether);
    println!("{WARM_SESSIONS} sessions full: tether at {warm} KiB");
    let sampler = RssSampler::start(tether.pid());
    for i in 1..=SESSIONS {
        fill_session(&tether, WARM_SESSIONS + i);
        let growth = rss_kib(&tether).saturating_sub(warm);
        println!("{i} more sessions full: tether grew {growth} KiB");
        // Loosely on the way (the allocator takes memory in large steps),
        // to stop early when the figure is plainly out of bounds.
        assert!(
            growth <= 2 * bound_kib(i),
            "{i} sessions, each holding {REPLAY} B of window and {BACKLOG} B of backlog in \
             1-byte lines, grew tether by {growth} KiB (bound {} KiB)",
            bound_kib(i)
        );
    }
    thread::sleep(Duration::from_millis(500));
    let growth = rss_kib(&tether).saturating_sub(warm);
    let peak = sampler.finish().saturating_sub(warm);
    println!(
        "{SESSIONS} sessions of {REPLAY} B window + {BACKLOG} B backlog in 1-byte lines: \
         tether grew {growth} KiB (peak {peak} KiB), {} KiB per session; bound {} KiB",
        growth / SESSIONS,
        bound_kib(SESSIONS)
    );
    assert!(
        peak <= bound_kib(SESSIONS),
        "{SESSIONS} sessions grew tether by {peak} KiB at the peak (bound {} KiB: 1.5x of \
         window and backlog and {PER_SESSION_SLACK_KIB} KiB per session, \
         {GLOBAL_SLACK_KIB} KiB in all)",
        bound_kib(SESSIONS)
    );
    let all = WARM_SESSIONS + SESSIONS;
    assert_eq!(gauge(&tether, "tether_backlog_bytes"), all * BACKLOG);
    assert_eq!(gauge(&tether, "tether_replay_bytes"), all * REPLAY);
}

// ----------------------------------------- (b) a resume that is not read

/// A window larger than the backlog: what a resume replays is then most of
/// what the session may hold.
const BIG_REPLAY: u64 = MIB;
const SMALL_BACKLOG: u64 = 64 * KIB;
const RESUMED_WARM: u64 = 4;
const RESUMED: u64 = 16;

fn resumed_bound_kib(sessions: u64) -> u64 {
    sessions * ((BIG_REPLAY + SMALL_BACKLOG) * 3 / 2 / KIB + PER_SESSION_SLACK_KIB)
        + GLOBAL_SLACK_KIB
}

/// A session whose window holds `BIG_REPLAY` 1-byte lines, all of which
/// the client got; then a WebSocket resume from 0 that reads nothing after
/// the gateway's record: the whole window is owed to a client that does
/// not take it.
fn resume_unread(tether: &Tether, n: u64) -> WsClient {
    let o = open(tether.addr(), &format!("/blank.pphp?n={BIG_REPLAY}"));
    read_lines(o.chan.stream(), o.chan.pending(), BIG_REPLAY);
    let sid = o.sid.clone();
    o.chan.reset();
    wait_for("full windows", Duration::from_secs(60), || {
        (gauge(tether, "tether_replay_bytes") >= n * BIG_REPLAY).then_some(())
    });
    let (mut ws, _) = WsClient::connect(
        tether.addr(),
        HOST,
        "/blank.pphp",
        &[("Sec-WebSocket-Protocol", "persistent")],
    )
    .unwrap_or_else(|r| panic!("no 101: {}", r.head_text()));
    ws.conn().set_read_timeout(WAIT);
    ws.send_binary(format!("sid={sid}&received=0").as_bytes());
    let record = ws.read_frame().expect("resume record");
    assert_eq!(
        String::from_utf8_lossy(&record.payload),
        format!("sid={sid}&received=0&status=200&initial=0")
    );
    ws
}

#[test]
fn a_resumed_client_that_does_not_read_costs_no_second_window() {
    let _heavy = heavy_lock();
    let worker = LineWorker::start(WORKER, "worker");
    let tether = start_session_tether(
        &worker.url(),
        &[worker.url()],
        &format!(
            "replay_window = \"{}KiB\"\ndetached_backlog = \"{}KiB\"\n\
             max_lines_per_second = 4294967295",
            BIG_REPLAY / KIB,
            SMALL_BACKLOG / KIB
        ),
    );
    let mut clients = Vec::new();
    for n in 1..=RESUMED_WARM {
        clients.push(resume_unread(&tether, n));
    }
    thread::sleep(Duration::from_millis(300));
    let warm = rss_kib(&tether);
    let sampler = RssSampler::start(tether.pid());
    for i in 1..=RESUMED {
        clients.push(resume_unread(&tether, RESUMED_WARM + i));
    }
    thread::sleep(Duration::from_millis(500));
    let growth = rss_kib(&tether).saturating_sub(warm);
    let peak = sampler.finish().saturating_sub(warm);
    println!(
        "{RESUMED} sessions with {BIG_REPLAY} B windows of 1-byte lines, resumed from 0 and \
         not read: tether grew {growth} KiB (peak {peak} KiB), {} KiB per session; bound {} KiB",
        growth / RESUMED,
        resumed_bound_kib(RESUMED)
    );
    assert!(
        peak <= resumed_bound_kib(RESUMED),
        "{RESUMED} resumed sessions that are not read grew tether by {peak} KiB (bound {} KiB: \
         1.5x of window and backlog and {PER_SESSION_SLACK_KIB} KiB per session, \
         {GLOBAL_SLACK_KIB} KiB in all)",
        resumed_bound_kib(RESUMED)
    );
    // The replay is owed, not lost: the last client reads it all.
    let mut last = clients.pop().expect("a client");
    let mut lines = 0;
    while lines < BIG_REPLAY {
        let f = last.read_frame().expect("replayed line");
        assert_eq!((f.opcode, f.payload.len()), (OP_TEXT, 0), "line {lines}");
        lines += 1;
    }
}
