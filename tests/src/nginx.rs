//! nginx as an origin, run in the foreground from a config in a temp dir.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::access_log::AccessLog;
use crate::process::{ChildGuard, Signal, StopWith};
use crate::{free_port, is_root, set_mode, temp_dir, wait_until_accepts, TempDir, STARTUP_TIMEOUT};

/// The access log line: tab-separated fields, see [`crate::access_log::LogEntry`].
const LOG_FORMAT: &str = "$server_port\\t$request_method\\t$request_uri\\t$status\\t$request_length\\t$body_bytes_sent\\t$http_x_forwarded_for";

/// Server-block directives of [`Nginx::standard`], which the plain-proxy
/// tests use. `{root}` is the docroot, `{dir}` the temp dir.
pub const STANDARD_SERVER: &str = r#"
    root {root};
    location /up/ {
        root {dir}/store;
        dav_methods PUT;
        create_full_put_path on;
        client_max_body_size 0;
    }
    location = /redirect {
        add_header Set-Cookie "r=1; Path=/; HttpOnly";
        return 301 http://a.test/target?x=1;
    }
    location = /cookie {
        add_header Set-Cookie "a=1; Path=/";
        add_header Set-Cookie "b=2; Path=/; Secure; HttpOnly";
        return 200 "cookie=[$http_cookie]\n";
    }
    location = /204 { return 204; }
    location /gz/ {
        gzip on;
        gzip_proxied any;
        gzip_http_version 1.0;
        gzip_types text/plain;
        gzip_min_length 0;
    }
    location /slow/ {
        limit_rate 256k;
    }
    location = /echo {
        default_type text/plain;
        return 200 "method=[$request_method]\nhost=[$http_host]\nxff=[$http_x_forwarded_for]\nxfp=[$http_x_forwarded_proto]\nxfh=[$http_x_forwarded_host]\nvia=[$http_via]\nconnection=[$http_connection]\nkeep-alive=[$http_keep_alive]\nte=[$http_te]\nproxy-connection=[$http_proxy_connection]\nupgrade=[$http_upgrade]\nx-foo=[$http_x_foo]\nx-bar=[$http_x_bar]\ntransfer-encoding=[$http_transfer_encoding]\ncontent-length=[$http_content_length]\n";
    }
"#;

/// A running nginx; stopped (SIGTERM, then SIGKILL) and reaped on `Drop`.
pub struct Nginx {
    dir: TempDir,
    child: ChildGuard,
    ports: Vec<u16>,
}

impl Nginx {
    /// Starts nginx with one `server {}` block per entry of `servers`, each
    /// on its own free port (the `listen` directive is added). In the
    /// directives, `{root}` is replaced by the docroot and `{dir}` by the
    /// temp dir. Waits until every port accepts.
    pub fn start(servers: &[&str]) -> Nginx {
        let dir = Nginx::prepare();
        let d = dir.path();
        let ports: Vec<u16> = servers.iter().map(|_| free_port()).collect();
        let mut blocks = String::new();
        for (server, port) in servers.iter().zip(&ports) {
            let body = server
                .replace("{root}", &d.join("root").display().to_string())
                .replace("{dir}", &d.display().to_string());
            blocks.push_str(&format!(
                "  server {{\n    listen 127.0.0.1:{port};\n    server_name _;\n{body}\n  }}\n"
            ));
        }
        Nginx::launch(dir, &blocks, ports)
    }

    /// Starts nginx with `http_text` (a file meant for `include` in the
    /// `http {}` block, such as a deploy/ recipe; `{root}` and `{dir}`
    /// replaced) in place of generated server blocks, and waits until each
    /// of `ports` accepts. The same preamble as [`Nginx::start`].
    pub fn start_including(http_text: &str, ports: &[u16]) -> Nginx {
        let dir = Nginx::prepare();
        let d = dir.path();
        let text = http_text
            .replace("{root}", &d.join("root").display().to_string())
            .replace("{dir}", &d.display().to_string());
        Nginx::launch(dir, &text, ports.to_vec())
    }

    /// The config file in use (`nginx -t -c` it).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    fn prepare() -> TempDir {
        let dir = temp_dir();
        let d = dir.path();
        for sub in [
            "root", "store", "body", "proxy", "fastcgi", "uwsgi", "scgi", "logs",
        ] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
            set_mode(&d.join(sub), 0o777);
        }
        dir
    }

    fn launch(dir: TempDir, blocks: &str, ports: Vec<u16>) -> Nginx {
        let d = dir.path();
        let user = if is_root() { "user root;\n" } else { "" };
        let conf = format!(
            r#"{user}daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  log_format tether "{LOG_FORMAT}";
  access_log {d}/access.log tether;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  sendfile on;
  keepalive_requests 100000;
  keepalive_timeout 75s;
{blocks}}}
"#,
            d = d.display()
        );
        std::fs::write(d.join("nginx.conf"), &conf).expect("write nginx.conf");
        let mut cmd = Command::new("nginx");
        cmd.arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-e")
            .arg(d.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let mut child = ChildGuard::spawn(
            "nginx",
            cmd,
            &d.join("nginx.stderr"),
            StopWith::Graceful(Signal::Term, Duration::from_secs(10)),
        );
        for port in &ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], *port));
            if let Err(e) = wait_until_accepts(addr, STARTUP_TIMEOUT, || child.check_alive()) {
                let log = std::fs::read_to_string(d.join("error.log")).unwrap_or_default();
                panic!("nginx did not start: {e}\nerror.log:\n{log}\nconfig:\n{conf}");
            }
        }
        Nginx { dir, child, ports }
    }

    /// One server block with [`STANDARD_SERVER`].
    pub fn standard() -> Nginx {
        Nginx::start(&[STANDARD_SERVER])
    }

    /// Address of server block `i`.
    pub fn addr_of(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[i]))
    }

    /// Address of the first server block.
    pub fn addr(&self) -> SocketAddr {
        self.addr_of(0)
    }

    /// The docroot (`{root}`).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The temp dir (`{dir}`); PUTs to `/up/NAME` land in `store/up/NAME`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where a PUT to `uri` (e.g. `/up/x`) is stored.
    pub fn stored(&self, uri: &str) -> PathBuf {
        self.dir
            .path()
            .join("store")
            .join(uri.trim_start_matches('/'))
    }

    pub fn access_log(&self) -> AccessLog {
        AccessLog::new(self.dir.path().join("access.log"))
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Writes `bytes` to `path` (relative to the docroot), creating dirs.
    pub fn put_file(&self, path: &str, bytes: &[u8]) -> PathBuf {
        let p = self.root().join(path.trim_start_matches('/'));
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, bytes).expect("write file");
        p
    }
}
