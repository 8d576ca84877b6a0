//! The shipped deploy files stay valid.

use std::path::PathBuf;
use std::process::Command;

use tether_tests::tether::tether_bin;

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
