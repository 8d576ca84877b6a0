//! `tether-bench`: tether, nginx and HAProxy side by side as reverse proxies
//! in front of the same origin, on the same workload, in one run. It prints
//! Markdown tables and asserts nothing (DESIGN, "Budgets").
//!
//! What runs: an nginx origin (one worker) serving a 1 KiB file and a large
//! sparse file, a WebSocket echo origin (in this process, [`ws`]), and each
//! proxy in turn, started from its own configuration in a temp dir on free
//! 127.0.0.1 ports ([`proxy`]). With `taskset` and two or more cores, each
//! proxy runs on CPU 1 and the load generators and the origin on CPU 0, so
//! the proxy has one core to itself ("one worker pinned to one core").
//!
//! The measures:
//!
//! 1. **CPU per proxied request**: `wrk -t1 -c64` for a warm-up second,
//!    then for `--secs` seconds; the proxy's `utime + stime` (all threads,
//!    nginx's master and worker) before and after, divided by the requests
//!    wrk completed. Also requests/s and wrk's p99.
//! 2. **Idle WebSocket memory**: `--ws` WebSocket connections opened through
//!    the proxy to the echo origin and left idle; the proxy's VmRSS (nginx:
//!    the worker) before and after, divided by the count.
//! 3. **Streamed download**: `curl` of the large file (`--mib` MiB) directly
//!    and through the proxy, alternately, three times each; the medians,
//!    and the proxied one as a share of the direct one.
//!
//! Usage: `tether-bench [--secs N] [--ws N] [--mib N]` (defaults 10, 2000,
//! 256). The tether binary is `$TETHER_BIN`, else `tether` beside this
//! program (`cargo build --release -p tether` puts it there). `make bench`
//! builds both and runs this.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

mod load;
mod procfs;
mod proxy;
mod table;
mod ws;

use proxy::{Kind, Programs, Server};
use table::{Cell, Table};

/// What the command line chose.
struct Options {
    secs: u32,
    ws_conns: u32,
    mib: u64,
}

/// The results for one proxy; each part fails on its own.
struct Results {
    http: Result<HttpResults, String>,
    ws: Result<WsResults, String>,
}

struct HttpResults {
    wrk: Result<load::WrkReport, String>,
    /// Microseconds of proxy CPU per completed request.
    cpu_per_request: Result<f64, String>,
    /// (proxied, direct) medians in bytes/s.
    download: Result<(f64, f64), String>,
}

