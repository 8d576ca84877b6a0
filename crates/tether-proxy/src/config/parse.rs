//! TOML text -> validated [`Config`], reporting every error at once.
//!
//! The file is parsed by `toml_edit`, which keeps byte spans, and then
//! walked by a pass of our own: each problem is recorded with the position
//! of the key or value at fault and the walk goes on, so that one run of
//! `tether check` shows them all (SPEC 1). After a TOML syntax error the
//! document does not exist, so that single error is reported.
//!
//! Relative certificate paths are resolved against the directory of the
//! configuration file.

use std::collections::HashMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::Path;

use toml_edit::{Document, Item, Value};

use super::error::{line_column, ConfigError, ConfigErrors};
use super::fields::{type_name, Field, Section};
use super::types::{Config, ServerConfig};
use super::values;

pub(super) const TOP_KEYS: &[&str] = &["server", "vhost", "cluster"];
pub(super) const SERVER_KEYS: &[&str] = &[
    "listen",
    "tls_listen",
    "admin_listen",
    "admin_token",
    "header_read_timeout",
    "idle_timeout",
    "origin_connect_timeout",
    "origin_response_timeout",
    "max_header_bytes",
    "max_connections",
    "max_connections_per_ip",
    "drain_timeout",
    "max_upstream_connections",
];
pub(super) const VHOST_KEYS: &[&str] = &["hosts", "origin", "tls", "persistent"];
pub(super) const TLS_KEYS: &[&str] = &["cert", "key", "redirect_http"];
pub(super) const PERSISTENT_KEYS: &[&str] = &[
    "enabled",
    "paths",
    "workers",
    "mode",
    "accept",
    "resume_grace",
    "replay_window",
    "detached_backlog",
    "max_line",
    "max_initial_body",
    "max_sessions",
    "max_sessions_per_ip",
    "max_lines_per_second",
    "allowed_origins",
    "max_sessions_per_worker",
    "unused_grace",
    "worker_retry",
    "page_sessions",
    "message_format",
];

/// The largest configuration file read: far above any real one.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// Parses and validates `text`; `file_name` is used in error messages and
/// its directory anchors relative certificate paths.
pub fn parse(file_name: &str, text: &str) -> Result<Config, ConfigErrors> {
    let base = Path::new(file_name).parent().unwrap_or(Path::new(""));
    parse_in(file_name, text, base)
}

/// Reads and validates the file at `path`. An unreadable file, or one that
/// is not UTF-8, is reported as a single error.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let cannot_read = |message: String| ConfigError {
        file: name.clone(),
        line: 1,
        column: 1,
        message,
    };
    // Read one byte past the cap, so that `/dev/zero` or a log file given
    // by mistake is refused instead of filling memory.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| cannot_read(format!("cannot read the configuration file: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(cannot_read(format!(
            "the configuration file is larger than {} MiB; is it the right file?",
            MAX_FILE_BYTES >> 20
        ))
        .into());
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
        ConfigError::at_offset(
            &name,
            &prefix,
            valid,
            "the file is not valid UTF-8 text; save it as UTF-8".to_string(),
        )
    })?;
    parse_in(&name, &text, path.parent().unwrap_or(Path::new("")))
}

fn parse_in(file: &str, text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let doc = Document::parse(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let message = format!("TOML syntax error: {}", e.message().trim());
        ConfigError::at_offset(file, text, offset, message)
    })?;
    let mut checker = Checker {
        text,
        base_dir,
        errors: Vec::new(),
    };
    let config = checker.document(doc.as_table());
    if checker.errors.is_empty() {
        if let Some(config) = config {
            return Ok(config);
        }
    }
    // File order; errors at the same place keep the order they were found.
    checker.errors.sort_by_key(|(offset, _)| *offset);
    Err(ConfigErrors {
        errors: checker
            .errors
            .into_iter()
            .map(|(offset, message)| ConfigError::at_offset(file, text, offset, message))
            .collect(),
    })
}

/// A listener address and where it was written (None: a default).
pub(super) struct Listener {
    pub(super) addr: SocketAddr,
    pub(super) key: &'static str,
    pub(super) at: Option<usize>,
}

pub(super) struct Checker<'t> {
    pub(super) text: &'t str,
    pub(super) base_dir: &'t Path,
    pub(super) errors: Vec<(usize, String)>,
}

impl<'t> Checker<'t> {
    pub(super) fn error(&mut self, at: usize, message: impl Into<String>) {
        self.errors.push((at, message.into()));
    }

    pub(super) fn line_of(&self, at: usize) -> usize {
        line_column(self.text, at).0
    }

    // ---- the document -------------------------------------------------

