//! `tether-bench`: tether, nginx and HAProxy side by side as reverse proxies
//! in front of the same origin, on the same workload, in one run. It prints
//! a Markdown report and asserts nothing (DESIGN, "Budgets"): a header
//! saying when, on what and how it ran ([`report`]), then one table per
//! measure, each with a column per proxy and the budgets beside the figures,
//! so the whole can be pasted into docs/performance.md as-is.
//!
//! What runs: an nginx origin (one worker) serving a 1 KiB file, a 64 KiB
//! file and a large sparse file, a WebSocket echo origin and a line-echo
//! session worker (both in this process, [`ws`], [`session`]), and each
//! proxy in turn, started from its own configuration in a temp dir on free
//! 127.0.0.1 ports ([`proxy`]). With `taskset` and two or more cores, each
//! proxy runs on CPU 1 and the load generators, the origin and this process
//! on CPU 0, so the proxy has one core to itself ("one worker pinned to one
//! core"). With `--baseline`, a second tether binary is measured the same
//! way as a column of its own, "tether (baseline)", so an optimisation
//! shows before and after in one run.
//!
//! The measures:
//!
//! 1. **CPU per proxied request**, three workloads on the same proxy
//!    process, each `wrk -t1 -c64` for a warm-up second, then for `--secs`
//!    seconds: 1 KiB responses on keep-alive connections, 64 KiB responses
//!    likewise, and 1 KiB responses with `Connection: close` (a new TCP
//!    connection per request). The proxy's `utime + stime` (all threads,
//!    nginx's master and worker) before and after, divided by the requests
//!    wrk completed. Also requests/s, wrk's p99, and wrk's errors.
//! 2. **Idle WebSocket memory**: `--ws` WebSocket connections opened through
//!    the proxy to the echo origin and left idle; the proxy's VmRSS (nginx:
//!    the worker) before and after, divided by the count.
//! 3. **Streamed download**: `curl` of the large file (`--mib` MiB) directly
//!    and through the proxy: one untimed download of each, then five
//!    rounds alternately; the medians, and the proxied one as a share of
//!    the direct one.
//! 4. **Persistent sessions** (tether only; nginx and HAProxy have none),
//!    in front of the line-echo worker, with this process pinned to CPU 0
//!    when pinning:
//!    - *idle session memory*: `--sessions` sessions (and a third as many,
//!      to show it is linear), each on a fresh tether: opened, one line
//!      each way, then idle; tether's VmRSS before and after, divided by
//!      the count; `--sessions` again with no line (handshake only); and
//!      `--sessions` detached: three lines sent, the client connection
//!      closed without reading the echoes (tether keeps them for a resume);
//!    - *resume latency*: one session, `--resumes` times: send `ping N`,
//!      close the connection without reading the echo, resume with the
//!      count of lines received; the time from the start of the connect to
//!      the first whole line after the answer head (the echo, replayed or
//!      live); p50, p99 and max; tether's on-CPU time and run-queue wait
//!      per resume (schedstat); and, for reference, line round trips
//!      through tether and straight to the worker.
//! 5. **Session line traffic** (tether only), each pace on a fresh tether,
//!    the clients tasks on this process's tokio runtime ([`relay`]):
//!    *sparse*, 2 000 sessions each sending one line per second (spread
//!    over the second) and reading its echo; *windowed*, 64 sessions each
//!    keeping 64 lines in flight. tether's CPU time over `--secs` seconds
//!    after a warm-up second, per line relayed (both directions counted),
//!    lines/s, and every echo checked: losses and wrong lines counted.
//!
//! Usage: `tether-bench [--secs N] [--ws N] [--mib N] [--sessions N]
//! [--resumes N] [--only http|ws|sessions] [--baseline /abs/path/to/tether]
//! [--out FILE]` (defaults 10, 2000, 256, 8000, 500, all, none, stdout
//! only). `--only sessions` runs measures 4 and 5. The tether binary is
//! `$TETHER_BIN`, else `tether` beside this program (`cargo build --release
//! -p tether` puts it there). `make bench` builds both and runs this.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

mod load;
mod procfs;
mod proxy;
mod relay;
mod report;
mod session;
mod table;
mod ws;

use proxy::{Kind, Programs, Server};
use table::{Cell, Table};

/// What the command line chose.
struct Options {
    secs: u32,
    ws_conns: u32,
    mib: u64,
    sessions: u32,
    resumes: u32,
    /// `Some("http" | "ws" | "sessions")`: only that group of measures.
    only: Option<String>,
    /// A second tether binary measured beside the first (`--baseline`).
    baseline: Option<PathBuf>,
    /// Where to write the report too (`--out`).
    out: Option<PathBuf>,
}

impl Options {
    fn runs(&self, group: &str) -> bool {
        self.only.as_deref().is_none_or(|o| o == group)
    }
}

/// The results for one proxy; each part fails on its own.
struct Results {
    http: Result<HttpResults, String>,
    ws: Result<WsResults, String>,
    sessions: Result<SessionResults, String>,
}

struct HttpResults {
    /// One per [`WORKLOADS`] entry, in that order.
    loads: Vec<Result<LoadResults, String>>,
    /// (proxied, direct) medians in bytes/s.
    download: Result<(f64, f64), String>,
}

/// One wrk workload on one proxy.
struct LoadResults {
    wrk: load::WrkReport,
    /// Microseconds of proxy CPU per completed request.
    cpu_per_request: Result<f64, String>,
    /// Time the proxy was ready to run but waited for its core during the
    /// run (schedstat): another process on the proxy's core makes the
    /// figures above unreliable, and this says so.
    waited: Option<Duration>,
    /// TCP connections opened on the host during the run (wrk's and the
    /// proxy's to the origin): shows a workload opens what it says.
    opened: Option<u64>,
}

/// A request workload of measure 1: what it is called, the file, and the
/// extra request headers.
struct Workload {
    title: &'static str,
    path: &'static str,
    headers: &'static [&'static str],
}

/// Measure 1's workloads, each `wrk -t1 -c64` on the same proxy process:
/// small responses, large ones, and a new TCP connection per request
/// (wrk reconnects after each response the proxy closes).
const WORKLOADS: [Workload; 3] = [
    Workload {
        title: "1 KiB responses, 64 keep-alive connections",
        path: "/1k",
        headers: &[],
    },
    Workload {
        title: "64 KiB responses, 64 keep-alive connections",
        path: "/64k",
        headers: &[],
    },
    Workload {
        title: "1 KiB responses, a new connection per request (`Connection: close`), 64 at once",
        path: "/1k",
        headers: &["Connection: close"],
    },
];

