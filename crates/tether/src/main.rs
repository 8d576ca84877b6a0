//! The `tether` command line: `run`, `check`, `demo` and `connect`.
//!
//! Exit statuses: 0 success; 1 `check` found errors, or a command failed;
//! 2 bad command-line usage (clap); 64 `run` refused a bad configuration
//! (before binding anything).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod demo;

/// mimalloc keeps many long-lived small allocations (one set per idle
/// session) from pinning the pages that transient buffers left behind,
/// which glibc's allocator does: see docs/performance.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand, ValueEnum};
use tether_proxy::config::{self, Config};
use tether_proxy::Control;
use tokio::sync::mpsc;

/// Exit status of `run` when the configuration has errors (EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;

/// tether: a reverse proxy that keeps persistent, resumable sessions open
/// in front of an unchanged web server.
#[derive(Debug, Parser)]
#[command(
    name = "tether",
    version,
    propagate_version = true,
    after_help = "Exit status: 0 success; 1 errors found by `check`, or a failed command; \
                  2 bad command line; 64 `run` refused a configuration with errors."
)]
struct Cli {
    /// How log lines on stderr look: "human" (text) or "json" (one object
    /// per line); the RUST_LOG variable chooses what is logged (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the proxy with a configuration file; if the file has errors,
    /// print them and exit with status 64 before binding anything.
    Run {
        /// The TOML configuration file (see docs/configuration.md).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a configuration file without starting anything: print every
    /// error as FILE:LINE:COLUMN: message and exit 1, or print "ok" and
    /// exit 0.
    Check {
        /// The TOML configuration file to check.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Start a self-contained demo on 127.0.0.1 (a small origin, a worker
    /// and the proxy) to try persistent sessions in a browser.
    Demo,
    /// Open a persistent session to URL as a native client and relay lines
    /// between it and stdin/stdout, resuming after a dropped connection.
    /// The SessionID is printed on stderr at once; an answer that opens no
    /// session is printed (status and fields on stderr, body on stdout).
    Connect {
        /// The URL of a persistent path, like http://127.0.0.1:8080/chat.pphp
        url: String,
        /// After stdin ends, keep printing what comes until nothing came
        /// for this long (or the worker ends the session), then end the
        /// session: "1s", "500ms".
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        linger: std::time::Duration,
        /// An extra request field, "Name: value", sent on the opening
        /// request, every resume and the closing DELETE (repeatable:
        /// cookies, authorization).
        #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
        headers: Vec<(String, String)>,
        /// The Accept field to send (default application/x-persistent).
        #[arg(long, value_name = "TYPE", value_parser = parse_accept)]
        accept: Option<String>,
        /// Take over the session SESSIONID instead of opening one (another
        /// client attached to it is closed); needs --received.
        #[arg(long, value_name = "SESSIONID", requires = "received", value_parser = parse_session_id)]
        resume: Option<tether_client::SessionId>,
        /// With --resume: how many lines were already received; the gateway
        /// replays the later ones.
        #[arg(long, value_name = "N", requires = "resume")]
        received: Option<u64>,
        /// "native" (the HTTP/1.1 connection is the session channel),
        /// "websocket" (what browsers use) or "http" (Server-Sent Events
        /// and POSTs, for networks that block WebSocket); all resume after
        /// a drop.
        #[arg(long, value_enum, default_value_t = TransportArg::Native)]
        transport: TransportArg,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TransportArg {
    /// The native transport (SPEC 2).
    Native,
    /// The WebSocket transport (SPEC 3).
    Websocket,
    /// The HTTP transport (SPEC 13): Server-Sent Events down, POSTs up.
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Readable text lines.
    Human,
    /// One JSON object per line.
    Json,
}

fn main() -> ExitCode {
    // Resolved now, so that an upgrade (SIGUSR2) runs the file installed
    // at this path by then, not this process's own image.
    let relaunch = tether_proxy::Relaunch {
        program: std::env::current_exe().unwrap_or_default(),
        args: std::env::args_os().skip(1).collect(),
    };
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => run(&config, relaunch),
        Command::Demo => report(demo()),
        Command::Connect {
            url,
            linger,
            headers,
            accept,
            resume,
            received,
            transport,
        } => report(connect(
            &url,
            tether_client::connect::ConnectOptions {
                linger,
                headers,
                accept,
                resume: resume.zip(received),
                transport: match transport {
                    TransportArg::Native => tether_client::connect::Transport::Native,
                    TransportArg::Websocket => tether_client::connect::Transport::WebSocket,
                    TransportArg::Http => tether_client::connect::Transport::Http,
                },
                ..Default::default()
            },
        )),
    }
}

/// `tether check`: never binds or connects.
fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            let limit = tether_proxy::descriptors::open_files_limit();
            for warning in config::warnings(&config, limit) {
                eprintln!("{}: warning: {warning}", path.display());
            }
            println!("{}: ok ({})", path.display(), summary(&config));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

/// `tether run`: a bad file stops here, before anything is bound (in the
/// new process of an upgrade too: it exits having taken nothing).
fn run(path: &Path, relaunch: tether_proxy::Relaunch) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    tracing::info!(file = %path.display(), "configuration loaded ({})", summary(&config));
    let limit = tether_proxy::descriptors::raise_open_files_limit();
    for warning in config::warnings(&config, limit) {
        tracing::warn!(file = %path.display(), "{warning}");
    }
    report(serve(config, path, relaunch))
}

/// Runs the gateway: SIGHUP reloads `path`, SIGTERM or SIGINT drains,
/// SIGUSR2 upgrades. As the new process of an upgrade (`TETHER_UPGRADE`
/// set), its standard input is the channel to the old one.
fn serve(config: Config, path: &Path, relaunch: tether_proxy::Relaunch) -> anyhow::Result<()> {
    let upgrading = std::env::var_os(tether_proxy::UPGRADE_ENV).is_some();
    let runtime = gateway_runtime()?;
    runtime.block_on(async {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(signals(tx, Some(path.to_path_buf()), Some(relaunch))?);
        if upgrading {
            use std::os::fd::AsFd;
            let channel = std::io::stdin().as_fd().try_clone_to_owned()?;
            tether_proxy::run_upgraded(config, rx, channel.into()).await?;
        } else {
            tether_proxy::run(config, rx).await?;
        }
        anyhow::Ok(())
    })?;
    Ok(())
}

/// The gateway's runtime: tokio's work-stealing one on a machine with
/// several cores; on one core (a small VM, a container limited to one
/// CPU, `taskset`), a single-threaded one, as each worker of nginx is. A
/// work-stealing runtime with one worker still pays for its cross-thread
/// machinery (atomic run queues, wake-ups through the injector) on every
/// task wake-up; docs/performance.md has the measure.
fn gateway_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    }
}