    fn document(&mut self, root: &toml_edit::Table) -> Option<Config> {
        let top = Section {
            table: root,
            place: "at the top level of the file",
            at: 0,
        };
        self.unknown_keys(top, TOP_KEYS);
        let mut listeners = Vec::new();
        let server_sec = top
            .field("server")
            .and_then(|f| self.section(&f, "[server]", "in [server]"));
        let server = match server_sec {
            Some(sec) => self.server(sec, &mut listeners),
            None => ServerConfig::default(),
        };
        let cluster_sec = top
            .field("cluster")
            .and_then(|f| self.section(&f, "[cluster]", "in [cluster]"));
        let mut cluster_complete = true;
        let cluster = match cluster_sec {
            Some(sec) => {
                let c = self.cluster(sec, &mut listeners);
                cluster_complete = c.is_some();
                c
            }
            None => None,
        };
        self.listener_clashes(&listeners);

        let vhost_tables = self.vhost_tables(top);
        let mut vhosts = Vec::new();
        let mut complete = true;
        let mut hosts_seen: HashMap<String, usize> = HashMap::new();
        let mut first_tls = None;
        for sec in vhost_tables {
            if first_tls.is_none() {
                first_tls = sec.field("tls").map(|f| f.key_at);
            }
            match self.vhost(sec, &mut hosts_seen) {
                Some(vhost) => vhosts.push(vhost),
                None => complete = false,
            }
        }
        (complete && cluster_complete).then_some(Config {
            server,
            vhosts,
            cluster,
        })
    }