struct WsResults {
    before_kib: u64,
    after_kib: u64,
    conns: u32,
}

/// Measure 4, tether only.
struct SessionResults {
    /// One per session count, smallest first.
    idle: Vec<Result<IdleSessions, String>>,
    resume: Result<ResumeResults, String>,
    sparse: Result<RelayResults, String>,
    windowed: Result<RelayResults, String>,
}

/// What each idle session did before the RSS was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idle {
    /// Handshake only.
    Handshake,
    /// One line each way, client attached.
    Lines,
    /// Three lines sent, client connection closed without reading the
    /// echoes: detached, the echoes buffered unacknowledged in tether.
    Detached,
}

struct IdleSessions {
    sessions: u32,
    before_kib: u64,
    after_kib: u64,
}

impl IdleSessions {
    fn per_session_kib(&self) -> f64 {
        (self.after_kib as f64 - self.before_kib as f64) / f64::from(self.sessions)
    }
}

/// Measure 5: line traffic on many sessions at once, one pace.
struct RelayResults {
    sessions: u32,
    /// The measured window (after a warm-up second).
    window: Duration,
    /// Lines relayed in the window: sent to the worker plus echoed back.
    lines: u64,
    /// tether's utime + stime over the window.
    cpu: Option<Duration>,
    /// tether's time on a CPU over the window (schedstat, ns resolution).
    on_cpu: Option<Duration>,
    /// tether's run-queue wait over the window (schedstat).
    waited: Option<Duration>,
    /// This process's utime + stime over the window (clients and worker):
    /// shows the load side is not what limits the rate.
    bench_cpu: Option<Duration>,
    /// Lines sent in the whole run, and echoes that never came back or
    /// were not the line expected.
    sent: u64,
    lost: u64,
    wrong: u64,
    /// Sessions whose connection failed, with why (the first few).
    failures: Vec<String>,
    failed: u32,
}

impl RelayResults {
    fn per_line_us(&self, cpu: Option<Duration>) -> String {
        match cpu {
            Some(c) if self.lines > 0 => {
                format!("{:.2}", c.as_secs_f64() * 1e6 / self.lines as f64)
            }
            _ => "?".into(),
        }
    }
}

