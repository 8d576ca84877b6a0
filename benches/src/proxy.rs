//! The servers under test: the nginx origin and the three proxies, each
//! started from its own configuration in the bench's temp dir, on free
//! 127.0.0.1 ports, optionally pinned to one core with `taskset`, and
//! stopped (with every child) when dropped.
//!
//! The three proxy configurations do the same work per request: HTTP/1.1
//! keep-alive to the client and to the origin (pooled upstream
//! connections), `X-Forwarded-For`/`-Proto` added, WebSocket upgrades
//! relayed, no access log, no request limit per connection.

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procfs;

/// Which reverse proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Tether,
    /// A second tether binary (`--baseline`), run the same way, so an
    /// optimisation shows before and after in one run.
    Baseline,
    Nginx,
    Haproxy,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [Kind::Tether, Kind::Baseline, Kind::Nginx, Kind::Haproxy];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Tether => "tether",
            Kind::Baseline => "tether (baseline)",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "HAProxy",
        }
    }

    /// Short and without spaces: file and directory names.
    fn tag(self) -> &'static str {
        match self {
            Kind::Tether => "tether",
            Kind::Baseline => "baseline",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
        }
    }

    /// Either tether binary: sessions, and tether's configuration.
    pub(crate) fn is_tether(self) -> bool {
        matches!(self, Kind::Tether | Kind::Baseline)
    }
}

/// Paths of the programs the bench runs.
#[derive(Debug, Clone)]
pub(crate) struct Programs {
    pub(crate) tether: PathBuf,
    /// The `--baseline` tether binary, if any.
    pub(crate) baseline: Option<PathBuf>,
    pub(crate) nginx: PathBuf,
    pub(crate) haproxy: PathBuf,
    /// `Some(("0", "1"))`: load generator on CPU 0, proxy on CPU 1.
    pub(crate) pin: Option<(String, String)>,
}

impl Programs {
    /// The tether binary `kind` runs (the baseline's, when asked and set).
    pub(crate) fn tether_for(&self, kind: Kind) -> &Path {
        match (kind, &self.baseline) {
            (Kind::Baseline, Some(path)) => path,
            _ => &self.tether,
        }
    }
}

/// Finds `name` on PATH or in the sbin directories (nginx and haproxy
/// live in /usr/sbin, which a user's PATH may lack).
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file());
    found
}

/// A free port on 127.0.0.1 (bound, read, released).
pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running server; stopped with its children when dropped.
pub(crate) struct Server {
    pub(crate) name: String,
    pub(crate) port: u16,
    child: Child,
    dir: PathBuf,
}

impl Server {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process and its children: what CPU time is summed over.
    pub(crate) fn all_pids(&self) -> Vec<u32> {
        let mut pids = vec![self.pid()];
        pids.extend(procfs::children(self.pid()));
        pids
    }

    /// The processes that hold connections: nginx's worker(s), else the
    /// proxy process itself. RSS is read from these.
    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        let children = procfs::children(self.pid());
        if children.is_empty() {
            vec![self.pid()]
        } else {
            children
        }
    }

    /// The last lines of the server's stderr, for error messages.
    fn log_tail(&self) -> String {
        let text =
            fs::read_to_string(self.dir.join(format!("{}.stderr", self.name))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// Waits until the port accepts connections (or the process died).
    fn wait_ready(&mut self) -> Result<(), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}): {}",
                    self.name,
                    self.log_tail()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "{} did not listen on {addr} within 10 s",
            self.name
        ))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let children = procfs::children(self.pid());
        // TERM first so nginx's master stops its workers itself.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in children {
            if Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// Starts `program args` in `dir`, on `cpu` when pinning, with stdout and