/// Turns signals into gateway controls. A SIGHUP whose file has errors is
/// refused here: the errors are logged and the running config stays.
///
/// The handlers are installed before this returns, not when the task
/// first runs: on the single-threaded runtime the gateway may be ready
/// (and a SIGHUP's default action, termination, still in place) before
/// any spawned task has run.
fn signals(
    tx: mpsc::Sender<Control>,
    path: Option<PathBuf>,
    relaunch: Option<tether_proxy::Relaunch>,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: draining"),
                _ = int.recv() => tracing::info!("SIGINT: draining"),
                _ = usr2.recv() => {
                    let Some(relaunch) = &relaunch else {
                        tracing::warn!("SIGUSR2: the demo cannot be upgraded");
                        continue;
                    };
                    tracing::info!(program = %relaunch.program.display(), "SIGUSR2: upgrading");
                    if tx.send(Control::Upgrade(relaunch.clone())).await.is_err() {
                        return;
                    }
                    continue;
                }
                _ = hup.recv() => {
                    let Some(path) = &path else {
                        tracing::warn!("SIGHUP: this configuration has no file to reload");
                        continue;
                    };
                    tether_proxy::notify::reloading();
                    let file = path.clone();
                    let loaded = tokio::task::spawn_blocking(move || config::load(&file)).await;
                    let Ok(loaded) = loaded else { continue };
                    match loaded {
                        Ok(new) => {
                            tracing::info!(file = %path.display(), "SIGHUP: reloading");
                            if tx.send(Control::Reload(Box::new(new))).await.is_err() {
                                return;
                            }
                        }
                        Err(errors) => {
                            for e in errors.iter() {
                                tracing::error!("{e}");
                            }
                            tracing::error!(file = %path.display(), "SIGHUP: reload refused; the running configuration stays");
                            if tx.send(Control::ReloadRefused).await.is_err() {
                                return;
                            }
                        }
                    }
                    continue;
                }
            }
            let _ = tx.send(Control::Shutdown).await;
            return;
        }
    })
}