struct ResumeResults {
    /// Connect start to first line after the head, sorted.
    samples: Vec<Duration>,
    /// The same, only the resumes whose `Session-Received` showed the
    /// `ping` was not delivered before the takeover (it was resent after
    /// the head, and its echo is the first line), sorted.
    resent: Vec<Duration>,
    /// For reference: a line's round trip (client, tether, worker and back)
    /// on the same session while attached, sorted.
    round_trips: Vec<Duration>,
    /// For reference: a line's round trip straight to the worker, sorted.
    direct: Vec<Duration>,
    /// tether's (time on a CPU, time ready but waiting for one) over the
    /// measured resumes, all threads, when the kernel reports it.
    sched: Option<(Duration, Duration)>,
    /// The same over the attached round trips.
    round_trip_sched: Option<(Duration, Duration)>,
    /// Resumes that failed (a `410`, a closed connection ...), each
    /// followed by a new session.
    failures: Vec<String>,
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tether-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: tether-bench [--secs N] [--ws N] [--mib N] [--sessions N] \
     [--resumes N] [--only http|ws|sessions] [--baseline /abs/path/to/tether] [--out FILE]";

fn parse_args() -> Result<Options, String> {
    parse_args_from(std::env::args().skip(1))
}

fn parse_args_from(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        secs: 10,
        ws_conns: 2000,
        mib: 256,
        sessions: 8000,
        resumes: 500,
        only: None,
        baseline: None,
        out: None,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = || format!("{flag} {value}: not a whole number");
        match flag.as_str() {
            "--secs" => o.secs = value.parse().map_err(|_| bad())?,
            "--ws" => o.ws_conns = value.parse().map_err(|_| bad())?,
            "--mib" => o.mib = value.parse().map_err(|_| bad())?,
            "--sessions" => o.sessions = value.parse().map_err(|_| bad())?,
            "--resumes" => o.resumes = value.parse().map_err(|_| bad())?,
            "--only" if ["http", "ws", "sessions"].contains(&value.as_str()) => {
                o.only = Some(value)
            }
            "--only" => return Err(format!("--only {value}: http, ws or sessions")),
            "--baseline" if Path::new(&value).is_absolute() => {
                o.baseline = Some(PathBuf::from(value))
            }
            "--baseline" => return Err(format!("--baseline {value}: an absolute path")),
            "--out" => o.out = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if !(1..=20).contains(&o.secs) {
        return Err("--secs must be 1 to 20 (keep load runs short on a shared machine)".into());
    }
    if o.sessions < 3 || o.resumes == 0 {
        return Err("--sessions must be at least 3 and --resumes at least 1".into());
    }
    Ok(o)
}

fn run(options: &Options) -> Result<(), String> {
    let load_at_start = report::loadavg();
    // The bench holds both ends it opens: client and origin (worker)
    // sockets. tether inherits the limit and holds as many.
    let need = u64::from(options.ws_conns.max(options.sessions)) * 2 + 256;
    let fds = procfs::raise_open_files(need.max(16_384));
    if fds < need {
        return Err(format!(
            "the open-files limit is {fds}, {need} are needed: run `ulimit -n 65536` first"
        ));
    }
    let programs = find_programs(options)?;
    let dir = std::env::temp_dir().join(format!("tether-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let outcome = measure_all(options, &programs, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let results = outcome?;
    let text = format!(
        "{}{}",
        report::header(&programs, &load_at_start),
        render(options, &results)
    );
    println!("{text}");
    if let Some(out) = &options.out {
        std::fs::write(out, &text).map_err(|e| format!("{}: {e}", out.display()))?;
        eprintln!("report written to {}", out.display());
    }
    Ok(())
}

/// The programs, and the cores to pin to when there are two.
fn find_programs(options: &Options) -> Result<Programs, String> {
    let tether = match std::env::var_os("TETHER_BIN") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("tether"),
    };
    let need = |name: &str| {
        proxy::find_program(name).ok_or(format!(
            "{name} is not installed (apt-get install -y nginx-light haproxy wrk curl)"
        ))
    };
    let nginx = need("nginx")?;
    let haproxy = need("haproxy")?;
    need("wrk")?;
    need("curl")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = (cores >= 2 && proxy::find_program("taskset").is_some())
        .then(|| ("0".to_owned(), "1".to_owned()));
    Ok(Programs {
        tether,
        baseline: options.baseline.clone(),
        nginx,
        haproxy,
        pin,
    })
}

fn measure_all(
    options: &Options,
    programs: &Programs,
    dir: &Path,
) -> Result<Vec<(Kind, Results)>, String> {
    let root = dir.join("www");
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    std::fs::write(root.join("1k"), vec![b'x'; 1024]).map_err(|e| e.to_string())?;
    std::fs::write(root.join("64k"), vec![b'x'; 64 * 1024]).map_err(|e| e.to_string())?;
    // Sparse: reads cost no disk, and the file costs no space.
    let big = std::fs::File::create(root.join("big")).map_err(|e| e.to_string())?;
    big.set_len(options.mib << 20).map_err(|e| e.to_string())?;
    drop(big);

    let origin = proxy::start_origin(programs, dir, &root)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let ws_port = ws::start_origin(&runtime).map_err(|e| format!("WebSocket origin: {e}"))?;
    let worker_port =
        session::start_worker(&runtime).map_err(|e| format!("session worker: {e}"))?;

    let mut all = Vec::new();
    for kind in Kind::ALL {
        if kind == Kind::Baseline && programs.baseline.is_none() {
            continue;
        }
        let binary = programs.tether_for(kind);
        let missing = kind.is_tether() && !binary.is_file();
        let reason = format!(
            "no binary at {}: cargo build --release -p tether",
            binary.display()
        );
        eprintln!("== {} ==", kind.name());
        let skipped = format!("skipped: --only {}", options.only.as_deref().unwrap_or(""));
        let http = if !options.runs("http") {
            Err(skipped.clone())
        } else if missing {
            Err(reason.clone())
        } else {
            measure_http(kind, options, programs, dir, &origin)
        };
        let ws = if !options.runs("ws") {
            Err(skipped.clone())
        } else if missing {
            Err(reason.clone())
        } else {
            measure_ws(kind, options, programs, dir, ws_port)
        };
        let sessions = if !kind.is_tether() {
            Err("no persistent sessions".to_owned())
        } else if !options.runs("sessions") {
            Err(skipped.clone())
        } else if missing {
            Err(reason)
        } else {
            Ok(measure_sessions(
                kind,
                options,
                programs,
                dir,
                worker_port,
                &runtime,
            ))
        };
        all.push((kind, Results { http, ws, sessions }));
    }
    Ok(all)
}

/// Measures 1 (CPU per request, each workload) and 3 (download) on one
/// proxy process.
fn measure_http(
    kind: Kind,
    options: &Options,
    programs: &Programs,
    dir: &Path,
    origin: &Server,
) -> Result<HttpResults, String> {
    let proxy = proxy::start_proxy(kind, programs, dir, "http", origin.port)?;
    let loads = WORKLOADS
        .iter()
        .map(|w| measure_load(w, options, programs, &proxy))
        .collect();

    eprintln!(
        "  download: {} MiB, a warm-up then {DOWNLOAD_ROUNDS} rounds direct and proxied",
        options.mib
    );
    let size = options.mib << 20;
    let direct_url = format!("http://127.0.0.1:{}/big", origin.port);
    let proxied_url = format!("http://127.0.0.1:{}/big", proxy.port);
    let download = (|| {
        // Not counted: the first read of the sparse file fills the page
        // cache (measured: 5x slower than the next ones), and the proxy's
        // first download of a run sets up its origin connection.
        load::download(programs, &direct_url, size)?;
        load::download(programs, &proxied_url, size)?;
        let (mut direct, mut proxied) = (Vec::new(), Vec::new());
        for _ in 0..DOWNLOAD_ROUNDS {
            direct.push(load::download(programs, &direct_url, size)?);
            proxied.push(load::download(programs, &proxied_url, size)?);
        }
        Ok((
            load::median(proxied).unwrap_or(0.0),
            load::median(direct).unwrap_or(0.0),
        ))
    })();
    Ok(HttpResults { loads, download })
}

/// Timed downloads, each direct and proxied, after an untimed one of
/// each: at 256 MiB a download takes a fifth of a second, so a few more
/// rounds cost little and steady the medians.
const DOWNLOAD_ROUNDS: usize = 5;

/// One workload: a warm-up second, then `--secs` seconds with the
/// proxy's CPU time read before and after.
fn measure_load(
    w: &Workload,
    options: &Options,
    programs: &Programs,
    proxy: &Server,
) -> Result<LoadResults, String> {
    let url = format!("http://127.0.0.1:{}{}", proxy.port, w.path);
    eprintln!("  {}: warm-up 1 s", w.title);
    let warm = load::wrk(programs, &url, 64, 1, w.headers)?;
    if warm.requests == 0 {
        return Err("no request completed during the warm-up".into());
    }
    let ticks = procfs::clock_ticks();
    let pids = proxy.all_pids();
    eprintln!("  load: wrk -t1 -c64 -d{}s", options.secs);
    let waits = || {
        pids.iter()
            .map(|&p| procfs::sched_ns(p).map(|(_, wait)| wait))
            .sum::<Option<u64>>()
    };
    let (before, wait_before) = (procfs::cpu_time(&pids, ticks), waits());
    let opened_before = procfs::tcp_active_opens();
    let wrk = load::wrk(programs, &url, 64, options.secs, w.headers)?;
    let (after, wait_after) = (procfs::cpu_time(&pids, ticks), waits());
    let opened_after = procfs::tcp_active_opens();
    let cpu_per_request = match (before, after) {
        (Some(b), Some(a)) if wrk.requests > 0 => {
            Ok((a - b).as_secs_f64() * 1e6 / wrk.requests as f64)
        }
        (Some(_), Some(_)) => Err("no request completed".into()),
        _ => Err(format!("cannot read /proc/{}/stat", proxy.pid())),
    };
    Ok(LoadResults {
        wrk,
        cpu_per_request,
        waited: wait_before
            .zip(wait_after)
            .map(|(b, a)| Duration::from_nanos(a.saturating_sub(b))),
        opened: opened_before
            .zip(opened_after)
            .map(|(b, a)| a.saturating_sub(b)),
    })
}

/// Measure 2: idle WebSocket connections through a fresh proxy process.
fn measure_ws(
    kind: Kind,
    options: &Options,
    programs: &Programs,
    dir: &Path,
    ws_port: u16,
) -> Result<WsResults, String> {
    let proxy = proxy::start_proxy(kind, programs, dir, "ws", ws_port)?;
    eprintln!("  WebSocket: {} idle connections", options.ws_conns);
    // One connection first, with an echo: proves the relay works and
    // takes first-use allocations out of the difference.
    let mut first = ws::connect(proxy.port, 0)?;
    ws::echo(&mut first, "warm-up")?;
    drop(first);
    settle();
    let pids = proxy.worker_pids();
    let rss = || procfs::rss_total_kib(&pids).ok_or("cannot read VmRSS".to_owned());
    let before_kib = rss()?;
    let mut conns = Vec::with_capacity(options.ws_conns as usize);
    for n in 1..=options.ws_conns {
        let conn = ws::connect(proxy.port, n)
            .map_err(|e| format!("connection {n} of {}: {e}", options.ws_conns))?;
        conns.push(conn);
    }
    // The newest one still relays: the proxy is not just holding sockets.
    if let Some(last) = conns.last_mut() {
        ws::echo(last, "still there")?;
    }
    settle();
    let after_kib = rss()?;
    drop(conns);
    Ok(WsResults {
        before_kib,
        after_kib,
        conns: options.ws_conns,
    })
}

/// Measures 4 and 5: idle sessions at two counts, attached and detached,
/// resumes, then sparse and windowed line traffic; each part on a fresh
/// tether (`kind`: the tether binary or the baseline). When pinning, this
/// process (worker and clients, every thread of it) moves to the load core
/// for the duration, so tether has CPU 1 to itself.
fn measure_sessions(
    kind: Kind,
    options: &Options,
    programs: &Programs,
    dir: &Path,
    worker_port: u16,
    runtime: &tokio::runtime::Runtime,
) -> SessionResults {
    let me = std::process::id().to_string();
    let pin_self = |cpus: &str| {
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &me])
            .stdout(std::process::Stdio::null())
            .status();
    };
    if let Some((load, _)) = &programs.pin {
        pin_self(load);
    }
    let idle = idle_runs(options)
        .iter()
        .map(|&(n, what)| measure_idle_sessions(kind, programs, dir, worker_port, n, what))
        .collect();
    let resume = measure_resume(kind, options, programs, dir, worker_port);
    let relay = |tag: &str, sessions: u32, pace: relay::Pace| {
        measure_relay(
            kind,
            options,
            programs,
            dir,
            worker_port,
            runtime,
            tag,
            sessions,
            pace,
        )
    };
    let sparse = relay(
        "sparse",
        SPARSE_SESSIONS,
        relay::Pace::Every(Duration::from_secs(1)),
    );
    let windowed = relay("windowed", WINDOWED_SESSIONS, relay::Pace::Window(WINDOW));
    if programs.pin.is_some() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        pin_self(&format!("0-{}", cores.max(2) - 1));
    }
    SessionResults {
        idle,
        resume,
        sparse,
        windowed,
    }
}