/// stderr in files named after `name`, and waits for `port`.
fn spawn(
    name: &str,
    dir: &Path,
    cpu: Option<&str>,
    program: &Path,
    args: &[&str],
    port: u16,
) -> Result<Server, String> {
    let mut cmd = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu]).arg(program);
            c
        }
        None => Command::new(program),
    };
    let out = |suffix: &str| {
        fs::File::create(dir.join(format!("{name}.{suffix}")))
            .map(Stdio::from)
            .map_err(|e| format!("{name}: {e}"))
    };
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out("stdout")?)
        .stderr(out("stderr")?)
        .env("RUST_LOG", "warn");
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let mut server = Server {
        name: name.to_owned(),
        port,
        child,
        dir: dir.to_owned(),
    };
    server.wait_ready()?;
    Ok(server)
}

/// Lines common to both nginx configurations (origin and proxy).
fn nginx_main(dir: &Path) -> String {
    format!(
        "worker_processes 1;\nworker_rlimit_nofile 65536;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 20000; }}\n",
        d = dir.display()
    )
}

/// The origin: nginx serving `root` (a 1 KiB file and a large one) with
/// sendfile, one worker.
pub(crate) fn start_origin(programs: &Programs, dir: &Path, root: &Path) -> Result<Server, String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let sub = dir.join("origin");
    fs::create_dir_all(&sub).map_err(|e| e.to_string())?;
    let mut conf = nginx_main(&sub);
    let _ = write!(
        conf,
        "http {{\n  access_log off;\n  default_type application/octet-stream;\n  sendfile on;\n  \
         tcp_nopush on;\n  keepalive_requests 10000000;\n  keepalive_timeout 300s;\n  \
         server {{\n    listen 127.0.0.1:{port};\n    root {};\n  }}\n}}\n",
        root.display()
    );
    let file = sub.join("nginx.conf");
    fs::write(&file, conf).map_err(|e| e.to_string())?;
    let cpu = programs.pin.as_ref().map(|(load, _)| load.as_str());
    spawn_nginx("origin-nginx", &sub, cpu, &programs.nginx, &file, port)
}

fn spawn_nginx(
    name: &str,
    dir: &Path,
    cpu: Option<&str>,
    nginx: &Path,
    file: &Path,
    port: u16,
) -> Result<Server, String> {
    let prefix = format!("{}/", dir.display());
    let err = format!("{}/error.log", dir.display());
    let file = file.display().to_string();
    let args = [
        "-p",
        prefix.as_str(),
        "-e",
        err.as_str(),
        "-c",
        file.as_str(),
        "-g",
        "daemon off;",
    ];
    spawn(name, dir, cpu, nginx, &args, port)
}

/// Starts tether with one vhost whose persistent paths (`*.pphp`) go to
/// the session worker on `worker_port` (also its plain origin), in a fresh
/// subdirectory of `dir` named `tag`. Every session comes from 127.0.0.1,
/// so the per-address limits are lifted; so is the per-session line rate
/// (10 000/s by default), so that the windowed relay measures relaying
/// and not the limiter.
pub(crate) fn start_tether_sessions(
    kind: Kind,
    programs: &Programs,
    dir: &Path,
    tag: &str,
    worker_port: u16,
) -> Result<Server, String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let admin = free_port().map_err(|e| e.to_string())?;
    let sub = dir.join(format!("{}-{tag}", kind.tag()));
    fs::create_dir_all(&sub).map_err(|e| e.to_string())?;
    let conf = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nadmin_listen = \"127.0.0.1:{admin}\"\n\
         max_connections = 60000\nmax_connections_per_ip = 60000\n\
         drain_timeout = \"1s\"\n\n\
         [[vhost]]\nhosts = [\"*\"]\norigin = \"http://127.0.0.1:{worker_port}\"\n\n\
         [vhost.persistent]\nenabled = true\npaths = [\"*.pphp\"]\n\
         workers = [\"http://127.0.0.1:{worker_port}\"]\nmax_sessions_per_ip = 100000\n\
         max_lines_per_second = 1000000\n"
    );
    let file = sub.join("tether.toml");
    fs::write(&file, conf).map_err(|e| e.to_string())?;
    let file = file.display().to_string();
    let cpu = programs.pin.as_ref().map(|(_, proxy)| proxy.as_str());
    spawn(
        kind.tag(),
        &sub,
        cpu,
        programs.tether_for(kind),
        &["run", "-c", &file],
        port,
    )
}