/// `tether demo`: a demo origin and worker on ephemeral ports, and the
/// gateway in front of them on 127.0.0.1:8080 (or a free port if taken).
fn demo() -> anyhow::Result<()> {
    let runtime = gateway_runtime()?;
    runtime.block_on(async {
        let servers = demo::start_demo_servers().await?;
        let listen = free_or(8080)?;
        let admin = free_or(9900)?;
        let text = demo::demo_config_toml(listen, admin, &servers);
        let config = config::parse("<demo>", &text)
            .map_err(|e| anyhow::anyhow!("the demo configuration is invalid:\n{e}"))?;
        println!("tether demo: open http://{listen}/ in a browser");
        println!(
            "try a persistent session: {} connect http://{listen}/chat.pphp",
            this_command()
        );
        println!("metrics: http://{admin}/metrics   health: http://{admin}/healthz");
        println!("stop with Ctrl-C");
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(signals(tx, None, None)?);
        tether_proxy::run(config, rx).await?;
        Ok(())
    })
}

/// How to run this binary again from the demo's shell: `tether` when that
/// is what the PATH finds, else the binary's own path (`cargo run` puts it
/// under target/).
fn this_command() -> String {
    let me = std::env::current_exe().ok();
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let candidate = dir.join("tether");
            candidate.is_file()
                && me.as_ref().is_some_and(|me| {
                    std::fs::canonicalize(&candidate).ok() == std::fs::canonicalize(me).ok()
                })
        })
    });
    match me {
        Some(path) if !on_path => path.display().to_string(),
        _ => "tether".to_owned(),
    }
}

/// 127.0.0.1:`port` when it is free, else a free port the system picks.
fn free_or(port: u16) -> anyhow::Result<std::net::SocketAddr> {
    let wanted = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let probe = std::net::TcpListener::bind(wanted)
        .or_else(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))?;
    Ok(probe.local_addr()?)
}

/// `tether connect URL`: a line-oriented terminal client.
fn connect(url: &str, options: tether_client::connect::ConnectOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(tether_client::connect::run_connect(url, options))?;
    Ok(())
}

/// Fields the client writes itself, which `-H` must not send twice.
const OWN_FIELDS: [&str; 7] = [
    "host",
    "accept",
    "sessionid",
    "session-received",
    "content-length",
    "transfer-encoding",
    "connection",
];

/// `-H 'Name: value'`: a token name (RFC 9110), a value without control
/// characters other than tab; never one of [`OWN_FIELDS`].
fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not a field like \"Cookie: a=1\""))?;
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(tchar) {
        return Err(format!("{name:?} is not a field name"));
    }
    if OWN_FIELDS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "{name} is set by tether connect itself (use --accept for Accept)"
        ));
    }
    let value = value.trim_matches([' ', '\t']);
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(format!("the value of {name} holds a control character"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// `--accept TYPE`: one field value, no control characters.
fn parse_accept(text: &str) -> Result<String, String> {
    if text.trim().is_empty() || text.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(format!("{text:?} is not an Accept value"));
    }
    Ok(text.trim().to_owned())
}

fn parse_session_id(text: &str) -> Result<tether_client::SessionId, String> {
    tether_client::SessionId::parse(text.as_bytes())
        .map_err(|_| format!("{text:?} is not a SessionID (22 to 64 of A-Z a-z 0-9 _ -)"))
}

/// `--linger`: a whole number with `ms`, `s` or `m`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like \"1s\" or \"500ms\""))?;
    match &text[digits.len()..] {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" => Ok(std::time::Duration::from_secs(n)),
        "m" => Ok(std::time::Duration::from_secs(n * 60)),
        _ => Err(format!(
            "{text:?} is not a duration like \"1s\" or \"500ms\""
        )),
    }
}

