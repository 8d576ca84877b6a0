//! The Grafana dashboard (deploy/grafana/tether.json) and the Prometheus
//! alerts (deploy/prometheus/alerts.yml) cannot drift from the code: after
//! scripted traffic through a real tether (nginx origin, `line_worker`,
//! a dead origin), every metric name their queries use is in `/metrics`,
//! every label they select or group by is on that metric's samples, and
//! every exact label value they match exists. `promtool check rules` (from
//! Debian's `prometheus`, installed by scripts/install-test-deps.sh) parses
//! the alerts, and the dashboard's queries as recording rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use tether_tests::raw_http::{get, request_bytes};
use tether_tests::session::LineWorker;
use tether_tests::session::{delete, open, resume_ok, session_vhost, HOST, WAIT};
use tether_tests::{free_port, metric, temp_dir, wait_for, Nginx, RawConn, Tether};

const WORKER: &str = env!("CARGO_BIN_EXE_line_worker");
const DEAD_HOST: &str = "dead.test";

/// Labels Prometheus adds to every scraped series: never in `/metrics`.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ------------------------------------------------------------ the sources

/// The values of every JSON string member named `key` (hand-read: the
/// members of interest are plain strings).
fn json_strings(json: &str, key: &str) -> Vec<String> {
    let pattern = format!("\"{key}\":");
    let mut out = Vec::new();
    let mut rest = json;
    while let Some(at) = rest.find(&pattern) {
        rest = rest[at + pattern.len()..].trim_start();
        let Some(body) = rest.strip_prefix('"') else {
            continue;
        };
        let mut value = String::new();
        let mut chars = body.char_indices();
        let mut end = body.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = i + 1;
                    break;
                }
                '\\' => match chars.next().map(|(_, e)| e) {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some('u') => panic!("{key}: \\u escapes are not expected in queries"),
                    Some(e) => value.push(e),
                    None => break,
                },
                c => value.push(c),
            }
        }
        out.push(value);
        rest = &body[end..];
    }
    out
}

/// The dashboard's panel queries and variable queries, Grafana variables
/// replaced by what Prometheus would see.
fn dashboard_queries() -> Vec<String> {
    let json = read("deploy/grafana/tether.json");
    let mut queries = json_strings(&json, "expr");
    let panels = queries.len();
    assert!(panels >= 30, "only {panels} panel queries found");
    for q in json_strings(&json, "query") {
        if q.starts_with("label_values(") {
            queries.push(q);
        }
    }
    assert!(queries.len() >= panels + 2, "no variable queries found");
    queries
        .into_iter()
        .map(|q| {
            q.replace("$__rate_interval", "5m")
                .replace("$__range", "1h")
                .replace("$vhost", ".*")
                .replace("$job", ".+")
        })
        .collect()
}

fn alert_queries() -> Vec<String> {
    let yml = read("deploy/prometheus/alerts.yml");
    let exprs: Vec<String> = yml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| {
            let e = e.trim();
            assert!(
                !e.starts_with('|') && !e.starts_with('>') && !e.is_empty(),
                "alerts.yml: keep each expr on one line: {e}"
            );
            e.to_owned()
        })
        .collect();
    let alerts = yml.matches("- alert:").count();
    assert_eq!(exprs.len(), alerts, "one expr per alert");
    assert!(alerts >= 6, "{alerts} alerts");
    exprs
}

// -------------------------------------------------------- a PromQL reader

/// `label`, `op` (`=`, `!=`, `=~`, `!~`), `value`.
type Matcher = (String, String, String);

