//! `[[vhost]]` and its `[vhost.tls]` and `[vhost.persistent]` tables.

use crate::pem::{check_pair, check_pem, PemKind};
use std::collections::HashMap;
use std::path::PathBuf;

use super::fields::{type_name, Section};
use super::glob::PathGlob;
use super::parse::{Checker, PERSISTENT_KEYS, TLS_KEYS, VHOST_KEYS};
use super::types::{
    MessageFormat, OriginUrl, PersistentConfig, SessionMode, TlsConfig, VhostConfig,
};
use super::values;

impl Checker<'_> {
    // ---- [[vhost]] ----------------------------------------------------

    pub(super) fn vhost(
        &mut self,
        sec: Section<'_>,
        hosts_seen: &mut HashMap<String, usize>,
    ) -> Option<VhostConfig> {
        self.unknown_keys(sec, VHOST_KEYS);
        let hosts = self.hosts(sec, hosts_seen);
        let origin = match sec.field("origin") {
            None => {
                self.error(
                    sec.at,
                    "this [[vhost]] has no origin; add origin = \"http://host:port\" (where plain requests go)",
                );
                None
            }
            Some(f) => self
                .string(&f, "a URL like \"http://127.0.0.1:8081\"")
                .and_then(|s| match values::upstream(s) {
                    Ok(url) => Some(url),
                    Err(e) => {
                        self.error(f.at, format!("origin: {e}"));
                        None
                    }
                }),
        };
        let tls = match sec.field("tls") {
            None => None,
            Some(f) => self
                .section(&f, "[vhost.tls]", "in [vhost.tls]")
                .and_then(|tls| self.tls(tls)),
        };
        let persistent = match sec.field("persistent") {
            None => None,
            Some(f) => match self.section(&f, "[vhost.persistent]", "in [vhost.persistent]") {
                Some(p) => self.persistent(p, origin.as_ref()),
                None => None,
            },
        };
        Some(VhostConfig {
            hosts: hosts?,
            origin: origin?,
            tls,
            persistent,
        })
    }

    pub(super) fn hosts(
        &mut self,
        sec: Section<'_>,
        seen: &mut HashMap<String, usize>,
    ) -> Option<Vec<String>> {
        let Some(f) = sec.field("hosts") else {
            self.error(
                sec.at,
                "this [[vhost]] has no hosts; add hosts = [\"example.test\"] (the names of its Host header, or \"*\" for the default vhost)",
            );
            return None;
        };
        let list = self.string_list(&f, "host names like [\"example.test\"]")?;
        if list.is_empty() {
            self.error(
                f.at,
                "hosts is empty; list at least one host name, or \"*\" for the default vhost",
            );
            return None;
        }
        let mut hosts = Vec::new();
        let mut own: Vec<String> = Vec::new();
        for item in list {
            let name = match values::host(item.value) {
                Ok(name) => name,
                Err(e) => {
                    self.error(item.at, format!("hosts: {e}"));
                    continue;
                }
            };
            if own.contains(&name) {
                self.error(
                    item.at,
                    format!("host \"{name}\" is listed twice in this vhost"),
                );
                continue;
            }
            own.push(name.clone());
            if let Some(&first) = seen.get(&name) {
                let line = self.line_of(first);
                let message = if name == "*" {
                    format!("\"*\" (the default vhost) is already used by another vhost (line {line}); only one vhost may be the default")
                } else {
                    format!("host \"{name}\" is already used by another vhost (line {line})")
                };
                self.error(item.at, message);
                continue;
            }
            seen.insert(name.clone(), item.at);
            hosts.push(name);
        }
        Some(hosts)
    }

    pub(super) fn tls(&mut self, sec: Section<'_>) -> Option<TlsConfig> {
        self.unknown_keys(sec, TLS_KEYS);
        let cert = self.readable_file(sec, "cert", "certificate");
        let key = self.readable_file(sec, "key", "private key");
        let redirect_http = match sec.field("redirect_http") {
            None => false,
            Some(f) => match f.item.as_bool() {
                Some(b) => b,
                None => {
                    self.error(
                        f.at,
                        format!(
                            "redirect_http must be true or false, not {}",
                            type_name(f.item)
                        ),
                    );
                    false
                }
            },
        };
        let tls = TlsConfig {
            cert: cert?,
            key: key?,
            redirect_http,
        };
        // A key that parses but belongs to another certificate would fail
        // every handshake on the listener: refused like a bad file.
        if let Err(why) = check_pair(&tls.cert, &tls.key) {
            let at = sec.field("key").map_or(sec.at, |f| f.at);
            self.error(at, why);
            return None;
        }
        Some(tls)
    }

    /// A file that must exist and be readable; its content is the TLS
    /// layer's business.
    pub(super) fn readable_file(
        &mut self,
        sec: Section<'_>,
        key: &str,
        what: &str,
    ) -> Option<PathBuf> {
        let Some(f) = sec.field(key) else {
            self.error(
                sec.at,
                format!("[vhost.tls] has no {key}; add {key} = \"path/to/file\" (the {what} file in PEM)"),
            );
            return None;
        };
        let written = self.string(&f, "a file path")?;
        let path = self.base_dir.join(written);
        let shown = if path.as_os_str() == written {
            format!("\"{written}\"")
        } else {
            format!("\"{written}\" (looked for at {})", path.display())
        };
        let kind = if key == "cert" {
            PemKind::Certificate
        } else {
            PemKind::PrivateKey
        };
        let problem = match std::fs::metadata(&path) {
            Err(e) => Some(e.to_string()),
            Ok(m) if m.is_dir() => Some("it is a directory".to_string()),
            Ok(_) => std::fs::File::open(&path)
                .err()
                .map(|e| e.to_string())
                .or_else(|| check_pem(&path, kind).err()),
        };
        match problem {
            Some(why) => {
                self.error(f.at, format!("cannot read the {what} file {shown}: {why}"));
                None
            }
            None => Some(path),
        }
    }

    // ---- [vhost.persistent] -------------------------------------------

    pub(super) fn persistent(
        &mut self,
        sec: Section<'_>,
        origin: Option<&OriginUrl>,
    ) -> Option<PersistentConfig> {
        self.unknown_keys(sec, PERSISTENT_KEYS);
        let enabled = match sec.field("enabled") {
            None => true,
            Some(f) => match f.item.as_bool() {
                Some(b) => b,
                None => {
                    self.error(
                        f.at,
                        format!("enabled must be true or false, not {}", type_name(f.item)),
                    );
                    true
                }
            },
        };
        let placeholder = OriginUrl {
            as_written: String::new(),
            authority: String::new(),
            host: String::new(),
            port: 80,
        };
        let d = PersistentConfig::with_defaults(origin.unwrap_or(&placeholder));
        let mut out = d.clone();

        if let Some(f) = sec.field("paths") {
            if let Some(list) = self.string_list(&f, "globs like [\"*.pphp\"]") {
                if list.is_empty() {
                    self.error(
                        f.at,
                        "paths is empty, so no request would be persistent; list globs such as \"*.pphp\", or set enabled = false",
                    );
                }
                out.paths.clear();
                out.globs.clear();
                for item in list {
                    match PathGlob::new(item.value) {
                        Ok(glob) => {
                            out.paths.push(item.value.to_string());
                            out.globs.push(glob);
                        }
                        Err(e) => self.error(
                            item.at,
                            format!("paths: \"{}\" is not a valid glob: {e}", item.value),
                        ),
                    }
                }
            }
        }
        if let Some(f) = sec.field("workers") {
            if let Some(list) = self.string_list(&f, "URLs like [\"http://127.0.0.1:9001\"]") {
                if list.is_empty() {
                    self.error(
                        f.at,
                        "workers is empty; list worker URLs, or remove the key to use the origin",
                    );
                }
                out.workers.clear();
                for item in list {
                    match values::upstream(item.value) {
                        Ok(url) if out.workers.iter().any(|w| same_upstream(w, &url)) => self
                            .error(
                                item.at,
                                format!("workers: \"{}\" is listed twice", item.value),
                            ),
                        Ok(url) => out.workers.push(url),
                        Err(e) => self.error(item.at, format!("workers: {e}")),
                    }
                }
            }
        }
        if let Some(f) = sec.field("mode") {
            if let Some(mode) = self.string(&f, "\"stream\" or \"message\"") {
                match mode {
                    "stream" => out.mode = SessionMode::Stream,
                    "message" => out.mode = SessionMode::Message,
                    other => self.error(
                        f.at,
                        format!("mode: \"{other}\" is not a mode; write \"stream\" or \"message\""),
                    ),
                }
            }
        }
        if let Some(f) = sec.field("accept") {
            if let Some(list) =
                self.string_list(&f, "media types like [\"application/x-persistent\"]")
            {
                if list.is_empty() {
                    self.error(
                        f.at,
                        "accept is empty, so no client could open a session; list a media type such as \"application/x-persistent\"",
                    );
                }
                out.accept.clear();
                for item in list {
                    match values::media_type(item.value) {
                        Ok(t) => out.accept.push(t),
                        Err(e) => self.error(item.at, format!("accept: {e}")),
                    }
                }
            }
        }
        out.resume_grace = self.duration(sec, "resume_grace", d.resume_grace, true);
        out.replay_window = self.size(sec, "replay_window", d.replay_window, 1);
        out.detached_backlog = self.size(sec, "detached_backlog", d.detached_backlog, 1);
        out.max_line = self.size(sec, "max_line", d.max_line, 2);
        out.max_initial_body = self.size(sec, "max_initial_body", d.max_initial_body, 0);
        out.max_sessions = self.count(sec, "max_sessions", d.max_sessions, u64::MAX);
        out.max_sessions_per_ip =
            self.count(sec, "max_sessions_per_ip", d.max_sessions_per_ip, u64::MAX);
        out.max_sessions_per_worker = self.count(
            sec,
            "max_sessions_per_worker",
            d.max_sessions_per_worker,
            u64::MAX,
        );
        out.unused_grace = self.duration(sec, "unused_grace", d.unused_grace, true);
        out.worker_retry = self.duration(sec, "worker_retry", d.worker_retry, true);
        if let Some(f) = sec.field("page_sessions") {
            match f.item.as_bool() {
                Some(b) => out.page_sessions = b,
                None => self.error(
                    f.at,
                    format!(
                        "page_sessions must be true or false, not {}",
                        type_name(f.item)
                    ),
                ),
            }
        }
        if let Some(f) = sec.field("message_format") {
            if let Some(format) = self.string(&f, "\"lines\" or \"form\"") {
                match format {
                    "lines" => out.message_format = MessageFormat::Lines,
                    "form" if out.mode == SessionMode::Message => {
                        out.message_format = MessageFormat::Form
                    }
                    "form" => self.error(
                        f.at,
                        "message_format = \"form\" needs mode = \"message\" (a stream-mode worker reads lines)",
                    ),
                    other => self.error(
                        f.at,
                        format!("message_format: \"{other}\" is not a format; write \"lines\" or \"form\""),
                    ),
                }
            }
        }
        out.max_lines_per_second = self.count(
            sec,
            "max_lines_per_second",
            d.max_lines_per_second as usize,
            u32::MAX.into(),
        ) as u32;
        if let Some(f) = sec.field("allowed_origins") {
            if let Some(list) = self.string_list(&f, "origins like [\"https://app.example.test\"]")
            {
                for item in list {
                    match values::web_origin(item.value) {
                        Ok(o) => out.allowed_origins.push(o),
                        Err(e) => self.error(item.at, format!("allowed_origins: {e}")),
                    }
                }
            }
        }
        (enabled && origin.is_some()).then_some(out)
    }
}

/// Two upstreams are the same when host and port are.
fn same_upstream(a: &OriginUrl, b: &OriginUrl) -> bool {
    a.host == b.host && a.port == b.port
}