/// Prints a failed command's error chain on stderr.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // SPEC 11: a node name that another instance runs as is refused
        // like a configuration error.
        Err(error)
            if matches!(
                error.downcast_ref(),
                Some(tether_proxy::RunError::DuplicateNode(_))
            ) =>
        {
            eprintln!("tether: {error:#}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
        Err(error) => {
            eprintln!("tether: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// "2 vhosts, 3 listeners": listeners count `listen`, `tls_listen` and
/// the admin listener.
fn summary(config: &Config) -> String {
    let vhosts = config.vhosts.len();
    let listeners = config.server.listen.len() + config.server.tls_listen.len() + 1;
    format!(
        "{vhosts} {}, {listeners} {}",
        plural(vhosts, "vhost", "vhosts"),
        plural(listeners, "listener", "listeners")
    )
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_subcommands_and_global_flag() {
        let cli = Cli::try_parse_from(["tether", "check", "-c", "t.toml", "--log-format", "json"])
            .unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        assert!(matches!(cli.command, Command::Check { config } if config == Path::new("t.toml")));
        let cli = Cli::try_parse_from(["tether", "connect", "http://127.0.0.1:1/x.pphp"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Connect { linger, .. } if linger == std::time::Duration::from_secs(1)
        ));
        let cli = Cli::try_parse_from([
            "tether",
            "connect",
            "--linger",
            "250ms",
            "http://127.0.0.1:1/x.pphp",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Connect { linger, .. } if linger == std::time::Duration::from_millis(250)
        ));
        assert!(
            Cli::try_parse_from(["tether", "connect", "--linger", "1.5s", "http://h/x"]).is_err()
        );
        assert!(Cli::try_parse_from(["tether", "run"]).is_err());
    }

    #[test]
    fn connect_takes_headers_accept_and_a_resume() {
        let cli = Cli::try_parse_from([
            "tether",
            "connect",
            "-H",
            "Cookie: a=1; b=2",
            "--header",
            "Authorization:Bearer x",
            "--accept",
            "application/x-persistent; q=1",
            "--resume",
            "abcdefghijklmnopqrstuv",
            "--received",
            "7",
            "--transport",
            "websocket",
            "http://127.0.0.1:1/x.pphp",
        ])
        .unwrap();
        let Command::Connect {
            headers,
            accept,
            resume,
            received,
            transport,
            ..
        } = cli.command
        else {
            panic!("not connect");
        };
        assert_eq!(
            headers,
            [
                ("Cookie".to_owned(), "a=1; b=2".to_owned()),
                ("Authorization".to_owned(), "Bearer x".to_owned())
            ]
        );
        assert_eq!(accept.as_deref(), Some("application/x-persistent; q=1"));
        assert_eq!(resume.unwrap().as_str(), "abcdefghijklmnopqrstuv");
        assert_eq!(received, Some(7));
        assert_eq!(transport, TransportArg::Websocket);

        let url = "http://127.0.0.1:1/x.pphp";
        for bad in [
            &["-H", "NoColon"][..],
            &["-H", ": empty name"],
            &["-H", "Bad Name: x"],
            &["-H", "Host: other.test"],
            &["-H", "accept: text/html"],
            &["-H", "SessionID: abcdefghijklmnopqrstuv"],
            &["-H", "X: a\r\nInjected: 1"],
            &["--accept", ""],
            &["--resume", "abcdefghijklmnopqrstuv"],
            &["--received", "3"],
            &["--resume", "short", "--received", "3"],
            &["--resume", "abcdefghijklmnopqrstuv", "--received", "-1"],
            &["--transport", "ws"],
        ] {
            let mut args = vec!["tether", "connect"];
            args.extend_from_slice(bad);
            args.push(url);
            assert!(Cli::try_parse_from(&args).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn summary_counts_vhosts_and_listeners() {
        let config = config::parse(
            "t.toml",
            "[[vhost]]\nhosts = [\"a.test\"]\norigin = \"http://127.0.0.1:8081\"\n",
        )
        .unwrap();
        assert_eq!(summary(&config), "1 vhost, 2 listeners");
    }
}