/// Sparse traffic: this many sessions, one line each way per second each.
const SPARSE_SESSIONS: u32 = 2000;
/// Windowed relay: this many sessions, [`WINDOW`] lines in flight each.
const WINDOWED_SESSIONS: u32 = 64;
const WINDOW: usize = 64;

/// The idle-session runs: (sessions, what each did). A third as many
/// shows the cost is linear; handshake only tells the session's own cost
/// from what the first lines leave behind; detached shows what a session
/// holding unacknowledged lines costs once its client is gone.
fn idle_runs(options: &Options) -> [(u32, Idle); 4] {
    let n = options.sessions;
    [
        (n / 3, Idle::Lines),
        (n, Idle::Lines),
        (n, Idle::Handshake),
        (n, Idle::Detached),
    ]
}

/// `n` idle sessions on a fresh tether: VmRSS before and after.
fn measure_idle_sessions(
    kind: Kind,
    programs: &Programs,
    dir: &Path,
    worker_port: u16,
    n: u32,
    what: Idle,
) -> Result<IdleSessions, String> {
    let tag = format!("idle-{n}-{what:?}");
    let proxy = proxy::start_tether_sessions(kind, programs, dir, &tag, worker_port)?;
    eprintln!("  sessions: {n} idle sessions, {what:?}");
    // One session first, kept open: proves sessions work and takes
    // first-use allocations out of the difference.
    let (mut first, _) = session::open(proxy.port).map_err(|e| format!("first session: {e}"))?;
    first.echo("warm-up")?;
    settle();
    let pids = proxy.worker_pids();
    let rss = || procfs::rss_total_kib(&pids).ok_or("cannot read VmRSS".to_owned());
    let before_kib = rss()?;
    let mut conns = Vec::with_capacity(n as usize);
    let mut last_detached = None;
    for i in 1..=n {
        let at = |e: String| format!("session {i} of {n}: {e}");
        let (mut conn, answer) = session::open(proxy.port).map_err(at)?;
        match what {
            Idle::Handshake => conns.push(conn),
            // One line each way so buffers were used once.
            Idle::Lines => {
                conn.echo("hello").map_err(at)?;
                conns.push(conn);
            }
            // The echoes come back to a closed connection: tether keeps
            // them for a resume, unacknowledged.
            Idle::Detached => {
                for l in ["one", "two", "three"] {
                    conn.send(l).map_err(at)?;
                }
                drop(conn);
                last_detached = Some(answer.id);
            }
        }
    }
    // The first session still relays after all the others opened.
    first.echo("still there")?;
    std::thread::sleep(Duration::from_secs(1));
    let after_kib = rss()?;
    drop(conns);
    // The last detached session still holds its three echoes: what was
    // measured is sessions with lines buffered, not sessions gone.
    if let Some(id) = last_detached {
        let (mut conn, answer) = session::resume(proxy.port, &id, 0)
            .map_err(|e| format!("resuming a detached session: {e}"))?;
        if answer.received != 3 {
            return Err(format!(
                "a detached session had {} of its 3 lines delivered",
                answer.received
            ));
        }
        for l in ["one", "two", "three"] {
            let got = conn.line()?;
            if got != l {
                return Err(format!(
                    "a detached session replayed {got:?}, expected {l:?}"
                ));
            }
        }
    }
    Ok(IdleSessions {
        sessions: n,
        before_kib,
        after_kib,
    })
}

