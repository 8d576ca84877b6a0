//! What the bench reads from `/proc`: CPU time, resident memory, children,
//! and the open-files limit.
//!
//! CPU time is `utime + stime` from `/proc/PID/stat` (fields 14 and 15, in
//! clock ticks): for a thread-group leader these already add up every
//! thread of the process, so a multi-threaded proxy needs no per-thread sum.
//! Children (nginx's worker under its master) are found by their parent id.

use std::fs;
use std::process::Command;
use std::time::Duration;

/// Clock ticks per second (`getconf CLK_TCK`), 100 when it cannot be asked.
pub(crate) fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// The fields of `/proc/PID/stat` after the command name (which may hold
/// spaces and parentheses): index 0 is field 3, the state.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// `utime + stime` of one process (all its threads), in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    // Fields 14 and 15 of stat(5) are at indexes 11 and 12 here.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time of several processes together, as a duration.
pub(crate) fn cpu_time(pids: &[u32], ticks_per_sec: u64) -> Option<Duration> {
    let mut ticks = 0;
    for &pid in pids {
        ticks += cpu_ticks(pid)?;
    }
    Some(Duration::from_micros(ticks * 1_000_000 / ticks_per_sec))
}

/// `VmRSS` of one process, in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resident memory of several processes together, in KiB.
pub(crate) fn rss_total_kib(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&p| rss_kib(p)).sum()
}

/// Time on a CPU and time waiting on a run queue, in nanoseconds, summed
/// over every thread of `pid` (`/proc/PID/task/TID/schedstat`, needs
/// schedstats in the kernel): what a process spent working and what it
/// spent ready but waiting for a core.
pub(crate) fn sched_ns(pid: u32) -> Option<(u64, u64)> {
    let dir = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let (mut run, mut wait) = (0, 0);
    for task in dir.flatten() {
        // A thread may end between the listing and the read.
        let Ok(text) = fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
        run += f.next()??;
        wait += f.next()??;
    }
    Some((run, wait))
}

/// TCP connections opened so far by connect(2) in this network namespace
/// (`ActiveOpens` of /proc/net/snmp): over a load run, how many new
/// connections the client and the proxy made (the whole host's count).
pub(crate) fn tcp_active_opens() -> Option<u64> {
    snmp_tcp(&fs::read_to_string("/proc/net/snmp").ok()?, "ActiveOpens")
}

/// Field `name` of the `Tcp:` lines of /proc/net/snmp (a line of names,
/// then a line of values).
fn snmp_tcp(text: &str, name: &str) -> Option<u64> {
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// Processes whose parent is `pid` (nginx's workers under the master).
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            stat_fields(child)
                .and_then(|f| f.get(1)?.parse::<u32>().ok())
                .is_some_and(|ppid| ppid == pid)
        })
        .collect();
    out.sort_unstable();
    out
}

/// The soft (`nth(3)`) or hard (`nth(4)`) limit on open files of this
/// process.
fn open_files_limit(nth: usize) -> Option<u64> {
    let text = fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(nth)?.parse().ok()
}

/// Raises this process's open-files limit to at least `want` (children
/// inherit it) with util-linux `prlimit`, so the bench needs no `unsafe`
/// `setrlimit`: the soft limit to the hard one when that is enough (never
/// lowering the hard limit: tether, at 8 000 sessions, holds 16 000
/// sockets of its own), else both to `want` (which needs privileges).
/// Returns the soft limit in force afterwards.
pub(crate) fn raise_open_files(want: u64) -> u64 {
    let current = open_files_limit(3).unwrap_or(1024);
    if current >= want {
        return current;
    }
    let to = open_files_limit(4).unwrap_or(want).max(want);
    let _ = Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={to}:{to}"))
        .stderr(std::process::Stdio::null())
        .status();
    open_files_limit(3).unwrap_or(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_snmp_tcp_fields() {
        let text = "Ip: Forwarding\nIp: 1\n\
                    Tcp: RtoAlgorithm ActiveOpens PassiveOpens\nTcp: 1 3759996 3687059\n\
                    Udp: InDatagrams\nUdp: 5\n";
        assert_eq!(snmp_tcp(text, "ActiveOpens"), Some(3_759_996));
        assert_eq!(snmp_tcp(text, "PassiveOpens"), Some(3_687_059));
        assert_eq!(snmp_tcp(text, "Nope"), None);
        assert!(tcp_active_opens().is_some());
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(rss_kib(me).unwrap() > 0);
        assert!(clock_ticks() > 0);
        assert!(sched_ns(me).is_some_and(|(run, _)| run > 0));
    }
}