    /// The `[[vhost]]` tables (or an array of inline tables).
    fn vhost_tables<'a>(&mut self, top: Section<'a>) -> Vec<Section<'a>> {
        let Some(f) = top.field("vhost") else {
            self.error(
                self.text.len(),
                "the file has no [[vhost]]; add at least one, with hosts = [\"...\"] and origin = \"http://...\"",
            );
            return Vec::new();
        };
        let mut tables = Vec::new();
        match f.item {
            Item::ArrayOfTables(array) => {
                for table in array.iter() {
                    let at = table.span().map_or(f.key_at, |s| s.start);
                    tables.push(Section {
                        table,
                        place: "in [[vhost]]",
                        at,
                    });
                }
            }
            Item::Value(Value::Array(array))
                if array.iter().all(|v| v.as_inline_table().is_some()) && !array.is_empty() =>
            {
                for value in array.iter() {
                    if let Some(table) = value.as_inline_table() {
                        let at = value.span().map_or(f.at, |s| s.start);
                        tables.push(Section {
                            table,
                            place: "in [[vhost]]",
                            at,
                        });
                    }
                }
            }
            Item::Table(_) => self.error(
                f.key_at,
                "write [[vhost]] with double brackets, once for each virtual host (a single [vhost] table is not allowed)",
            ),
            other => self.error(
                f.at,
                format!(
                    "vhost must be written as [[vhost]] tables, not as {}",
                    type_name(other)
                ),
            ),
        }
        tables
    }

    /// The table under `f`, called `name` in messages (`[server]`).
    pub(super) fn section<'a>(
        &mut self,
        f: &Field<'a>,
        name: &'static str,
        place: &'static str,
    ) -> Option<Section<'a>> {
        match f.item.as_table_like() {
            Some(table) => Some(Section {
                table,
                place,
                at: f.item.span().map_or(f.key_at, |s| s.start),
            }),
            None => {
                self.error(
                    f.at,
                    format!(
                        "{} must be a table, written {name} on its own line, not {}",
                        f.key,
                        type_name(f.item)
                    ),
                );
                None
            }
        }
    }

    pub(super) fn unknown_keys(&mut self, sec: Section<'_>, allowed: &[&str]) {
        for (key, item) in sec.table.iter() {
            if allowed.contains(&key) {
                continue;
            }
            let at = sec
                .table
                .get_key_value(key)
                .and_then(|(k, _)| k.span())
                .map_or(sec.at, |s| s.start);
            let is_table =
                matches!(item, Item::Table(t) if !t.is_dotted()) || item.is_array_of_tables();
            let what = if is_table { "table" } else { "key" };
            let mut message = format!("unknown {what} \"{key}\" {}", sec.place);
            if let Some(hint) = hint(key, allowed) {
                message.push_str(&format!(" ({hint})"));
            }
            message.push_str("; expected one of: ");
            message.push_str(&allowed.join(", "));
            self.error(at, message);
        }
    }

    // ---- [server] -------------------------------------------------------

    fn server(&mut self, sec: Section<'_>, listeners: &mut Vec<Listener>) -> ServerConfig {
        self.unknown_keys(sec, SERVER_KEYS);
        let d = ServerConfig::default();
        let mut out = ServerConfig::default();
        for key in ["listen", "tls_listen"] {
            let addrs: Vec<(SocketAddr, Option<usize>)> = match sec.field(key) {
                Some(f) => self
                    .socket_list(&f)
                    .into_iter()
                    .map(|a| (a.value, Some(a.at)))
                    .collect(),
                None if key == "listen" => d.listen.iter().map(|a| (*a, None)).collect(),
                None => Vec::new(),
            };
            listeners.extend(addrs.iter().map(|&(addr, at)| Listener { addr, key, at }));
            let addrs = addrs.into_iter().map(|(addr, _)| addr).collect();
            if key == "listen" {
                out.listen = addrs;
            } else {
                out.tls_listen = addrs;
            }
        }
        let written_empty = |key: &str| {
            sec.field(key).map_or(key == "tls_listen", |f| {
                f.item.as_array().is_some_and(|a| a.is_empty())
            })
        };
        if written_empty("listen") && written_empty("tls_listen") {
            let at = sec.field("listen").map_or(sec.at, |f| f.at);
            self.error(
                at,
                "listen and tls_listen are both empty, so tether would accept no connection; add an address such as \"127.0.0.1:8080\"",
            );
        }
        match sec.field("admin_listen") {
            Some(f) => {
                if let Some(s) = self.string(&f, "an address like \"127.0.0.1:9900\"") {
                    match values::socket_addr(s) {
                        Ok(addr) => {
                            out.admin_listen = addr;
                            listeners.push(Listener {
                                addr,
                                key: "admin_listen",
                                at: Some(f.at),
                            });
                        }
                        Err(e) => self.error(f.at, format!("admin_listen: {e}")),
                    }
                }
            }
            None => listeners.push(Listener {
                addr: d.admin_listen,
                key: "admin_listen",
                at: None,
            }),
        }
        if let Some(f) = sec.field("admin_token") {
            if let Some(token) = self.string(&f, "a string") {
                if token.trim().is_empty() {
                    self.error(
                        f.at,
                        "admin_token is empty; remove the key to turn the push API off, or set a long random token",
                    );
                } else {
                    out.admin_token = Some(token.to_string());
                }
            }
        }
        out.header_read_timeout =
            self.duration(sec, "header_read_timeout", d.header_read_timeout, false);
        out.idle_timeout = self.duration(sec, "idle_timeout", d.idle_timeout, false);
        out.origin_connect_timeout = self.duration(
            sec,
            "origin_connect_timeout",
            d.origin_connect_timeout,
            false,
        );
        out.origin_response_timeout = self.duration(
            sec,
            "origin_response_timeout",
            d.origin_response_timeout,
            false,
        );
        out.max_header_bytes = self.size(sec, "max_header_bytes", d.max_header_bytes, 1);
        out.max_connections = self.count(sec, "max_connections", d.max_connections, u64::MAX);
        out.max_connections_per_ip = self.count(
            sec,
            "max_connections_per_ip",
            d.max_connections_per_ip,
            u64::MAX,
        );
        out.drain_timeout = self.duration(sec, "drain_timeout", d.drain_timeout, true);
        out.max_upstream_connections = self.count(
            sec,
            "max_upstream_connections",
            d.max_upstream_connections,
            u64::MAX,
        );
        out
    }

    /// Reports a listener whose address another one already takes, at the
    /// one written later (or at the written one, if the other is a default).
    fn listener_clashes(&mut self, listeners: &[Listener]) {
        for (j, later) in listeners.iter().enumerate() {
            let Some(earlier) = listeners[..j]
                .iter()
                .find(|e| addresses_clash(e.addr, later.addr))
            else {
                continue;
            };
            let (here, other) = if later.at.is_some() {
                (later, earlier)
            } else {
                (earlier, later)
            };
            let Some(at) = here.at else { continue };
            let place = match other.at {
                Some(other_at) => format!("{} (line {})", other.key, self.line_of(other_at)),
                None => format!("the default {} ({})", other.key, other.addr),
            };
            let message = if here.addr == other.addr {
                format!(
                    "{}: the address {} is already used by {place}; every listener needs its own address",
                    here.key, here.addr
                )
            } else {
                format!(
                    "{}: the address {} clashes with {place}: an unspecified address (0.0.0.0 or ::) takes its port on every address of its family",
                    here.key, here.addr
                )
            };
            self.error(at, message);
        }
    }
}

/// Whether binding both addresses would fail: the same port and either the
/// same IP, or an unspecified IP of the same family. Port 0 (any free
/// port) never clashes.
fn addresses_clash(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    a.ip() == b.ip()
        || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified()))
}

/// A hint for an unknown key: a close spelling, or the table it belongs in.
fn hint(key: &str, allowed: &[&str]) -> Option<String> {
    let best = allowed
        .iter()
        .map(|a| (edit_distance(key, a), *a))
        .min_by_key(|(d, _)| *d);
    if let Some((d, candidate)) = best {
        if d <= 2 && d < key.len() {
            return Some(format!("did you mean \"{candidate}\"?"));
        }
    }
    let home = [
        (SERVER_KEYS, "[server]"),
        (VHOST_KEYS, "[[vhost]]"),
        (TLS_KEYS, "[vhost.tls]"),
        (PERSISTENT_KEYS, "[vhost.persistent]"),
        (super::cluster::CLUSTER_KEYS, "[cluster]"),
    ]
    .into_iter()
    .find(|(keys, _)| keys.contains(&key) && *keys != allowed)?;
    Some(format!("it belongs in {}", home.1))
}

/// Levenshtein distance, for short key names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}
