//! The shipped deploy files stay valid: the example configuration passes
//! `tether check`, and each origin recipe is loaded as written (addresses
//! and paths moved to the test's) by its real server, passes `nginx -t` /
//! `apache2 -t`, and serves a request through tether running the example
//! configuration.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tether_tests::tether::tether_bin;
use tether_tests::{free_port, wait_for, Apache, Nginx, RawConn, Tether};

#[test]
fn example_config_passes_check() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/tether.toml");
    let out = Command::new(tether_bin())
        .args(["check", "-c"])
        .arg(&file)
        .output()
        .expect("run tether check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check failed:\n{stderr}");
    assert!(stdout.contains("ok (2 vhosts"), "{stdout}");
}

/// `text` with each `(from, to)` replaced; a `from` missing from the file
/// fails the test, so that a recipe cannot drift away from what is tested.
fn substitute(what: &str, text: &str, pairs: &[(&str, String)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in pairs {
        assert!(out.contains(from), "{what} no longer holds {from:?}");
        out = out.replace(from, to);
    }
    out
}

fn read_repo(path: &str) -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path),
    )
    .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// deploy/examples/tether.toml with its addresses moved to free ports and
/// its origins to `www` (www.example.test) and `chat` (chat.example.test).
fn example_tether(www: u16, chat: u16) -> Tether {
    Tether::start(&substitute(
        "deploy/examples/tether.toml",
        &read_repo("deploy/examples/tether.toml"),
        &[
            ("127.0.0.1:8080", format!("127.0.0.1:{}", free_port())),
            ("127.0.0.1:9900", format!("127.0.0.1:{}", free_port())),
            ("127.0.0.1:8081", format!("127.0.0.1:{www}")),
            ("127.0.0.1:8082", format!("127.0.0.1:{chat}")),
        ],
    ))
}

fn passes_test(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e} (make deps installs it)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn the_nginx_recipe_loads_as_written_and_serves_through_tether() {
    let port = free_port();
    let recipe = substitute(
        "deploy/nginx/origin-behind-tether.conf",
        &read_repo("deploy/nginx/origin-behind-tether.conf"),
        &[
            ("127.0.0.1:8081", format!("127.0.0.1:{port}")),
            ("/var/www/example", "{root}".to_owned()),
            ("/var/log/nginx/", "{dir}/logs/".to_owned()),
        ],
    );
    let nginx = Nginx::start_including(&recipe, &[port]);
    let text = passes_test(
        Command::new("nginx")
            .arg("-t")
            .arg("-p")
            .arg(nginx.dir())
            .arg("-c")
            .arg(nginx.config_path()),
        "nginx -t",
    );
    assert!(text.contains("test is successful"), "{text}");
    nginx.put_file("index.html", b"example site\n");

    let tether = example_tether(port, free_port());
    let mut conn = RawConn::connect(tether.addr());
    let r = conn.request(
        "GET",
        "/index.html",
        "www.example.test",
        &[("X-Forwarded-For", "203.0.113.9")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.head_text());
    assert_eq!(r.body_text(), "example site\n");
    let log = nginx.dir().join("logs/example.access.log");
    let line = wait_for(
        "the recipe's access log line",
        Duration::from_secs(10),
        || std::fs::read_to_string(&log).ok().filter(|l| !l.is_empty()),
    );
    // The recipe's log_format: the address after realip, tether's
    // X-Forwarded-For (the client's, then the peer tether saw) and host.
    assert_eq!(
        line.trim_end(),
        "127.0.0.1 \"203.0.113.9, 127.0.0.1\" www.example.test \"GET /index.html HTTP/1.1\" 200 13"
    );
}

#[test]
fn the_apache_recipe_loads_as_written_and_serves_php_through_tether() {
    let port = free_port();
    let recipe = substitute(
        "deploy/apache/origin-behind-tether.conf",
        &read_repo("deploy/apache/origin-behind-tether.conf"),
        &[
            ("127.0.0.1:8082", format!("127.0.0.1:{port}")),
            ("/var/www/chat", "{dir}/chat".to_owned()),
        ],
    );
    // What `a2enmod remoteip` adds (the harness loads php already), and
    // the grant Debian's apache2.conf gives /var/www.
    let apache = Apache::start(&format!(
        "LoadModule remoteip_module /usr/lib/apache2/modules/mod_remoteip.so\n\
         <Directory {{dir}}/chat>\n    Require all granted\n</Directory>\n{recipe}"
    ));
    let docroot = apache.dir().join("chat");
    std::fs::create_dir_all(&docroot).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    tether_tests::wait_until_accepts(addr, Duration::from_secs(10), || Ok(()))
        .expect("the recipe's Listen");
    let text = passes_test(
        Command::new("apache2")
            .arg("-t")
            .arg("-d")
            .arg(apache.dir())
            .arg("-f")
            .arg(apache.dir().join("httpd.conf")),
        "apache2 -t",
    );
    assert!(text.contains("Syntax OK"), "{text}");
    // Only in the recipe's DocumentRoot: a 200 is the recipe's vhost.
    let who = b"<?php echo $_SERVER['REMOTE_ADDR'], ' ', $_SERVER['HTTP_HOST'], ' ', $_SERVER['DOCUMENT_ROOT'], \"\\n\";\n";
    std::fs::write(docroot.join("who.php"), who).unwrap();
    std::fs::write(docroot.join("who.pphp"), who).unwrap();
    let root = docroot.display();

    let tether = example_tether(free_port(), port);
    let mut conn = RawConn::connect(tether.addr());
    let r = conn.request(
        "GET",
        "/who.php",
        "chat.example.test",
        &[("X-Forwarded-For", "203.0.113.9")],
        b"",
    );
    assert_eq!(r.status, 200, "{}{}", r.head_text(), r.body_text());
    // remoteip took the address from X-Forwarded-For (the test's own
    // loopback address is one of RemoteIPInternalProxy).
    assert_eq!(
        r.body_text(),
        format!("203.0.113.9 chat.example.test {root}\n")
    );
    // The recipe's FilesMatch runs *.pphp as PHP.
    let r = tether_tests::raw_http::get(addr, "chat.example.test", "/who.pphp");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body_text(),
        format!("127.0.0.1 chat.example.test {root}\n")
    );
}