/// Starts proxy `kind` in front of `origin_port`, in a fresh subdirectory
/// of `dir` named `tag` (so each start has its own files).
pub(crate) fn start_proxy(
    kind: Kind,
    programs: &Programs,
    dir: &Path,
    tag: &str,
    origin_port: u16,
) -> Result<Server, String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let sub = dir.join(format!("{}-{tag}", kind.tag()));
    fs::create_dir_all(&sub).map_err(|e| e.to_string())?;
    let cpu = programs.pin.as_ref().map(|(_, proxy)| proxy.as_str());
    let name = kind.tag();
    match kind {
        Kind::Tether | Kind::Baseline => {
            let admin = free_port().map_err(|e| e.to_string())?;
            // Every bench connection comes from 127.0.0.1: lift the
            // per-address cap (default 2000) above the WebSocket count, and
            // the per-origin cap (default 1024), which each relayed
            // WebSocket holds a place under.
            let conf = format!(
                "[server]\nlisten = [\"127.0.0.1:{port}\"]\nadmin_listen = \"127.0.0.1:{admin}\"\n\
                 max_connections = 60000\nmax_connections_per_ip = 60000\n\
                 max_upstream_connections = 60000\n\
                 drain_timeout = \"1s\"\n\n\
                 [[vhost]]\nhosts = [\"*\"]\norigin = \"http://127.0.0.1:{origin_port}\"\n"
            );
            let file = sub.join("tether.toml");
            fs::write(&file, conf).map_err(|e| e.to_string())?;
            let file = file.display().to_string();
            spawn(
                name,
                &sub,
                cpu,
                programs.tether_for(kind),
                &["run", "-c", &file],
                port,
            )
        }
        Kind::Nginx => {
            let mut conf = nginx_main(&sub);
            let _ = write!(
                conf,
                "http {{\n  access_log off;\n  keepalive_requests 10000000;\n  \
                 keepalive_timeout 300s;\n  \
                 map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}\n  \
                 upstream origin {{\n    server 127.0.0.1:{origin_port};\n    keepalive 64;\n    \
                 keepalive_requests 10000000;\n  }}\n  \
                 server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      \
                 proxy_pass http://origin;\n      proxy_http_version 1.1;\n      \
                 proxy_set_header Host $http_host;\n      \
                 proxy_set_header Upgrade $http_upgrade;\n      \
                 proxy_set_header Connection $connection_upgrade;\n      \
                 proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      \
                 proxy_set_header X-Forwarded-Proto $scheme;\n      \
                 proxy_max_temp_file_size 0;\n      proxy_read_timeout 1h;\n    }}\n  }}\n}}\n"
            );
            let file = sub.join("nginx.conf");
            fs::write(&file, conf).map_err(|e| e.to_string())?;
            spawn_nginx(name, &sub, cpu, &programs.nginx, &file, port)
        }
        Kind::Haproxy => {
            let conf = format!(
                "global\n  nbthread 1\n  maxconn 8000\n\n\
                 defaults\n  mode http\n  option http-keep-alive\n  option forwardfor\n  \
                 http-reuse always\n  timeout connect 5s\n  timeout client 300s\n  \
                 timeout server 300s\n  timeout tunnel 1h\n  timeout http-keep-alive 300s\n\n\
                 frontend fe\n  bind 127.0.0.1:{port}\n  \
                 http-request set-header X-Forwarded-Proto http\n  default_backend be\n\n\
                 backend be\n  server origin 127.0.0.1:{origin_port}\n"
            );
            let file = sub.join("haproxy.cfg");
            fs::write(&file, conf).map_err(|e| e.to_string())?;
            let file = file.display().to_string();
            spawn(name, &sub, cpu, &programs.haproxy, &["-f", &file], port)
        }
    }
}
