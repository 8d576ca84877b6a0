//! Apache + mod_php as an origin, run in the foreground from a config in a
//! temp dir, with the PHP pages the tests use.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::access_log::AccessLog;
use crate::process::{ChildGuard, Signal, StopWith};
use crate::{free_port, is_root, set_mode, temp_dir, wait_until_accepts, TempDir, STARTUP_TIMEOUT};

const MODULES: &str = "/usr/lib/apache2/modules";

/// PHP pages written into the docroot of every [`Apache`].
pub const PHP_PAGES: &[(&str, &str)] = &[
    // Echoes method, URI, protocol, every request header (lower-cased
    // names, sorted) and the body's length and SHA-1, read as a stream.
    (
        "echo.php",
        r#"<?php
$ctx = hash_init('sha1');
$len = 0;
$in = fopen('php://input', 'rb');
while (!feof($in)) {
    $b = fread($in, 65536);
    if ($b === false || $b === '') { if (feof($in)) break; else continue; }
    $len += strlen($b);
    hash_update($ctx, $b);
}
header('Content-Type: text/plain');
echo "method=", $_SERVER['REQUEST_METHOD'], "\n";
echo "uri=", $_SERVER['REQUEST_URI'], "\n";
echo "protocol=", $_SERVER['SERVER_PROTOCOL'], "\n";
echo "body-length=", $len, "\n";
echo "body-sha1=", hash_final($ctx), "\n";
$h = array_change_key_case(getallheaders(), CASE_LOWER);
ksort($h);
foreach ($h as $k => $v) { echo "h:", $k, "=", $v, "\n"; }
"#,
    ),
    // Two cookies out, the request's cookies back.
    (
        "cookie.php",
        r#"<?php
setcookie('a', '1', ['path' => '/']);
setcookie('b', '2', ['path' => '/', 'httponly' => true, 'samesite' => 'Lax']);
header('Content-Type: text/plain');
echo "cookie=[", $_SERVER['HTTP_COOKIE'] ?? '', "]\n";
"#,
    ),
    (
        "redirect.php",
        r#"<?php
setcookie('r', 'x');
header('Location: /target.php?from=redirect', true, 302);
"#,
    ),
    // No Content-Length: Apache answers HTTP/1.1 with chunked encoding.
    (
        "flush.php",
        r#"<?php
header('Content-Type: text/plain');
$n = intval($_GET['n'] ?? '5');
for ($i = 0; $i < $n; $i++) {
    echo str_repeat(chr(97 + $i % 26), 1000 + $i), "\n";
    flush();
}
"#,
    ),
    (
        "sleep.php",
        r#"<?php
sleep(intval($_GET['s'] ?? '5'));
echo "slept\n";
"#,
    ),
];

/// A running Apache; stopped (SIGTERM, then SIGKILL) and reaped on `Drop`.
pub struct Apache {
    dir: TempDir,
    child: ChildGuard,
    port: u16,
}

