//! The report's header: everything needed to tell where and how a run was
//! made (date, commit, machine, the command, the other programs'
//! versions, the pinning), so the Markdown can be pasted into
//! docs/performance.md as-is and read later without guessing.

use std::process::Command;

use crate::proxy::Programs;

/// A command's first output line (stdout, else stderr), or "?".
pub(crate) fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.lines().next().unwrap_or("?").trim().to_owned()
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "?".into())
}

/// The CPU model: the first `model name` of /proc/cpuinfo.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

/// `arg` as a shell word: quoted when it holds anything but plain
/// characters, so the printed command can be pasted back.
fn shell_word(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The command line of this run, with `TETHER_BIN` in front when set.
fn command_line() -> String {
    let mut words = Vec::new();
    if let Some(bin) = std::env::var_os("TETHER_BIN") {
        words.push(format!("TETHER_BIN={}", shell_word(&bin.to_string_lossy())));
    }
    words.extend(std::env::args().map(|a| shell_word(&a)));
    words.join(" ")
}

/// The commit being benchmarked: `git rev-parse --short HEAD` here, else
/// in the source tree the bench was built from; marked when the tree has
/// uncommitted changes to tracked files.
fn commit() -> String {
    let source = env!("CARGO_MANIFEST_DIR");
    for dir in [".", source] {
        let hash = first_line("git", &["-C", dir, "rev-parse", "--short", "HEAD"]);
        if hash == "?" || hash.contains(' ') {
            continue;
        }
        let dirty = Command::new("git")
            .args(["-C", dir, "status", "--porcelain", "--untracked-files=no"])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty());
        return if dirty {
            format!("{hash} (with uncommitted changes)")
        } else {
            hash
        };
    }
    "unknown (not a git checkout)".into()
}

/// The load averages of /proc/loadavg (1, 5 and 15 minutes), or "?":
/// other work on this machine during a run shows in the figures.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "?".into())
}

/// The header, as Markdown; `load_at_start` is [`loadavg`] when the run
/// began.
pub(crate) fn header(programs: &Programs, load_at_start: &str) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| cpu_model(&t))
        .unwrap_or_else(|| "unknown CPU".into());
    let tether_version = |path: &std::path::Path| {
        format!(
            "`{}` ({})",
            path.display(),
            first_line(&path.display().to_string(), &["--version"])
        )
    };
    let mut out = format!(
        "## tether-bench, {}\n\n\
         - commit: {}\n\
         - machine: {model}, {cores} cores, Linux {}\n\
         - command: `{}`\n\
         - tether: {}\n",
        first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        commit(),
        first_line("uname", &["-r"]),
        command_line(),
        tether_version(&programs.tether),
    );
    if let Some(base) = &programs.baseline {
        out.push_str(&format!("- tether (baseline): {}\n", tether_version(base)));
    }
    out.push_str(&format!(
        "- others: {}; {}; {}\n- cores: {}\n- load average (1, 5, 15 min) at the start: {load_at_start}; \
         at the end: {} (a run alone keeps up to 2 runnable, one per core; more means other work ran too)\n\n",
        first_line(&programs.nginx.display().to_string(), &["-v"]),
        first_line(&programs.haproxy.display().to_string(), &["-v"]),
        first_line("wrk", &["-v"]),
        match &programs.pin {
            Some((load, proxy)) => format!(
                "each proxy on CPU {proxy} alone; the origin nginx, wrk, curl and this \
                 program (WebSocket origin, session worker and session clients) on CPU {load}"
            ),
            None => "no pinning (taskset or a second core missing): all share the cores".into(),
        },
        loadavg(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cpu_model() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\
                    processor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(text).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor : 0\n"), None);
    }

    #[test]
    fn reads_three_load_averages() {
        let text = loadavg();
        assert_eq!(text.split(' ').count(), 3, "{text}");
        assert!(text.split(' ').all(|v| v.parse::<f64>().is_ok()), "{text}");
    }

    #[test]
    fn quotes_shell_words_only_when_needed() {
        assert_eq!(shell_word("--secs"), "--secs");
        assert_eq!(shell_word("/a/b-c/tether"), "/a/b-c/tether");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
