//! Fault injection (SPEC 4 guarantees): many concurrent native sessions on
//! `/numbered.pphp`, numbered lines both ways, connections reset at random
//! points (`drop_connection_for_test`) and resumed by the tether-client
//! library. At the end every line arrived exactly once and in order on both
//! sides, each worker saw one connection per session and no EOF before the
//! client's close.
//!
//! The RNG seed comes from `TETHER_FAULT_SEED` (else the clock) and is
//! printed with the figures; rerun with the same seed to replay the drop
//! pattern (thread timing still varies).

use std::collections::BTreeSet;
use std::time::Duration;

use tether_client::{ClientConfig, Session};
use tether_tests::session::{session_vhost, start_tether, LineWorker};

const WORKER: &str = env!("CARGO_BIN_EXE_line_worker");
/// Scale, overridable for a longer soak: `TETHER_FAULT_SESSIONS`,
/// `TETHER_FAULT_LINES`, `TETHER_FAULT_DROPS` (per session).
fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn session_count() -> usize {
    knob("TETHER_FAULT_SESSIONS", 20) as usize
}

fn lines() -> u64 {
    knob("TETHER_FAULT_LINES", 1000)
}

fn drops_per_session() -> usize {
    knob("TETHER_FAULT_DROPS", 10) as usize
}

