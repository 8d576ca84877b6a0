//! Reading an origin's access log.
//!
//! Both [`crate::Nginx`] and [`crate::Apache`] write one tab-separated line
//! per request: port, method, URI (with query), status, request bytes,
//! response body bytes, X-Forwarded-For.

use std::path::PathBuf;
use std::time::Duration;

/// One access-log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub port: u16,
    pub method: String,
    pub uri: String,
    pub status: u16,
    pub request_bytes: u64,
    pub body_bytes: u64,
    pub x_forwarded_for: String,
    pub raw: String,
}

/// An access log file.
#[derive(Clone, Debug)]
pub struct AccessLog {
    path: PathBuf,
}

impl AccessLog {
    pub fn new(path: PathBuf) -> AccessLog {
        AccessLog { path }
    }

    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn count(&self) -> usize {
        self.lines().len()
    }

    pub fn entries(&self) -> Vec<LogEntry> {
        self.lines().iter().filter_map(|l| parse(l)).collect()
    }

    /// Waits until an entry for `uri` appears (origins log after they
    /// answer, so a response read by the client may precede its line).
    pub fn wait_for_uri(&self, uri: &str, timeout: Duration) -> LogEntry {
        crate::wait_for(
            &format!("{uri} in {}", self.path.display()),
            timeout,
            || self.entries().into_iter().find(|e| e.uri == uri),
        )
    }
}

fn parse(line: &str) -> Option<LogEntry> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() < 7 {
        return None;
    }
    Some(LogEntry {
        port: f[0].parse().ok()?,
        method: f[1].to_string(),
        uri: f[2].to_string(),
        status: f[3].parse().ok()?,
        request_bytes: f[4].parse().unwrap_or(0),
        body_bytes: f[5].parse().unwrap_or(0),
        x_forwarded_for: f[6].to_string(),
        raw: line.to_string(),
    })
}