/// What a query uses: metric selectors with their matchers, and labels
/// grouped by.
#[derive(Debug, Default)]
struct Uses {
    selectors: Vec<(String, Vec<Matcher>)>,
    grouping: Vec<String>,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Reads the metric names (`tether_*`, `process_*`), their `{...}`
/// matchers, `by (...)`/`without (...)` labels, and `label_values(m, l)`.
fn parse_query(q: &str) -> Uses {
    let chars: Vec<char> = q.chars().collect();
    let mut uses = Uses::default();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    let ident = |i: &mut usize| -> String {
        let start = *i;
        while *i < chars.len() && is_ident(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect()
    };
    let string = |i: &mut usize| -> String {
        assert_eq!(chars[*i], '"', "{q}: a string at {i}");
        *i += 1;
        let mut s = String::new();
        while chars[*i] != '"' {
            if chars[*i] == '\\' {
                *i += 1;
            }
            s.push(chars[*i]);
            *i += 1;
        }
        *i += 1;
        s
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            string(&mut i);
            continue;
        }
        if c == '[' {
            while chars[i] != ']' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if !is_ident_start(c) || (i > 0 && is_ident(chars[i - 1])) {
            i += 1;
            continue;
        }
        let word = ident(&mut i);
        if word.starts_with("tether_") || word.starts_with("process_") {
            let mut matchers = Vec::new();
            skip_ws(&mut i);
            if i < chars.len() && chars[i] == '{' {
                i += 1;
                loop {
                    skip_ws(&mut i);
                    if chars[i] == '}' {
                        i += 1;
                        break;
                    }
                    let label = ident(&mut i);
                    skip_ws(&mut i);
                    let mut op = String::new();
                    while matches!(chars[i], '=' | '!' | '~') {
                        op.push(chars[i]);
                        i += 1;
                    }
                    skip_ws(&mut i);
                    let value = string(&mut i);
                    assert!(!label.is_empty() && !op.is_empty(), "{q}: matcher at {i}");
                    matchers.push((label, op, value));
                    skip_ws(&mut i);
                    if chars[i] == ',' {
                        i += 1;
                    }
                }
            }
            uses.selectors.push((word, matchers));
        } else if word == "by" || word == "without" {
            skip_ws(&mut i);
            assert_eq!(chars[i], '(', "{q}: {word} (");
            i += 1;
            loop {
                skip_ws(&mut i);
                if chars[i] == ')' {
                    i += 1;
                    break;
                }
                uses.grouping.push(ident(&mut i));
                skip_ws(&mut i);
                if chars[i] == ',' {
                    i += 1;
                }
            }
        } else if word == "label_values" {
            // label_values(metric{...}, label): the label is the last word.
            let close = chars[i..].iter().rposition(|&c| c == ')').unwrap() + i;
            let comma = chars[i..close].iter().rposition(|&c| c == ',').unwrap() + i;
            let label: String = chars[comma + 1..close].iter().collect();
            uses.grouping.push(label.trim().to_owned());
        }
    }
    uses
}

#[test]
fn the_query_reader_reads_what_it_must() {
    let u = parse_query(
        "sum by (vhost, le) (rate(tether_x_bucket{job=~\".+\",reason=\"a\\\"b\"}[5m])) / on() process_y",
    );
    assert_eq!(u.selectors.len(), 2, "{u:?}");
    assert_eq!(u.selectors[0].0, "tether_x_bucket");
    assert_eq!(
        u.selectors[0].1,
        [
            ("job".into(), "=~".into(), ".+".into()),
            ("reason".into(), "=".into(), "a\"b".into())
        ]
    );
    assert_eq!(u.selectors[1], ("process_y".into(), vec![]));
    assert_eq!(u.grouping, ["vhost", "le"]);
    let u = parse_query("label_values(tether_requests_total{job=~\".+\"}, vhost)");
    assert_eq!(u.selectors[0].0, "tether_requests_total");
    assert_eq!(u.grouping, ["vhost"]);
}

// ------------------------------------------------------------- /metrics

type Samples = BTreeMap<String, Vec<BTreeMap<String, String>>>;

fn scrape(admin: SocketAddr) -> String {
    let mut conn = RawConn::connect(admin);
    conn.send(&request_bytes("GET", "/metrics", "admin", &[], b""));
    let r = conn.read_final_response_to("GET").expect("/metrics");
    assert_eq!(r.status, 200);
    r.body_text()
}

/// Sample name -> the label sets of its samples.
fn parse_exposition(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, _value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("}")),
            None => (series, ""),
        };
        let mut set = BTreeMap::new();
        let chars: Vec<char> = labels.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let eq = chars[i..].iter().position(|&c| c == '=').unwrap() + i;
            let key: String = chars[i..eq].iter().collect();
            i = eq + 2;
            let mut value = String::new();
            while chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                value.push(chars[i]);
                i += 1;
            }
            i += 1;
            if i < chars.len() && chars[i] == ',' {
                i += 1;
            }
            set.insert(key, value);
        }
        out.entry(name.to_owned()).or_default().push(set);
    }
    out
}

/// Every problem of `query` against `samples`, as sentences.
fn check_query(query: &str, samples: &Samples) -> Vec<String> {
    let uses = parse_query(query);
    let mut problems = Vec::new();
    if uses.selectors.is_empty() {
        problems.push(format!("{query}: names no tether_* or process_* metric"));
    }
    let has_label = |metric: &str, label: &str| {
        samples
            .get(metric)
            .is_some_and(|sets| sets.iter().any(|s| s.contains_key(label)))
    };
    for (metric, matchers) in &uses.selectors {
        let Some(sets) = samples.get(metric) else {
            problems.push(format!("{query}: no metric {metric}"));
            continue;
        };
        for (label, op, value) in matchers {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            if !has_label(metric, label) {
                problems.push(format!("{query}: {metric} has no label {label}"));
            } else if op == "=" && !sets.iter().any(|s| s.get(label) == Some(value)) {
                problems.push(format!("{query}: {metric} has no {label}=\"{value}\""));
            }
        }
        for label in &uses.grouping {
            if !TARGET_LABELS.contains(&label.as_str()) && !has_label(metric, label) {
                problems.push(format!(
                    "{query}: groups by {label}, not a label of {metric}"
                ));
            }
        }
    }
    problems
}