/// xorshift64*: deterministic, no crate needed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    match std::env::var("TETHER_FAULT_SEED") {
        Ok(s) => s.trim().parse().expect("TETHER_FAULT_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

#[derive(Debug, Default)]
struct Figures {
    sid: String,
    drops: u64,
    resumes: u64,
    sent: u64,
    received: u64,
    losses: u64,
    duplicates: u64,
    disorder: Vec<String>,
}

/// One session: batches of 1..=8 lines `c<i>`, then their replies `w<i>`;
/// resets at the pre-drawn steps (a step is one send or one receive). The
/// session is returned open.
async fn run_session(url: String, mut rng: Rng) -> (Figures, Session) {
    let mut cfg = ClientConfig::new(url);
    cfg.response_timeout = Duration::from_secs(10);
    let mut s = Session::open(cfg).await.expect("open");
    let mut f = Figures {
        sid: s.id().as_str().to_string(),
        ..Figures::default()
    };
    let mut drop_at = BTreeSet::new();
    while drop_at.len() < drops_per_session() {
        drop_at.insert(rng.below(2 * lines()));
    }
    let mut step = 0u64;
    let mut maybe_drop = |s: &mut Session, f: &mut Figures| {
        if drop_at.contains(&step) {
            s.drop_connection_for_test();
            f.drops += 1;
        }
        step += 1;
    };
    let mut next_send = 1u64;
    let mut expected = 1u64;
    while next_send <= lines() {
        let batch = (1 + rng.below(8)).min(lines() - next_send + 1);
        for _ in 0..batch {
            maybe_drop(&mut s, &mut f);
            s.send_line(format!("c{next_send}").as_bytes())
                .await
                .unwrap_or_else(|e| panic!("{}: send c{next_send}: {e}", f.sid));
            f.sent += 1;
            next_send += 1;
        }
        for _ in 0..batch {
            maybe_drop(&mut s, &mut f);
            let line = s
                .next_line()
                .await
                .unwrap_or_else(|e| panic!("{}: waiting for w{expected}: {e}", f.sid))
                .unwrap_or_else(|| panic!("{}: ended before w{expected}", f.sid));
            f.received += 1;
            let text = String::from_utf8_lossy(&line);
            let n: u64 = text
                .strip_prefix('w')
                .and_then(|t| t.trim_end().parse().ok())
                .unwrap_or_else(|| panic!("{}: unexpected line {text:?}", f.sid));
            if n == expected {
                expected += 1;
            } else if n < expected {
                f.duplicates += 1;
                f.disorder.push(format!("got w{n}, expected w{expected}"));
            } else {
                f.losses += n - expected;
                f.disorder.push(format!("got w{n}, expected w{expected}"));
                expected = n + 1;
            }
        }
    }
    f.resumes = s.resumes();
    (f, s)
}

/// Worker lines are replies: `w<i>` answers `c<i>`.
#[test]
fn concurrent_sessions_survive_random_resets_exactly_once_in_order() {
    run("/numbered.pphp");
}

/// Worker lines come on the worker's own clock (one every ms), so resets
/// also catch worker lines in flight and queued while detached.
#[test]
fn concurrent_sessions_with_worker_clocked_lines_survive_random_resets() {
    run(&format!("/numbered.pphp?every_ms=1&n={}", lines()));
}

fn run(path: &str) {
    let seed = seed();
    println!("TETHER_FAULT_SEED={seed} path {path}");
    let worker = LineWorker::start(WORKER, "worker");
    // Host "*": the client sends the URL's authority as Host.
    let tether = start_tether(&[session_vhost("*", &worker.url(), &[worker.url()], "")]);
    let url = format!("http://{}{path}", tether.addr());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let mut master = Rng::new(seed);
    let tasks: Vec<_> = (0..session_count())
        .map(|_| rt.spawn(run_session(url.clone(), Rng::new(master.next()))))
        .collect();
    let mut figures = Vec::new();
    let mut sessions = Vec::new();
    for t in tasks {
        let (f, s) = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(240), t).await })
            .unwrap_or_else(|_| panic!("seed {seed}: a session hung"))
            .unwrap_or_else(|e| panic!("seed {seed}: a session failed: {e}"));
        figures.push(f);
        sessions.push(s);
    }

    let total = |g: fn(&Figures) -> u64| figures.iter().map(g).sum::<u64>();
    println!(
        "fault injection {path} (seed {seed}): {} sessions, {} resets requested, {} resumes, \
         {} lines client->worker, {} lines worker->client, {} losses, {} duplicates",
        figures.len(),
        total(|f| f.drops),
        total(|f| f.resumes),
        total(|f| f.sent),
        total(|f| f.received),
        total(|f| f.losses),
        total(|f| f.duplicates),
    );
    for f in &figures {
        assert!(
            f.disorder.is_empty(),
            "seed {seed}: session {} saw worker lines out of order: {:?}",
            f.sid,
            f.disorder
        );
        assert_eq!(f.received, lines(), "seed {seed}: {}", f.sid);
    }
    assert_eq!(
        total(|f| f.drops),
        (session_count() * drops_per_session()) as u64
    );

    // The worker side, before the clients close: one connection per
    // session, client lines in order so far, no EOF yet.
    let errors = worker.errors();
    assert!(errors.is_empty(), "seed {seed}: worker saw: {errors:#?}");
    for f in &figures {
        let ev = worker.events_of(&f.sid);
        let conns = ev.iter().filter(|e| e.starts_with("conn ")).count();
        assert_eq!(
            conns, 1,
            "seed {seed}: {} reached the worker {conns} times",
            f.sid
        );
        assert!(
            !ev.iter()
                .any(|e| e.starts_with("eof ") || e.starts_with("end ")),
            "seed {seed}: {} ended before the client closed: {ev:#?}",
            f.sid
        );
    }
    // That the worker read all lines() client lines is checked at its EOF
    // after the close: with worker-clocked lines the client's last lines may
    // still be on their way (or resent by the close's sync) at this point.

    // Close: every session ends with the worker having read lines() lines.
    rt.block_on(async {
        for s in sessions {
            tokio::time::timeout(Duration::from_secs(30), s.close())
                .await
                .unwrap_or_else(|_| panic!("seed {seed}: close hung"))
                .unwrap_or_else(|e| panic!("seed {seed}: close: {e}"));
        }
    });
    for f in &figures {
        let eof = worker.wait_eof(&f.sid);
        assert!(
            eof.starts_with(&format!("eof {} {}", f.sid, lines())),
            "seed {seed}: {eof}"
        );
    }
    let errors = worker.errors();
    assert!(errors.is_empty(), "seed {seed}: worker saw: {errors:#?}");
}