/// Resumes of one session with a line in flight at each drop.
fn measure_resume(
    kind: Kind,
    options: &Options,
    programs: &Programs,
    dir: &Path,
    worker_port: u16,
) -> Result<ResumeResults, String> {
    const WARM_UP: u32 = 20;
    let proxy = proxy::start_tether_sessions(kind, programs, dir, "resume", worker_port)?;
    let port = proxy.port;
    eprintln!(
        "  sessions: {} resumes (+{WARM_UP} warm-up)",
        options.resumes
    );
    let (mut conn, answer) = session::open(port).map_err(|e| format!("opening: {e}"))?;
    let mut id = answer.id;
    // Worker lines received; client lines sent (all kept, to resend).
    let mut received = 0u64;
    let mut sent: Vec<String> = Vec::new();
    let mut samples = Vec::with_capacity(options.resumes as usize);
    let mut resent = Vec::new();
    // References first: line round trips straight to the worker, then
    // through tether while attached.
    let mut direct = Vec::with_capacity(options.resumes as usize);
    let mut straight = session::open_direct(worker_port)?;
    for i in 0..WARM_UP + options.resumes {
        let start = Instant::now();
        straight.echo(&format!("echo {i}"))?;
        if i >= WARM_UP {
            direct.push(start.elapsed());
        }
    }
    drop(straight);
    let mut round_trips = Vec::with_capacity(options.resumes as usize);
    let mut sched_before = None;
    for i in 0..WARM_UP + options.resumes {
        if i == WARM_UP {
            sched_before = procfs::sched_ns(proxy.pid());
        }
        let text = format!("echo {i}");
        let start = Instant::now();
        conn.echo(&text)?;
        let took = start.elapsed();
        sent.push(text);
        received += 1;
        if i >= WARM_UP {
            round_trips.push(took);
        }
    }
    let mut failures = Vec::new();
    let round_trip_sched = sched_since(sched_before, proxy.pid());
    for i in 0..WARM_UP + options.resumes {
        if i == WARM_UP {
            sched_before = procfs::sched_ns(proxy.pid());
        }
        // A line whose echo is in flight (or not yet written) at the drop:
        // the resume must replay it, or deliver it live.
        let text = format!("ping {i}");
        conn.send(&text)?;
        sent.push(text.clone());
        drop(conn);
        let start = Instant::now();
        let outcome = session::resume(port, &id, received).and_then(|(mut c, answer)| {
            let delivered = usize::try_from(answer.received).unwrap_or(usize::MAX);
            if delivered > sent.len() || delivered + 1 < sent.len() {
                return Err(format!(
                    "Session-Received: {delivered} after {} lines sent",
                    sent.len()
                ));
            }
            let missing = &sent[delivered..];
            for line in missing {
                c.send(line)?;
            }
            let line = c.line()?;
            let took = start.elapsed();
            if line != text {
                return Err(format!("expected {text:?} first, got {line:?}"));
            }
            Ok((c, took, !missing.is_empty()))
        });
        match outcome {
            Ok((c, took, was_resent)) => {
                conn = c;
                received += 1;
                if i >= WARM_UP {
                    samples.push(took);
                    if was_resent {
                        resent.push(took);
                    }
                }
            }
            Err(e) => {
                eprintln!("  resume {i}: {e}");
                failures.push(format!("resume {i}: {e}"));
                if failures.len() as u32 > options.resumes / 10 + 1 {
                    return Err(format!("too many failed resumes: {}", failures.join("; ")));
                }
                let (c, answer) =
                    session::open(port).map_err(|e| format!("reopening after a failure: {e}"))?;
                conn = c;
                id = answer.id;
                received = 0;
                sent.clear();
            }
        }
    }
    let sched = sched_since(sched_before, proxy.pid());
    samples.sort_unstable();
    resent.sort_unstable();
    round_trips.sort_unstable();
    direct.sort_unstable();
    Ok(ResumeResults {
        sched,
        round_trip_sched,
        direct,
        samples,
        resent,
        round_trips,
        failures,
    })
}

/// Measure 5 at one pace: `sessions` sessions on a fresh tether, opened
/// one after the other, then all sending at once from tasks on `runtime`
/// for a warm-up second and `--secs` measured seconds; tether's CPU time
/// and the lines counted over the measured seconds only.
#[allow(clippy::too_many_arguments)]
fn measure_relay(
    kind: Kind,
    options: &Options,
    programs: &Programs,
    dir: &Path,
    worker_port: u16,
    runtime: &tokio::runtime::Runtime,
    tag: &str,
    sessions: u32,
    pace: relay::Pace,
) -> Result<RelayResults, String> {
    let proxy = proxy::start_tether_sessions(kind, programs, dir, tag, worker_port)?;
    eprintln!("  sessions: {tag} traffic, {sessions} sessions, {pace:?}");
    let mut streams = Vec::with_capacity(sessions as usize);
    for i in 0..sessions {
        let (conn, _) =
            session::open(proxy.port).map_err(|e| format!("session {i} of {sessions}: {e}"))?;
        if !conn.pending.is_empty() {
            return Err("the worker sent a body after the answer head".into());
        }
        streams.push(conn.stream);
    }
    let counters = std::sync::Arc::new(relay::Counters::default());
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let from = start + Duration::from_secs(1);
    let stop = from + Duration::from_secs(u64::from(options.secs));
    let tasks: Vec<_> = streams
        .into_iter()
        .zip(0..)
        .map(|(s, i)| {
            runtime.spawn(relay::drive(
                s,
                i,
                sessions,
                pace,
                start,
                stop,
                counters.clone(),
            ))
        })
        .collect();
    let (pid, me, ticks) = (proxy.pid(), std::process::id(), procfs::clock_ticks());
    let sample = || {
        (
            std::time::Instant::now(),
            procfs::cpu_time(&[pid], ticks),
            procfs::sched_ns(pid),
            counters.snapshot(),
            procfs::cpu_time(&[me], ticks),
        )
    };
    sleep_until(from);
    let (t0, cpu0, sched0, (sent0, recv0), own0) = sample();
    sleep_until(stop);
    let (t1, cpu1, sched1, (sent1, recv1), own1) = sample();
    let outcomes = runtime.block_on(async {
        let mut all = Vec::with_capacity(tasks.len());
        for t in tasks {
            all.push(t.await.map_err(|e| (0, e.to_string())).and_then(|r| r));
        }
        all
    });
    let (mut lost, mut failed, mut failures) = (0, 0, Vec::new());
    for outcome in outcomes {
        if let Err((n, why)) = outcome {
            lost += n;
            failed += 1;
            if failures.len() < 3 {
                failures.push(why);
            }
        }
    }
    let (sent, _) = counters.snapshot();
    Ok(RelayResults {
        sessions,
        window: t1 - t0,
        lines: (sent1 - sent0) + (recv1 - recv0),
        cpu: cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a)),
        on_cpu: sched0
            .zip(sched1)
            .map(|((a, _), (b, _))| Duration::from_nanos(b.saturating_sub(a))),
        waited: sched0
            .zip(sched1)
            .map(|((_, a), (_, b))| Duration::from_nanos(b.saturating_sub(a))),
        bench_cpu: own0.zip(own1).map(|(a, b)| b.saturating_sub(a)),
        sent,
        lost,
        wrong: counters.wrong.load(std::sync::atomic::Ordering::Relaxed),
        failures,
        failed,
    })
}