struct WsResults {
    before_kib: u64,
    after_kib: u64,
    conns: u32,
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tether-bench: {e}\nusage: tether-bench [--secs N] [--ws N] [--mib N]");
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

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        secs: 10,
        ws_conns: 2000,
        mib: 256,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = || format!("{flag} {value}: not a whole number");
        match flag.as_str() {
            "--secs" => o.secs = value.parse().map_err(|_| bad())?,
            "--ws" => o.ws_conns = value.parse().map_err(|_| bad())?,
            "--mib" => o.mib = value.parse().map_err(|_| bad())?,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if !(1..=20).contains(&o.secs) {
        return Err("--secs must be 1 to 20 (keep load runs short on a shared machine)".into());
    }
    Ok(o)
}

fn run(options: &Options) -> Result<(), String> {
    // The bench holds both ends it opens: client and origin sockets.
    let need = u64::from(options.ws_conns) * 2 + 256;
    let fds = procfs::raise_open_files(need.max(16_384));
    if fds < need {
        return Err(format!(
            "the open-files limit is {fds}, {need} are needed: run `ulimit -n 65536` first"
        ));
    }
    let programs = find_programs()?;
    let dir = std::env::temp_dir().join(format!("tether-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let outcome = measure_all(options, &programs, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let results = outcome?;
    println!("{}", render(options, &programs, &results));
    Ok(())
}

/// The programs, and the cores to pin to when there are two.
fn find_programs() -> Result<Programs, String> {
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

    let mut all = Vec::new();
    for kind in Kind::ALL {
        let missing = kind == Kind::Tether && !programs.tether.is_file();
        let reason = format!(
            "no binary at {}: cargo build --release -p tether",
            programs.tether.display()
        );
        eprintln!("== {} ==", kind.name());
        let http = if missing {
            Err(reason.clone())
        } else {
            measure_http(kind, options, programs, dir, &origin)
        };
        let ws = if missing {
            Err(reason)
        } else {
            measure_ws(kind, options, programs, dir, ws_port)
        };
        all.push((kind, Results { http, ws }));
    }
    Ok(all)
}

/// Measures 1 (CPU per request) and 3 (download) on one proxy process.
fn measure_http(
    kind: Kind,
    options: &Options,
    programs: &Programs,
    dir: &Path,
    origin: &Server,
) -> Result<HttpResults, String> {
    let proxy = proxy::start_proxy(kind, programs, dir, "http", origin.port)?;
    let url = format!("http://127.0.0.1:{}/1k", proxy.port);
    eprintln!("  warm-up: wrk 1 s");
    let warm = load::wrk(programs, &url, 64, 1)?;
    if warm.requests == 0 {
        return Err("no request completed during the warm-up".into());
    }
    let ticks = procfs::clock_ticks();
    let pids = proxy.all_pids();
    eprintln!("  load: wrk -t1 -c64 -d{}s", options.secs);
    let before = procfs::cpu_time(&pids, ticks);
    let wrk = load::wrk(programs, &url, 64, options.secs);
    let after = procfs::cpu_time(&pids, ticks);
    let cpu_per_request = match (&wrk, before, after) {
        (Ok(r), Some(b), Some(a)) if r.requests > 0 => {
            Ok((a - b).as_secs_f64() * 1e6 / r.requests as f64)
        }
        (Ok(_), Some(_), Some(_)) => Err("no request completed".into()),
        (Err(e), _, _) => Err(e.clone()),
        _ => Err(format!("cannot read /proc/{}/stat", proxy.pid())),
    };

    eprintln!(
        "  download: {} MiB, 3 rounds direct and proxied",
        options.mib
    );
    let size = options.mib << 20;
    let direct_url = format!("http://127.0.0.1:{}/big", origin.port);
    let proxied_url = format!("http://127.0.0.1:{}/big", proxy.port);
    let download = (|| {
        let (mut direct, mut proxied) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            direct.push(load::download(programs, &direct_url, size)?);
            proxied.push(load::download(programs, &proxied_url, size)?);
        }
        Ok((
            load::median(proxied).unwrap_or(0.0),
            load::median(direct).unwrap_or(0.0),
        ))
    })();
    Ok(HttpResults {
        wrk,
        cpu_per_request,
        download,
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

/// Lets the proxy finish what the last connections started.
fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}

/// A command's first output line, or "?".
fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.lines().next().unwrap_or("?").trim().to_owned()
        })
        .unwrap_or_else(|| "?".into())
}

fn render(options: &Options, programs: &Programs, results: &[(Kind, Results)]) -> String {
    let columns: Vec<&str> = results.iter().map(|(k, _)| k.name()).collect();
    let each = |f: &dyn Fn(&Results) -> Cell| results.iter().map(|(_, r)| f(r)).collect();
    let http = |f: &dyn Fn(&HttpResults) -> Cell| {
        each(&|r: &Results| r.http.as_ref().map_err(Clone::clone).and_then(f))
    };
    let wrk = |f: &dyn Fn(&load::WrkReport) -> String| {
        http(&|h: &HttpResults| h.wrk.as_ref().map(f).map_err(Clone::clone))
    };

    let mut out = format!(
        "## tether-bench, {}\n\n{}; {}; {}; {}; {}\n\n",
        first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        match &programs.pin {
            Some((load, proxy)) => format!("proxy on CPU {proxy}, origin and load on CPU {load}"),
            None => "no pinning (taskset or a second core missing)".into(),
        },
        first_line(&programs.nginx.display().to_string(), &["-v"]),
        first_line(&programs.haproxy.display().to_string(), &["-v"]),
        first_line("wrk", &["-v"]),
        first_line("uname", &["-sr"]),
    );

    let mut t = Table::new(
        format!(
            "1. CPU per proxied request (1 KiB responses, 64 keep-alive connections, {} s)",
            options.secs
        ),
        &columns,
    );
    t.row(
        "CPU per request (µs)",
        http(&|h: &HttpResults| {
            h.cpu_per_request
                .as_ref()
                .map(|us| format!("{us:.1}"))
                .map_err(Clone::clone)
        }),
        "≤ 15 µs (nginx ≈ 18.6, HAProxy ≈ 17.7)",
    );
    t.row(
        "requests/s",
        wrk(&|w| format!("{:.0}", w.requests_per_sec)),
        "—",
    );
    t.row(
        "p99 latency",
        wrk(&|w| {
            w.p99
                .map_or("?".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3))
        }),
        "—",
    );
    t.row(
        "requests (errors)",
        wrk(&|w| format!("{} ({})", w.requests, w.errors)),
        "—",
    );
    t.note("CPU: utime+stime of the proxy process (all threads; nginx: master and worker) over the run, divided by the requests wrk completed.");
    out.push_str(&t.render());

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
    t.note("curl to /dev/null, direct and proxied alternately, 3 rounds each; medians. MB = 10^6 bytes.");
    out.push('\n');
    out.push_str(&t.render());

    let mut t = Table::new("4. Persistent sessions", &columns);
    let later = || {
        results
            .iter()
            .map(|(k, _)| match k {
                Kind::Tether => Err("not measured yet: sessions are being built".to_owned()),
                _ => Err("no persistent sessions".to_owned()),
            })
            .collect()
    };
    t.row("idle session RSS (KiB)", later(), "≤ 4 KiB");
    t.row("resume p99 (ms)", later(), "< 1 ms");
    out.push('\n');
    out.push_str(&t.render());
    out
}
