//! The container image (deploy/docker/Dockerfile). With a working container
//! engine (docker, else podman) the image is built and run: `/healthz`
//! answers, the engine reports it healthy, SIGHUP leaves it running and
//! `stop` (SIGTERM) exits 0, as a non-root user. Without one the Dockerfile
//! is checked by hadolint (installed by scripts/install-test-deps.sh) and
//! nothing is built; the test prints which ran. Either way the file's
//! contract is checked as text, and its default configuration by
//! `tether check`.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use tether_tests::tether::tether_bin;
use tether_tests::wait_for;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dockerfile() -> PathBuf {
    repo().join("deploy/docker/Dockerfile")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{:?}: {e}", cmd.get_program()))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// docker or podman, when one answers `info` (a client without its daemon
/// does not count).
fn engine() -> Option<&'static str> {
    ["docker", "podman"].into_iter().find(|e| {
        Command::new(e)
            .arg("info")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn the_dockerfile_keeps_its_contract() {
    let text = std::fs::read_to_string(dockerfile()).unwrap();
    // Instructions, continuation lines joined, comments dropped.
    let joined = text.replace("\\\n", " ");
    let instructions: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let all = |keyword: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter_map(|l| l.strip_prefix(keyword)?.strip_prefix(' '))
            .map(str::trim)
            .collect()
    };
    assert!(all("FROM").len() >= 2, "multi-stage: {:?}", all("FROM"));
    let user = *all("USER").last().expect("a USER");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|n| n > 0),
        "the last USER is a numeric non-root id: {user}"
    );
    let health = all("HEALTHCHECK").join(" ");
    assert!(health.contains("/healthz"), "{health}");
    assert_eq!(
        all("ENTRYPOINT"),
        ["[\"/usr/local/bin/tether\"]"],
        "exec form: tether is process 1"
    );
    assert_eq!(
        all("CMD"),
        ["[\"run\", \"-c\", \"/etc/tether/tether.toml\"]"]
    );
    // Every file the image copies from the repository exists.
    for copy in all("COPY").iter().filter(|c| !c.starts_with("--from")) {
        let source = copy.split_whitespace().next().unwrap();
        assert!(repo().join(source).exists(), "COPY {source}: no such file");
    }
    let out = run(Command::new(tether_bin())
        .args(["check", "-c"])
        .arg(repo().join("deploy/docker/tether.toml")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_compose_file_names_files_that_exist_and_one_token() {
    let dir = repo().join("deploy/docker");
    let text = std::fs::read_to_string(dir.join("compose.yaml")).unwrap();
    let mut sources = Vec::new();
    for line in text.lines().map(str::trim) {
        // Bind mounts: "- ./file:/path:ro", "- ../dir:/path:ro".
        if let Some(volume) = line.strip_prefix("- ").filter(|v| v.starts_with('.')) {
            sources.push(volume.split(':').next().unwrap().to_owned());
        }
        if let Some(context) = line.strip_prefix("context: ") {
            sources.push(context.to_owned());
        }
    }
    assert!(sources.len() >= 5, "volumes and context: {sources:?}");
    for source in &sources {
        let source = source.strip_prefix("./").unwrap_or(source);
        assert!(
            dir.join(source).exists(),
            "compose.yaml: {source} does not exist"
        );
    }
    let dockerfile = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("dockerfile: "))
        .expect("dockerfile:");
    assert!(repo().join(dockerfile).exists(), "{dockerfile}");
    // The token chat.pphp presents is the one tether checks.
    let config = std::fs::read_to_string(dir.join("compose.tether.toml")).unwrap();
    let token = config
        .lines()
        .find_map(|l| l.strip_prefix("admin_token = "))
        .expect("admin_token")
        .trim_matches('"');
    assert!(
        text.contains(&format!("TETHER_ADMIN_TOKEN: {token}\n")),
        "compose.yaml and compose.tether.toml disagree on the token"
    );
    let out = run(Command::new(tether_bin())
        .args(["check", "-c"])
        .arg(dir.join("compose.tether.toml")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(engine) = engine() {
        ok(Command::new(engine)
            .args(["compose", "-f"])
            .arg(dir.join("compose.yaml"))
            .args(["config", "--quiet"]));
    }
}

#[test]
fn the_image_builds_and_runs_or_the_dockerfile_lints_clean() {
    let Some(engine) = engine() else {
        let out = Command::new("hadolint").arg(dockerfile()).output().unwrap_or_else(|e| {
            panic!(
                "no container engine and no hadolint ({e}): scripts/install-test-deps.sh (make deps) installs hadolint"
            )
        });
        assert!(
            out.status.success(),
            "hadolint deploy/docker/Dockerfile:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let version = ok(Command::new("hadolint").arg("--version"));
        eprintln!("docker: no container engine; hadolint ({version}) ran, no image built");
        return;
    };
    eprintln!("docker: building the image with {engine}");
    let tag = format!("tether-test:{}", std::process::id());
    ok(Command::new(engine)
        .args(["build", "-f"])
        .arg(dockerfile())
        .args(["-t", &tag])
        .arg(repo()));
    let name = format!("tether-test-{}", std::process::id());
    struct Remove(&'static str, String, String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = Command::new(self.0).args(["rm", "-f", &self.1]).output();
            let _ = Command::new(self.0).args(["rmi", "-f", &self.2]).output();
        }
    }
    let _cleanup = Remove(engine, name.clone(), tag.clone());
    ok(Command::new(engine).args(["run", "-d", "--name", &name, "-p", "127.0.0.1::9900", &tag]));
    let port = ok(Command::new(engine).args(["port", &name, "9900/tcp"]));
    let admin: std::net::SocketAddr = port
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("{engine} port: {port}"));
    wait_for(
        "/healthz through the published port",
        Duration::from_secs(30),
        || {
            let r = std::panic::catch_unwind(|| {
                tether_tests::raw_http::get(admin, "admin", "/healthz")
            });
            r.ok().filter(|r| r.status == 200).map(|_| ())
        },
    );
    let uid = ok(Command::new(engine).args(["exec", &name, "id", "-u"]));
    assert_eq!(uid, "10001");
    let state = |field: &str| ok(Command::new(engine).args(["inspect", "--format", field, &name]));
    wait_for("the engine's health check", Duration::from_secs(60), || {
        (state("{{.State.Health.Status}}") == "healthy").then_some(())
    });
    ok(Command::new(engine).args(["kill", "--signal", "HUP", &name]));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        state("{{.State.Running}}"),
        "true",
        "SIGHUP reloads, never stops"
    );
    ok(Command::new(engine).args(["stop", "--time", "20", &name]));
    assert_eq!(
        state("{{.State.ExitCode}}"),
        "0",
        "SIGTERM drains and exits 0"
    );
}
