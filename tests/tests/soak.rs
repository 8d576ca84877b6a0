//! Soak (`make soak`, docs/testing.md): for `SOAK_SECS` seconds (default
//! 60), plain HTTP/1.1 traffic through tether to nginx and persistent
//! sessions to `line_worker` at the same time, the sessions' connections
//! reset at random and resumed by tether-client, sessions closed and opened
//! anew all along. Prints tether's RSS every `SOAK_SAMPLE_SECS` (default 5)
//! with the running counts, then the totals; fails on any plain error, any
//! lost, duplicated or reordered line, or any numbering error the worker saw.
//!
//! Ignored by `cargo test`: run it with `make soak`, or
//! `cargo test -p tether-tests --test soak -- --ignored --nocapture`.
//! Knobs: `SOAK_SECS`, `SOAK_SAMPLE_SECS`, `SOAK_PLAIN_CLIENTS` (threads,
//! default 4), `SOAK_SESSIONS` (concurrent sessions, default 16),
//! `SOAK_DROP_EVERY` (a reset about one step in N, default 150; 0: none),
//! `SOAK_SEED`; `TETHER_BIN` runs another tether build (e.g. release).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tether_client::{ClientConfig, Session};
use tether_tests::session::{session_vhost, start_tether, LineWorker};
use tether_tests::{Nginx, RawConn};

const WORKER: &str = env!("CARGO_BIN_EXE_line_worker");
/// Files served by nginx: (path, size).
const FILES: [(&str, usize); 3] = [
    ("/small.txt", 1024),
    ("/mid.bin", 64 * 1024),
    ("/big.bin", 1024 * 1024),
];
const UPLOAD: usize = 16 * 1024;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: reproducible drop patterns without a crate.
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

/// Running totals, shared by the load threads, the session tasks and the
/// RSS sampler.
#[derive(Default)]
struct Counts {
    plain: AtomicU64,
    plain_errors: AtomicU64,
    sessions: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    drops: AtomicU64,
    resumes: AtomicU64,
    losses: AtomicU64,
    duplicates: AtomicU64,
    /// The first few problems, for the failure message.
    problems: Mutex<Vec<String>>,
}