/// `promtool check rules` on `file`; panics when promtool is missing.
fn promtool_check_rules(file: &std::path::Path) {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool: {e}: scripts/install-test-deps.sh (make deps) installs prometheus")
        });
    assert!(
        out.status.success(),
        "promtool check rules {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_alerts_and_the_dashboard_queries() {
    promtool_check_rules(&repo_file("deploy/prometheus/alerts.yml"));
    // The dashboard's panel queries as recording rules: promtool parses
    // each one as PromQL.
    let dir = temp_dir();
    let file = dir.path().join("dashboard-rules.yml");
    let mut yml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in dashboard_queries()
        .iter()
        .filter(|q| !q.starts_with("label_values("))
        .enumerate()
    {
        let quoted = q.replace('\\', "\\\\").replace('"', "\\\"");
        yml.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: \"{quoted}\"\n"
        ));
    }
    std::fs::write(&file, yml).unwrap();
    promtool_check_rules(&file);
}

#[test]
fn every_metric_and_label_of_the_dashboard_and_alerts_is_in_metrics() {
    let dashboard = dashboard_queries();
    let alerts = alert_queries();

    let nginx = Nginx::standard();
    let worker = LineWorker::start(WORKER, "worker");
    let dead_origin = format!("http://127.0.0.1:{}", free_port());
    let tether = Tether::start(&Tether::config(
        "",
        &[
            session_vhost(
                HOST,
                &format!("http://{}", nginx.addr()),
                &[worker.url()],
                "",
            ),
            format!("[[vhost]]\nhosts = [\"{DEAD_HOST}\"]\norigin = \"{dead_origin}\"\n"),
        ],
    ));
    let addr = tether.addr();
    let admin = tether.admin_addr().expect("admin listener");

    // Scripted traffic: a plain answer, an upstream error, a session with
    // a line each way, a reset and resume, and its end.
    assert_eq!(get(addr, HOST, "/echo").status, 200);
    assert_eq!(get(addr, DEAD_HOST, "/").status, 502);
    let mut o = open(addr, "/echo.pphp");
    let sid = o.sid.clone();
    o.chan.send(b"a\n");
    assert_eq!(o.chan.line(), "1 a\n");
    o.chan.reset();
    let r = resume_ok(addr, "/echo.pphp", &sid, 1);
    assert_eq!(delete(addr, HOST, "/echo.pphp", &sid).status, 204);
    drop(r);
    let ended = format!("tether_sessions_ended_total{{vhost=\"{HOST}\",reason=\"client_end\"}}");
    wait_for("the session's end counted", WAIT, || {
        (metric(admin, &ended)? >= 1.0).then_some(())
    });

    let text = scrape(admin);
    let samples = parse_exposition(&text);
    // The traffic is in the figures the dashboard shows.
    let value =
        |series: &str| metric(admin, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert!(
        value(&format!(
            "tether_requests_total{{vhost=\"{HOST}\",class=\"2xx\"}}"
        )) >= 1.0
    );
    assert_eq!(
        value(&format!(
            "tether_upstream_errors_by_upstream_total{{vhost=\"{DEAD_HOST}\",upstream=\"{dead_origin}\",kind=\"connect\"}}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "tether_resumes_total{{vhost=\"{HOST}\",result=\"ok\"}}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "tether_resume_duration_seconds_count{{vhost=\"{HOST}\"}}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "tether_session_duration_seconds_count{{vhost=\"{HOST}\"}}"
        )),
        1.0
    );

    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for q in dashboard.iter().chain(&alerts) {
        problems.extend(check_query(q, &samples));
        names.extend(parse_query(q).selectors.into_iter().map(|(m, _)| m));
    }
    assert!(
        problems.is_empty(),
        "queries that do not match /metrics:\n{}\n\n/metrics:\n{text}",
        problems.join("\n")
    );
    // The dashboard covers the SPEC 9 families and the operator ones.
    for family in [
        "tether_requests_total",
        "tether_request_duration_seconds_bucket",
        "tether_upstream_errors_total",
        "tether_upstream_errors_by_upstream_total",
        "tether_connections_active",
        "tether_sessions",
        "tether_sessions_opened_total",
        "tether_sessions_ended_total",
        "tether_resumes_total",
        "tether_takeovers_total",
        "tether_lines_total",
        "tether_bytes_total",
        "tether_replay_bytes",
        "tether_backlog_bytes",
        "tether_affinity_entries",
        "tether_worker_sessions",
        "tether_worker_up",
        "tether_limits_hit_total",
        "tether_config_reloads_total",
        "tether_upgrades_total",
        "tether_handover_sessions_total",
        "tether_session_duration_seconds_bucket",
        "tether_resume_duration_seconds_bucket",
        "tether_message_request_duration_seconds_bucket",
        "tether_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(names.contains(family), "no query uses {family}");
    }
}

#[test]
fn a_query_on_a_name_or_label_tether_lacks_is_reported() {
    let samples = parse_exposition(
        "# TYPE tether_sessions gauge\ntether_sessions{vhost=\"a\",state=\"attached\"} 1\n",
    );
    assert!(check_query("sum by (state) (tether_sessions{vhost=~\".*\"})", &samples).is_empty());
    for bad in [
        "tether_session{vhost=~\".*\"}",
        "sum by (worker) (tether_sessions)",
        "tether_sessions{state=\"gone\"}",
        "tether_sessions{host=~\".*\"}",
        "rate(foo[5m])",
    ] {
        assert!(!check_query(bad, &samples).is_empty(), "{bad} passed");
    }
}