/// Sleeps this thread until a tokio instant.
fn sleep_until(t: tokio::time::Instant) {
    let now = tokio::time::Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Time on a CPU and run-queue wait of `pid` since `before`.
fn sched_since(before: Option<(u64, u64)>, pid: u32) -> Option<(Duration, Duration)> {
    let ((run0, wait0), (run1, wait1)) = before.zip(procfs::sched_ns(pid))?;
    Some((
        Duration::from_nanos(run1.saturating_sub(run0)),
        Duration::from_nanos(wait1.saturating_sub(wait0)),
    ))
}

/// Lets the proxy finish what the last connections started.
fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}

fn render(options: &Options, results: &[(Kind, Results)]) -> String {
    let columns: Vec<&str> = results.iter().map(|(k, _)| k.name()).collect();
    let each = |f: &dyn Fn(&Results) -> Cell| results.iter().map(|(_, r)| f(r)).collect();
    let http = |f: &dyn Fn(&HttpResults) -> Cell| {
        each(&|r: &Results| r.http.as_ref().map_err(Clone::clone).and_then(f))
    };
    let mut out = String::new();

    for (i, w) in WORKLOADS.iter().enumerate() {
        let load = |f: &dyn Fn(&LoadResults) -> Cell| {
            http(&|h: &HttpResults| match h.loads.get(i) {
                Some(l) => l.as_ref().map_err(Clone::clone).and_then(f),
                None => Err("not run".into()),
            })
        };
        let wrk = |f: &dyn Fn(&load::WrkReport) -> String| load(&|l: &LoadResults| Ok(f(&l.wrk)));
        let number = ["1", "1b", "1c"].get(i).copied().unwrap_or("1");
        let mut t = Table::new(
            format!(
                "{number}. CPU per proxied request ({}, {} s)",
                w.title, options.secs
            ),
            &columns,
        );
        t.row(
            "CPU per request (µs)",
            load(&|l: &LoadResults| {
                l.cpu_per_request
                    .as_ref()
                    .map(|us| format!("{us:.1}"))
                    .map_err(Clone::clone)
            }),
            if i == 0 {
                "≤ 15 µs (nginx ≈ 18.6, HAProxy ≈ 17.7); issue 17: ≤ nginx's"
            } else {
                "issue 17: ≤ nginx's"
            },
        );
        t.row(
            "requests/s",
            wrk(&|w| format!("{:.0}", w.requests_per_sec)),
            "issue 17: ≥ nginx's",
        );
        t.row(
            "p99 latency",
            wrk(&|w| {
                w.p99
                    .map_or("?".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3))
            }),
            "issue 17: ≤ nginx's",
        );
        t.row(
            "requests (non-2xx; socket errors)",
            wrk(&|w| {
                format!(
                    "{} ({}; {})",
                    w.requests,
                    w.errors - w.socket_errors,
                    match (&w.socket_detail, w.socket_errors) {
                        (Some(d), n) if n > 0 => d.clone(),
                        _ => "0".into(),
                    }
                )
            }),
            "—",
        );
        t.row(
            "TCP connections opened per request (whole host)",
            load(&|l: &LoadResults| {
                Ok(match l.opened {
                    Some(n) if l.wrk.requests > 0 => {
                        format!("{:.2}", n as f64 / l.wrk.requests as f64)
                    }
                    _ => "?".into(),
                })
            }),
            if w.headers.is_empty() {
                "≈ 0 (keep-alive both sides)"
            } else {
                "≈ 1 (the client's; origin connections pooled)"
            },
        );
        t.row(
            "proxy waited for its core (ms in the run)",
            load(&|l: &LoadResults| {
                Ok(l.waited
                    .map_or("?".into(), |d| format!("{:.0}", d.as_secs_f64() * 1e3)))
            }),
            "≈ 0 (else another process shared the proxy's core)",
        );
        t.note("CPU: utime+stime of the proxy process (all threads; nginx: master and worker) over the run, divided by the requests wrk completed. A warm-up second of the same workload first, not counted. Connections opened: ActiveOpens of /proc/net/snmp over the run (wrk's connects and the proxy's to the origin, and anything else on the host), per request. Waited: the proxy's run-queue wait (schedstat, all threads) over the run: time it was ready to run but its core ran something else (another process, or another of its own threads); well above 0, the machine was not quiet and the row's figures are not to be trusted.");
        if !w.headers.is_empty() {
            t.note("Each request carries `Connection: close`: the proxy answers and closes, wrk opens a new connection for the next one (TCP handshake, accept and close in every request); the proxy's origin connections stay pooled. Socket errors would show refused or reset connections; none are expected.");
        }
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&t.render());
    }

    let mut t = Table::new(
        format!(
            "2. Idle proxied WebSocket connections ({} at once)",
            options.ws_conns
        ),
        &columns,
    );
    let wsr = |f: &dyn Fn(&WsResults) -> String| {
        each(&|r: &Results| r.ws.as_ref().map(f).map_err(Clone::clone))
    };
    t.row(
        "RSS per idle connection (KiB)",
        wsr(&|w| {
            format!(
                "{:.1}",
                (w.after_kib as f64 - w.before_kib as f64) / f64::from(w.conns)
            )
        }),
        "≤ 4 KiB per whole persistent session (nginx ≈ 17.8, HAProxy ≈ 4.8)",
    );
    t.row(
        "RSS before → after (MiB)",
        wsr(&|w| {
            format!(
                "{:.1} → {:.1}",
                w.before_kib as f64 / 1024.0,
                w.after_kib as f64 / 1024.0
            )
        }),
        "—",
    );
    t.note("RSS: VmRSS of the process that holds the connections (nginx: the worker), after one warm-up connection and after all are open and idle.");
    out.push('\n');
    out.push_str(&t.render());

    let mut t = Table::new(
        format!("3. Streamed download ({} MiB file)", options.mib),
        &columns,
    );
    let dl = |f: &dyn Fn(f64, f64) -> String| {
        http(&|h: &HttpResults| {
            h.download
                .as_ref()
                .map(|&(p, d)| f(p, d))
                .map_err(Clone::clone)
        })
    };
    t.row(
        "through the proxy (MB/s)",
        dl(&|p, _| format!("{:.0}", p / 1e6)),
        "—",
    );
    t.row(
        "direct, same rounds (MB/s)",
        dl(&|_, d| format!("{:.0}", d / 1e6)),
        "—",
    );
    t.row(
        "% of direct",
        dl(&|p, d| format!("{:.0} %", 100.0 * p / d)),
        "≥ 90 %",
    );
    t.note(format!("curl to /dev/null on the load core, direct and proxied alternately: one untimed download of each (the first read of the sparse file fills the page cache), then {DOWNLOAD_ROUNDS} rounds each; medians. MB = 10^6 bytes. Direct, curl and the origin share the load core and that core is the limit (curl alone uses about 90 % of it); proxied, the same two share the same core and the proxy has the other, so \"% of direct\" is how much the proxy's hop slows a client that is itself the limit. At 256 MiB a download lasts 0.1-0.2 s and ramp-up weighs on it (once, by hand: tether 55-61 % of direct at 256 MiB, 66 % at 2 GiB); `--mib` sets the size."));
    out.push('\n');
    out.push_str(&t.render());

    let mut t = Table::new(
        "4. Persistent sessions (native HTTP/1.1, stream mode)",
        &columns,
    );
    let sess = |f: &dyn Fn(&SessionResults) -> Cell| {
        each(&|r: &Results| r.sessions.as_ref().map_err(Clone::clone).and_then(f))
    };
    let idle = |i: usize, f: &dyn Fn(&IdleSessions) -> String| {
        sess(&|s: &SessionResults| match s.idle.get(i) {
            Some(r) => r.as_ref().map(f).map_err(Clone::clone),
            None => Err("not run".into()),
        })
    };
    for (i, (n, kind)) in idle_runs(options).into_iter().enumerate() {
        let what = match kind {
            Idle::Lines => "",
            Idle::Handshake => ", handshake only",
            Idle::Detached => ", detached with 3 lines buffered",
        };
        t.row(
            &format!("idle session RSS, {n} sessions{what} (KiB per session)"),
            idle(i, &|w| format!("{:.1}", w.per_session_kib())),
            match kind {
                Idle::Lines => {
                    "≤ 4 KiB (client side, worker side, session state); issue 17: ≤ 3 KiB at 8000"
                }
                Idle::Detached => "issue 17: ≤ 3 KiB at 8000",
                Idle::Handshake => "—",
            },
        );
        t.row(
            &format!("RSS before → after, {n} sessions{what} (MiB)"),
            idle(i, &|w| {
                format!(
                    "{:.1} → {:.1}",
                    w.before_kib as f64 / 1024.0,
                    w.after_kib as f64 / 1024.0
                )
            }),
            "—",
        );
    }
    let resume = |f: &dyn Fn(&ResumeResults) -> String| {
        sess(&|s: &SessionResults| s.resume.as_ref().map(f).map_err(Clone::clone))
    };
    let us = |v: &[Duration], q: f64| {
        session::quantile(v, q).map_or("?".into(), |d| format!("{}", d.as_micros()))
    };
    t.row("resume p50 (µs)", resume(&|r| us(&r.samples, 0.5)), "—");
    t.row(
        "resume p99 (µs)",
        resume(&|r| us(&r.samples, 0.99)),
        "< 1 ms (1000 µs) on loopback; issue 17: < 500 µs",
    );
    t.row("resume max (µs)", resume(&|r| us(&r.samples, 1.0)), "—");
    t.row(
        "resumes measured (failed)",
        resume(&|r| format!("{} ({})", r.samples.len(), r.failures.len())),
        "—",
    );
    t.row(
        "of which ping resent: count, p50 / p99 (µs)",
        resume(&|r| {
            format!(
                "{}: {} / {}",
                r.resent.len(),
                us(&r.resent, 0.5),
                us(&r.resent, 0.99)
            )
        }),
        "—",
    );
    let each_us = |total: Option<(Duration, Duration)>, n: usize, wait: bool| match total {
        Some((run, waited)) if n > 0 => {
            let d = if wait { waited } else { run };
            format!("{:.1}", d.as_secs_f64() * 1e6 / n as f64)
        }
        _ => "?".into(),
    };
    t.row(
        "tether on-CPU time per resume (µs)",
        resume(&|r| each_us(r.sched, r.samples.len(), false)),
        "—",
    );
    t.row(
        "tether run-queue wait per resume (µs)",
        resume(&|r| each_us(r.sched, r.samples.len(), true)),
        "—",
    );
    t.row(
        "reference: tether on-CPU time per attached round trip (µs)",
        resume(&|r| each_us(r.round_trip_sched, r.round_trips.len(), false)),
        "—",
    );
    t.row(
        "reference: line round trip through tether, attached, p50 / p99 (µs)",
        resume(&|r| format!("{} / {}", us(&r.round_trips, 0.5), us(&r.round_trips, 0.99))),
        "—",
    );
    t.row(
        "reference: line round trip straight to the worker, p50 / p99 (µs)",
        resume(&|r| format!("{} / {}", us(&r.direct, 0.5), us(&r.direct, 0.99))),
        "—",
    );
    t.note("Idle: a fresh tether per row; each session opened, one line each way, then idle (client attached); tether's VmRSS after one warm-up session and 1 s after the last one opened. Each session is two sockets in tether (client and worker). \"Handshake only\": the same without the line each way, to tell the session's own cost from what its first lines leave behind. \"Detached\": each session sends 3 lines and its client closes the connection without reading the echoes, so tether holds a detached session (worker socket only) with 3 lines delivered and 3 echoes unacknowledged; afterwards the last one is resumed with `Session-Received: 0` and must replay all three.");
    t.note("Resume: one session; each time the client sends `ping N`, closes without reading the echo and resumes with its count; time from the start of the connect to the first whole line after the answer head (that echo, replayed or live). 20 warm-up resumes not counted. When tether takes over before it has read the `ping` from the dropped connection, its `Session-Received` says so and the client resends the line after the head (SPEC 4): the first line is then its echo, one more round trip through the worker. On-CPU time and run-queue wait: tether's threads' `/proc/PID/task/TID/schedstat` over the measured resumes, divided by their count; the wait is time tether was ready to run but another process had its core. The round-trip references (same count, before the resumes): the same session echoing lines while attached, and a connection straight to the worker with no tether in between.");
    out.push('\n');
    out.push_str(&t.render());

    let mut t = Table::new(
        format!(
            "5. Session line traffic ({} s after a warm-up second)",
            options.secs
        ),
        &columns,
    );
    let nginx_us = results.iter().find_map(|(k, r)| {
        let h = r.http.as_ref().ok().filter(|_| *k == Kind::Nginx)?;
        h.loads.first()?.as_ref().ok()?.cpu_per_request.clone().ok()
    });
    for (name, sparse) in [("sparse", true), ("windowed", false)] {
        let pick = |f: &dyn Fn(&RelayResults) -> String| {
            sess(&|s: &SessionResults| {
                let r = if sparse { &s.sparse } else { &s.windowed };
                r.as_ref().map(f).map_err(Clone::clone)
            })
        };
        t.row(
            &format!("{name}: tether CPU per line, utime+stime (µs)"),
            pick(&|r| r.per_line_us(r.cpu)),
            if sparse {
                "issue 17: ≤ half of nginx's CPU per 1 KiB request"
            } else {
                "issue 17: < 1.5 µs"
            },
        );
        t.row(
            &format!("{name}: tether on-CPU time per line, schedstat (µs)"),
            pick(&|r| r.per_line_us(r.on_cpu)),
            "—",
        );
        if sparse {
            t.row(
                "sparse: CPU per line / nginx's CPU per 1 KiB request",
                pick(&|r| match (r.cpu, nginx_us) {
                    (Some(c), Some(n)) if r.lines > 0 && n > 0.0 => {
                        format!("{:.2}", c.as_secs_f64() * 1e6 / r.lines as f64 / n)
                    }
                    _ => "?".into(),
                }),
                "issue 17: ≤ 0.5",
            );
        }
        t.row(
            &format!("{name}: reference, this program's CPU per line (clients and worker, µs)"),
            pick(&|r| r.per_line_us(r.bench_cpu)),
            "—",
        );
        t.row(
            &format!("{name}: tether waited for its core (ms in the run)"),
            pick(&|r| {
                r.waited
                    .map_or("?".into(), |d| format!("{:.0}", d.as_secs_f64() * 1e3))
            }),
            "≈ 0 (else another process shared tether's core)",
        );
        t.row(
            &format!("{name}: lines relayed/s (both directions)"),
            pick(&|r| format!("{:.0}", r.lines as f64 / r.window.as_secs_f64())),
            "—",
        );
        t.row(
            &format!("{name}: sessions; lines sent; echoes lost; wrong; sessions failed"),
            pick(&|r| {
                let mut text = format!(
                    "{}; {}; {}; {}; {}",
                    r.sessions, r.sent, r.lost, r.wrong, r.failed
                );
                if !r.failures.is_empty() {
                    text.push_str(&format!(" ({})", r.failures.join("; ")));
                }
                text
            }),
            "all 0 but sessions and lines sent",
        );
    }
    t.note(format!("Sparse: {SPARSE_SESSIONS} sessions on a fresh tether, each sending one 32-byte line per second and reading its echo; the sessions' sends are spread evenly over the second. Windowed: {WINDOWED_SESSIONS} sessions, each keeping {WINDOW} lines of 32 bytes in flight and sending a new one per echo, as fast as echoes return. The clients are tasks on a tokio runtime in this program, on the load core with the worker; the reference row is this program's own CPU over the same seconds, per line (when it nears 1 s per second the load side, not tether, sets the windowed rate). The windowed clients write, per read, as many new lines as echoes they read, so tether finds several lines per read. A line relayed is one line to the worker or one echo to the client (both counted: one line each way per session per second is 2 lines relayed). CPU: tether's utime+stime (all threads, clock ticks) over the measured seconds only, divided by the lines relayed in them; schedstat: the same from /proc/PID/task/*/schedstat (nanoseconds). Lost: lines sent whose echo had not come back 3 s after sending stopped; wrong: echoes that were not the line expected next."));
    out.push('\n');
    out.push_str(&t.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        parse_args_from(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn defaults() {
        let o = parse(&[]).unwrap();
        assert_eq!(
            (o.secs, o.sessions, o.ws_conns, o.mib),
            (10, 8000, 2000, 256)
        );
        assert!(o.baseline.is_none() && o.out.is_none() && o.only.is_none());
    }

    #[test]
    fn baseline_out_and_only() {
        let o = parse(&[
            "--secs",
            "5",
            "--baseline",
            "/tmp/old/tether",
            "--out",
            "r.md",
            "--only",
            "sessions",
        ])
        .unwrap();
        assert_eq!(o.secs, 5);
        assert_eq!(o.baseline.as_deref(), Some(Path::new("/tmp/old/tether")));
        assert_eq!(o.out.as_deref(), Some(Path::new("r.md")));
        assert!(o.runs("sessions") && !o.runs("http"));
    }

    #[test]
    fn refuses_bad_arguments() {
        assert!(parse(&["--baseline", "target/release/tether"]).is_err());
        assert!(parse(&["--secs", "60"]).is_err());
        assert!(parse(&["--secs"]).is_err());
        assert!(parse(&["--only", "tls"]).is_err());
        assert!(parse(&["--sessions", "2"]).is_err());
        assert!(parse(&["--frobnicate", "1"]).is_err());
    }
}