impl Counts {
    fn problem(&self, what: String) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() < 20 {
            p.push(what);
        }
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

#[test]
#[ignore = "a timed soak: make soak"]
fn soak_plain_and_sessions_with_drops() {
    let secs = knob("SOAK_SECS", 60);
    let sample = Duration::from_secs(knob("SOAK_SAMPLE_SECS", 5).max(1));
    let plain_clients = knob("SOAK_PLAIN_CLIENTS", 4);
    let sessions = knob("SOAK_SESSIONS", 16);
    let seed = knob(
        "SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    );
    println!(
        "soak: {secs} s, {plain_clients} plain clients, {sessions} concurrent sessions, SOAK_SEED={seed}"
    );

    let nginx = Nginx::standard();
    for (i, (path, size)) in FILES.iter().enumerate() {
        nginx.put_file(
            path.trim_start_matches('/'),
            &tether_tests::payload::pattern(i as u64, *size),
        );
    }
    let worker = LineWorker::start(WORKER, "worker");
    // Host "*": tether-client sends the URL's authority as Host.
    let tether = start_tether(&[session_vhost(
        "*",
        &format!("http://{}", nginx.addr()),
        &[worker.url()],
        "",
    )]);
    let addr = tether.addr();
    let counts = Arc::new(Counts::default());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut master = Rng::new(seed);

    let plain: Vec<_> = (0..plain_clients)
        .map(|i| {
            let counts = counts.clone();
            let rng = Rng::new(master.next());
            std::thread::spawn(move || plain_client(addr, i, rng, deadline, &counts))
        })
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let url = format!("http://{addr}");
    let tasks: Vec<_> = (0..sessions)
        .map(|i| {
            rt.spawn(session_loop(
                url.clone(),
                i,
                Rng::new(master.next()),
                deadline,
                counts.clone(),
            ))
        })
        .collect();

    let pid = tether.pid();
    let admin = tether
        .admin_addr()
        .expect("the soak config has an admin listener");
    let mut rss = Vec::new();
    let mut next_sample = start;
    while Instant::now() < deadline + Duration::from_secs(2) {
        if Instant::now() >= next_sample {
            let kib = tether_tests::rss_kib(pid).unwrap_or(0);
            rss.push(kib);
            println!(
                "soak: t={:>5}s rss={kib:>7} KiB live sessions={} plain={} errors={} sessions={} lines sent={} received={} drops={} losses={} duplicates={}",
                start.elapsed().as_secs(),
                live_sessions(admin),
                Counts::get(&counts.plain),
                Counts::get(&counts.plain_errors),
                Counts::get(&counts.sessions),
                Counts::get(&counts.sent),
                Counts::get(&counts.received),
                Counts::get(&counts.drops),
                Counts::get(&counts.losses),
                Counts::get(&counts.duplicates),
            );
            next_sample += sample;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    for t in plain {
        t.join().expect("a plain client panicked");
    }
    let mut closed: Vec<(String, u64)> = Vec::new();
    for t in tasks {
        let done = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(120), t).await })
            .unwrap_or_else(|_| panic!("seed {seed}: a session loop hung"))
            .unwrap_or_else(|e| panic!("seed {seed}: a session loop failed: {e}"));
        closed.extend(done);
    }

    // Every closed session reached the worker whole: its EOF counts every
    // line the client sent.
    let want: HashMap<&str, u64> = closed.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    let mut eofs: HashMap<String, u64> = HashMap::new();
    let wait_until = Instant::now() + Duration::from_secs(10);
    loop {
        for e in worker.events() {
            let mut w = e.split(' ');
            if let (Some("eof"), Some(sid), Some(n)) = (w.next(), w.next(), w.next()) {
                if want.contains_key(sid) {
                    eofs.insert(sid.to_string(), n.parse().unwrap_or(u64::MAX));
                }
            }
        }
        if eofs.len() == want.len() || Instant::now() > wait_until {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for (sid, n) in &want {
        match eofs.get(*sid) {
            Some(got) if got == n => {}
            got => counts.problem(format!(
                "worker: session {sid} sent {n} lines, worker EOF after {got:?}"
            )),
        }
    }
    let worker_errors = worker.errors();

    let kib = tether_tests::rss_kib(pid).unwrap_or(0);
    rss.push(kib);
    let live = live_sessions(admin);
    let first = rss.first().copied().unwrap_or(0);
    let peak = rss.iter().copied().max().unwrap_or(0);
    println!(
        "soak: done in {} s (seed {seed}): tether RSS first {first} KiB, peak {peak} KiB, last {kib} KiB; \
         live sessions at the end {live}; \
         plain requests {} ({} errors); sessions {} ({} closed and checked at the worker); \
         lines client->worker {}, worker->client {}; drops {}, resumes {}; losses {}, duplicates {}; \
         worker errors {}",
        start.elapsed().as_secs(),
        Counts::get(&counts.plain),
        Counts::get(&counts.plain_errors),
        Counts::get(&counts.sessions),
        closed.len(),
        Counts::get(&counts.sent),
        Counts::get(&counts.received),
        Counts::get(&counts.drops),
        Counts::get(&counts.resumes),
        Counts::get(&counts.losses),
        Counts::get(&counts.duplicates),
        worker_errors.len(),
    );

    // The session families, to tell a leak's end reason at a glance.
    for line in metrics(admin).unwrap_or_default().lines() {
        if line.starts_with("tether_sessions") && !line.ends_with(" 0") {
            println!("soak: {line}");
        }
    }

    let problems = counts.problems.lock().unwrap().clone();
    assert!(
        problems.is_empty() && worker_errors.is_empty(),
        "seed {seed}: problems: {problems:#?}\nworker errors: {worker_errors:#?}"
    );
    assert_eq!(Counts::get(&counts.plain_errors), 0);
    assert_eq!(Counts::get(&counts.losses), 0);
    assert_eq!(Counts::get(&counts.duplicates), 0);
    assert!(Counts::get(&counts.plain) > 0 && Counts::get(&counts.received) > 0);
}

/// Sessions tether holds (`tether_sessions`, attached and detached), from
/// the admin listener's `/metrics`; `-` when it cannot be read.
fn live_sessions(admin: SocketAddr) -> String {
    let Ok(text) = metrics(admin) else {
        return "-".into();
    };
    let live: f64 = text
        .lines()
        .filter(|l| l.starts_with("tether_sessions{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    format!("{live}")
}

fn metrics(admin: SocketAddr) -> std::io::Result<String> {
    let mut c = RawConn::try_connect(admin)?;
    c.set_read_timeout(Duration::from_secs(5));
    let get = tether_tests::raw_http::request_bytes("GET", "/metrics", "admin", &[], b"");
    c.try_send(&get)?;
    Ok(c.read_response_to("GET")?.body_text())
}

/// Keep-alive requests of every kind nginx serves here, one connection in
/// ten closed after its request; each answer checked by status and length.
fn plain_client(addr: SocketAddr, id: u64, mut rng: Rng, deadline: Instant, counts: &Counts) {
    let upload = tether_tests::payload::pattern(100 + id, UPLOAD);
    let mut conn: Option<RawConn> = None;
    while Instant::now() < deadline {
        let close = rng.below(10) == 0;
        let pick = rng.below(100);
        let (method, target, body, want_status, want_len): (&str, String, &[u8], &[u16], usize) =
            match pick {
                0..=39 => ("GET", FILES[0].0.into(), b"", &[200], FILES[0].1),
                40..=59 => ("GET", FILES[1].0.into(), b"", &[200], FILES[1].1),
                60..=64 => ("GET", FILES[2].0.into(), b"", &[200], FILES[2].1),
                65..=74 => ("HEAD", FILES[1].0.into(), b"", &[200], 0),
                75..=84 => ("PUT", format!("/up/soak-{id}"), &upload, &[201, 204], 0),
                85..=94 => ("GET", "/echo".into(), b"", &[200], usize::MAX),
                _ => ("GET", "/missing".into(), b"", &[404], usize::MAX),
            };
        let headers: &[(&str, &str)] = if close {
            &[("Connection", "close")]
        } else {
            &[]
        };
        let request =
            tether_tests::raw_http::request_bytes(method, &target, "soak.test", headers, body);
        let result = (|| {
            let c = match &mut conn {
                Some(c) => c,
                None => conn.insert(RawConn::try_connect(addr)?),
            };
            c.set_read_timeout(Duration::from_secs(10));
            c.try_send(&request)?;
            c.read_final_response_to(method)
        })();
        counts.plain.fetch_add(1, Ordering::Relaxed);
        let wrong = match &result {
            Err(e) => Some(format!("{method} {target}: {e}")),
            Ok(r) if !want_status.contains(&r.status) => {
                Some(format!("{method} {target}: status {}", r.status))
            }
            Ok(r) if want_len != usize::MAX && r.body.len() != want_len => Some(format!(
                "{method} {target}: {} body bytes, want {want_len}",
                r.body.len()
            )),
            Ok(_) => None,
        };
        if let Some(what) = wrong {
            counts.plain_errors.fetch_add(1, Ordering::Relaxed);
            counts.problem(what);
            conn = None;
        } else if close || result.is_ok_and(|r| r.has_token("connection", "close")) {
            conn = None;
        }
    }
}

/// Sessions one after the other until the deadline: each sends 50..=500
/// numbered lines `c<i>` in batches of 1..=8 and reads the worker's `w<i>`
/// (replies, or on the worker's own clock for every other session), its
/// connection reset at about one step in 150; then it closes. Returns the
/// closed sessions with the lines each sent.
async fn session_loop(
    url: String,
    id: u64,
    mut rng: Rng,
    deadline: Instant,
    counts: Arc<Counts>,
) -> Vec<(String, u64)> {
    let mut closed = Vec::new();
    while Instant::now() < deadline {
        let lines = 50 + rng.below(451);
        let path = if id.is_multiple_of(2) {
            "/numbered.pphp".to_string()
        } else {
            format!("/numbered.pphp?every_ms=2&n={lines}")
        };
        let mut cfg = ClientConfig::new(format!("{url}{path}"));
        cfg.response_timeout = Duration::from_secs(10);
        let mut s = match Session::open(cfg).await {
            Ok(s) => s,
            Err(e) => {
                counts.problem(format!("session open: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        counts.sessions.fetch_add(1, Ordering::Relaxed);
        let sid = s.id().as_str().to_string();
        match run_session(&mut s, lines, &mut rng, &counts).await {
            Ok(()) => {
                counts.resumes.fetch_add(s.resumes(), Ordering::Relaxed);
                match tokio::time::timeout(Duration::from_secs(30), s.close()).await {
                    Ok(Ok(())) => closed.push((sid, lines)),
                    Ok(Err(e)) => counts.problem(format!("{sid}: close: {e}")),
                    Err(_) => counts.problem(format!("{sid}: close hung")),
                }
            }
            Err(e) => counts.problem(format!("{sid}: {e}")),
        }
    }
    closed
}

async fn run_session(
    s: &mut Session,
    lines: u64,
    rng: &mut Rng,
    counts: &Counts,
) -> Result<(), String> {
    let drop_every = knob("SOAK_DROP_EVERY", 150);
    let mut next_send = 1u64;
    let mut expected = 1u64;
    while next_send <= lines {
        let batch = (1 + rng.below(8)).min(lines - next_send + 1);
        for _ in 0..batch {
            if drop_every != 0 && rng.below(drop_every) == 0 {
                s.drop_connection_for_test();
                counts.drops.fetch_add(1, Ordering::Relaxed);
            }
            s.send_line(format!("c{next_send}").as_bytes())
                .await
                .map_err(|e| format!("send c{next_send}: {e}"))?;
            counts.sent.fetch_add(1, Ordering::Relaxed);
            next_send += 1;
        }
        for _ in 0..batch {
            if drop_every != 0 && rng.below(drop_every) == 0 {
                s.drop_connection_for_test();
                counts.drops.fetch_add(1, Ordering::Relaxed);
            }
            let line = tokio::time::timeout(Duration::from_secs(30), s.next_line())
                .await
                .map_err(|_| format!("no w{expected} within 30 s"))?
                .map_err(|e| format!("waiting for w{expected}: {e}"))?
                .ok_or_else(|| format!("ended before w{expected}"))?;
            counts.received.fetch_add(1, Ordering::Relaxed);
            let text = String::from_utf8_lossy(&line);
            let n: u64 = text
                .strip_prefix('w')
                .and_then(|t| t.trim_end().parse().ok())
                .ok_or_else(|| format!("unexpected line {text:?}"))?;
            if n == expected {
                expected += 1;
            } else if n < expected {
                counts.duplicates.fetch_add(1, Ordering::Relaxed);
                return Err(format!("got w{n} again, expected w{expected}"));
            } else {
                counts.losses.fetch_add(n - expected, Ordering::Relaxed);
                return Err(format!("got w{n}, expected w{expected}"));
            }
        }
    }
    Ok(())
}
