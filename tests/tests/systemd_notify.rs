//! systemd's `Type=notify` protocol (deploy/systemd/tether.service): tether
//! says READY=1 once it listens, RELOADING=1 then READY=1 around a SIGHUP,
//! and STOPPING=1 when SIGTERM drains it, on the datagram socket named by
//! `NOTIFY_SOCKET`, as systemd would receive them.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use tether_tests::tether::tether_bin;
use tether_tests::{free_port, ChildGuard, Signal, TempDir};

fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).trim_end().to_owned()
}

#[test]
fn tether_tells_systemd_when_it_is_ready_reloading_and_stopping() {
    notifies(None);
}

/// On one core tether runs a single-threaded runtime, where a spawned task
/// first runs only when the gateway yields: its signal handlers must be in
/// place before READY=1, or the SIGHUP that follows kills it (its default
/// action).
#[test]
fn on_one_core_the_signals_that_follow_ready_are_handled() {
    // This thread shares the core: woken by READY=1, it signals before
    // tether's gateway has yielded once, which is the order that killed it.
    let mut cpus = rustix::thread::CpuSet::new();
    cpus.set(0);
    rustix::thread::sched_setaffinity(None, &cpus).expect("pin the test thread to CPU 0");
    notifies(Some("0"));
}

/// The protocol, with tether pinned by `taskset` to `cpus` if given.
fn notifies(cpus: Option<&str>) {
    let dir = TempDir::new().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let config = dir.path().join("tether.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{}\"]\nadmin_listen = \"127.0.0.1:{}\"\n\n\
             [[vhost]]\nhosts = [\"*\"]\norigin = \"http://127.0.0.1:9\"\n",
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let mut cmd = match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(tether_bin());
            c
        }
        None => Command::new(tether_bin()),
    };
    cmd.arg("run")
        .arg("-c")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut tether = ChildGuard::spawn(
        "tether",
        cmd,
        &dir.path().join("tether.stderr"),
        tether_tests::process::StopWith::Kill,
    );
    assert_eq!(next(&socket), "READY=1");
    tether.signal(Signal::Hup);
    assert_eq!(next(&socket), "RELOADING=1");
    // The signal handler says it, then the gateway around the reload.
    let mut after = next(&socket);
    while after == "RELOADING=1" {
        after = next(&socket);
    }
    assert_eq!(after, "READY=1");
    tether.signal(Signal::Term);
    assert_eq!(next(&socket), "STOPPING=1");
    assert!(tether.wait_timeout(Duration::from_secs(10)).is_some());
}
