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
    Connect {
        /// The URL of a persistent path, like http://127.0.0.1:8080/chat.pphp
        url: String,
        /// After stdin ends, keep printing what comes until nothing came
        /// for this long (or the worker ends the session), then end the
        /// session: "1s", "500ms".
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        linger: std::time::Duration,
    },
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
        Command::Connect { url, linger } => report(connect(&url, linger)),
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
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(signals(tx, Some(path.to_path_buf()), Some(relaunch)));
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

/// Turns signals into gateway controls. A SIGHUP whose file has errors is
/// refused here: the errors are logged and the running config stays.
async fn signals(
    tx: mpsc::Sender<Control>,
    path: Option<PathBuf>,
    relaunch: Option<tether_proxy::Relaunch>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr2)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined2()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
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
}

/// `tether demo`: a demo origin and worker on ephemeral ports, and the
/// gateway in front of them on 127.0.0.1:8080 (or a free port if taken).
fn demo() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let servers = demo::start_demo_servers().await?;
        let listen = free_or(8080)?;
        let admin = free_or(9900)?;
        let text = demo::demo_config_toml(listen, admin, &servers);
        let config = config::parse("<demo>", &text)
            .map_err(|e| anyhow::anyhow!("the demo configuration is invalid:\n{e}"))?;
        println!("tether demo: open http://{listen}/ in a browser");
        println!("try a persistent session: tether connect http://{listen}/chat.pphp");
        println!("stop with Ctrl-C");
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(signals(tx, None, None));
        tether_proxy::run(config, rx).await?;
        Ok(())
    })
}

/// 127.0.0.1:`port` when it is free, else a free port the system picks.
fn free_or(port: u16) -> anyhow::Result<std::net::SocketAddr> {
    let wanted = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let probe = std::net::TcpListener::bind(wanted)
        .or_else(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))?;
    Ok(probe.local_addr()?)
}

/// `tether connect URL`: a line-oriented terminal client.
fn connect(url: &str, linger: std::time::Duration) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(tether_client::connect::run_connect(
        url,
        tether_client::connect::ConnectOptions {
            linger,
            ..Default::default()
        },
    ))?;
    Ok(())
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
    fn summary_counts_vhosts_and_listeners() {
        let config = config::parse(
            "t.toml",
            "[[vhost]]\nhosts = [\"a.test\"]\norigin = \"http://127.0.0.1:8081\"\n",
        )
        .unwrap();
        assert_eq!(summary(&config), "1 vhost, 2 listeners");
    }
}