impl Apache {
    /// Starts Apache (prefork, mod_php, mod_rewrite, mod_headers) with the
    /// [`PHP_PAGES`] in its docroot, and `extra` appended to the config
    /// (`{root}` and `{dir}` are replaced). Waits until the port accepts.
    ///
    /// Built in: `RewriteRule ^/old/(.*)$ /echo.php?old=$1 [PT]` and
    /// `Header always set X-Origin apache`.
    pub fn start(extra: &str) -> Apache {
        let dir = temp_dir();
        let d = dir.path();
        for sub in ["root", "run", "uploads"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        set_mode(&d.join("root"), 0o755);
        set_mode(&d.join("uploads"), 0o777);
        for (name, text) in PHP_PAGES {
            std::fs::write(d.join("root").join(name), text).expect("write php page");
        }
        let php = find_php_module();
        let port = free_port();
        let user = if is_root() {
            "User www-data\nGroup www-data\n"
        } else {
            ""
        };
        let extra = extra
            .replace("{root}", &d.join("root").display().to_string())
            .replace("{dir}", &d.display().to_string());
        let conf = format!(
            r#"ServerRoot "{d}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {d}/httpd.pid
DefaultRuntimeDir {d}/run
Mutex file:{d}/run default
ErrorLog {d}/error.log
LogLevel warn
LoadModule mpm_prefork_module {MODULES}/mod_mpm_prefork.so
LoadModule authz_core_module {MODULES}/mod_authz_core.so
LoadModule mime_module {MODULES}/mod_mime.so
LoadModule dir_module {MODULES}/mod_dir.so
LoadModule rewrite_module {MODULES}/mod_rewrite.so
LoadModule headers_module {MODULES}/mod_headers.so
LoadModule php_module {php}
{user}StartServers 2
MinSpareServers 2
MaxSpareServers 6
MaxRequestWorkers 32
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 30
Timeout 60
LimitRequestBody 0
TypesConfig /etc/mime.types
LogFormat "%p\t%m\t%U%q\t%>s\t%I\t%O\t%{{X-Forwarded-For}}i" tether
CustomLog {d}/access.log tether
DocumentRoot {d}/root
<Directory />
    Require all denied
    AllowOverride None
</Directory>
<Directory {d}/root>
    Require all granted
</Directory>
DirectoryIndex index.php index.html
<FilesMatch "\.php$">
    SetHandler application/x-httpd-php
</FilesMatch>
php_admin_value output_buffering 0
php_admin_flag zlib.output_compression off
php_admin_value post_max_size 0
php_admin_value upload_tmp_dir {d}/uploads
RewriteEngine On
RewriteRule ^/old/(.*)$ /echo.php?old=$1 [PT]
Header always set X-Origin apache
{extra}
"#,
            d = d.display(),
            php = php.display(),
        );
        std::fs::write(d.join("httpd.conf"), &conf).expect("write httpd.conf");
        let child = spawn(d, port, &conf);
        Apache { dir, child, port }
    }

    /// Stops Apache completely, as `apachectl graceful-stop` does
    /// (SIGWINCH): the port refuses connections from then on, and requests
    /// in flight are finished first (a SIGTERM would kill them halfway).
    /// A child waiting on a kept-alive connection still serves one more
    /// request on it, or waits for `KeepAliveTimeout`, so a test that
    /// stops Apache sets a short one. Waits until the parent has exited.
    pub fn stop(&mut self) {
        self.stop_by("-WINCH")
    }

    pub fn stop_now(&mut self) {
        self.stop_by("-TERM")
    }

    fn stop_by(&mut self, signal: &str) {
        let _ = Command::new("kill")
            .arg(signal)
            .arg(self.child.pid().to_string())
            .status();
        if self.child.wait_timeout(Duration::from_secs(20)).is_none() {
            panic!(
                "apache did not stop within 20 s of {signal}; error.log:\n{}",
                self.error_log()
            );
        }
        // A child may outlive the parent for a moment, still holding the
        // listening socket or a kept-alive connection: stopped means no
        // process of this instance is left (its children run with the
        // same `-f` path) and the port refuses.
        let conf = self.dir.path().join("httpd.conf");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while instance_processes(&conf) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "apache children still alive 10 s after the parent exited"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "apache's port still accepts 10 s after the parent exited"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a stopped Apache again: same config, same port.
    pub fn start_again(&mut self) {
        let d = self.dir.path().to_owned();
        let conf = std::fs::read_to_string(d.join("httpd.conf")).expect("read httpd.conf");
        self.child = spawn(&d, self.port, &conf);
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
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

    /// Writes a file into the docroot (world-readable).
    pub fn put_file(&self, path: &str, bytes: &[u8]) -> PathBuf {
        let p = self.root().join(path.trim_start_matches('/'));
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, bytes).expect("write file");
        set_mode(&p, 0o644);
        p
    }
}

/// Runs Apache in the foreground from `d/httpd.conf`; waits until `port`
/// accepts.
/// Processes whose command line names `conf` (an Apache instance's parent
/// and children).
fn instance_processes(conf: &Path) -> usize {
    let want = conf.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .filter(|e| {
                    std::fs::read(e.path().join("cmdline"))
                        .is_ok_and(|cmd| cmd.split(|&b| b == 0).any(|arg| arg == want))
                })
                .count()
        })
        .unwrap_or(0)
}

fn spawn(d: &Path, port: u16, conf: &str) -> ChildGuard {
    let mut cmd = Command::new("apache2");
    cmd.arg("-d")
        .arg(d)
        .arg("-f")
        .arg(d.join("httpd.conf"))
        .arg("-DFOREGROUND")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut child = ChildGuard::spawn(
        "apache2",
        cmd,
        &d.join("apache.stderr"),
        StopWith::Graceful(Signal::Term, Duration::from_secs(10)),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if let Err(e) = wait_until_accepts(addr, STARTUP_TIMEOUT, || child.check_alive()) {
        let log = std::fs::read_to_string(d.join("error.log")).unwrap_or_default();
        panic!("apache did not start: {e}\nerror.log:\n{log}\nconfig:\n{conf}");
    }
    child
}

fn find_php_module() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(MODULES)
        .unwrap_or_else(|e| panic!("{MODULES}: {e} (is apache2 installed? run make test)"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("libphp") && name.ends_with(".so")
        })
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no libphp*.so in {MODULES}: install libapache2-mod-php"))
}
