//! The load generators: `wrk` for the keep-alive request load and `curl`
//! for the streamed download, each on the load core when pinning, and
//! what the bench reads from their output.

use std::process::Command;
use std::time::Duration;

use crate::proxy::Programs;

/// What one wrk run reported.
#[derive(Debug, Clone, Default)]
pub(crate) struct WrkReport {
    pub(crate) requests: u64,
    pub(crate) requests_per_sec: f64,
    pub(crate) p99: Option<Duration>,
    /// Non-2xx/3xx responses plus socket errors.
    pub(crate) errors: u64,
    /// Socket errors alone (connect, read, write, timeout).
    pub(crate) socket_errors: u64,
    /// wrk's "Socket errors" line as printed, when there is one.
    pub(crate) socket_detail: Option<String>,
}

/// `cmd` prefixed with `taskset -c CPU` when pinning.
fn on_load_core(programs: &Programs, program: &str) -> Command {
    match &programs.pin {
        Some((load, _)) => {
            let mut c = Command::new("taskset");
            c.args(["-c", load.as_str(), program]);
            c
        }
        None => Command::new(program),
    }
}

/// `wrk -t1 -cCONNS -dSECSs --latency [-H HEADER]... URL`.
pub(crate) fn wrk(
    programs: &Programs,
    url: &str,
    conns: u32,
    secs: u32,
    headers: &[&str],
) -> Result<WrkReport, String> {
    let mut cmd = on_load_core(programs, "wrk");
    cmd.args([
        "-t1",
        &format!("-c{conns}"),
        &format!("-d{secs}s"),
        "--latency",
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_wrk(&text).ok_or_else(|| format!("cannot read wrk's output:\n{text}"))
}

/// Reads the request count, rate, p99 and errors from wrk's report.
fn parse_wrk(text: &str) -> Option<WrkReport> {
    let mut report = WrkReport::default();
    let mut seen_total = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["99%", value, ..] => report.p99 = parse_latency(value),
            [n, "requests", "in", ..] => {
                report.requests = n.parse().ok()?;
                seen_total = true;
            }
            ["Requests/sec:", rate, ..] => report.requests_per_sec = rate.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n, ..] => {
                report.errors += n.parse::<u64>().unwrap_or(0)
            }
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                let n = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
                report.errors += n;
                report.socket_errors += n;
                report.socket_detail = Some(rest.join(" "));
            }
            _ => {}
        }
    }
    seen_total.then_some(report)
}

/// "812.00us", "1.25ms", "2.00s" as a duration.
fn parse_latency(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let micros = match unit {
        "us" => value,
        "ms" => value * 1e3,
        "s" => value * 1e6,
        "m" => value * 60e6,
        _ => return None,
    };
    Some(Duration::from_nanos((micros * 1e3) as u64))
}

/// Downloads `url` to /dev/null with curl; bytes per second, after
/// checking status 200 and the full size.
pub(crate) fn download(programs: &Programs, url: &str, size: u64) -> Result<f64, String> {
    let out = on_load_core(programs, "curl")
        .args(["-sS", "-o", "/dev/null", "-w"])
        .arg("%{http_code} %{size_download} %{speed_download}")
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["200", got, speed] if got.parse::<u64>().ok() == Some(size) => speed
            .parse()
            .map_err(|_| format!("curl printed a bad speed: {text}")),
        _ => Err(format!(
            "download of {url} failed: {} {}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// The median of a few values (the middle one, or the mean of two).
pub(crate) fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 10s test @ http://127.0.0.1:1/1k
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10ms  300.00us   9.00ms   90.00%
    Req/Sec    58.00k     2.00k   60.00k    70.00%
  Latency Distribution
     50%    1.05ms
     75%    1.20ms
     90%    1.40ms
     99%  812.00us
  577000 requests in 10.00s, 700.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 2
Requests/sec:  57700.12
Transfer/sec:     70.00MB
";

    #[test]
    fn reads_wrk_report() {
        let r = parse_wrk(WRK).unwrap();
        assert_eq!(r.requests, 577_000);
        assert!((r.requests_per_sec - 57_700.12).abs() < 1e-6);
        assert_eq!(r.p99, Some(Duration::from_micros(812)));
        assert_eq!(r.errors, 6);
        assert_eq!(r.socket_errors, 4);
        assert_eq!(
            r.socket_detail.as_deref(),
            Some("connect 0, read 3, write 0, timeout 1")
        );
    }

    #[test]
    fn latency_units() {
        assert_eq!(parse_latency("1.25ms"), Some(Duration::from_micros(1250)));
        assert_eq!(parse_latency("2.00s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_latency("abc"), None);
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
