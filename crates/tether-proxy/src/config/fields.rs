//! Typed reads of one table's keys: strings, lists, durations, sizes and
//! counts, each recording a positioned error instead of stopping.

use std::net::SocketAddr;
use std::time::Duration;

use toml_edit::{Item, TableLike, Value};

use super::parse::Checker;
use super::values;

/// One table of the file, as seen by the checker.
#[derive(Clone, Copy)]
pub(super) struct Section<'a> {
    pub(super) table: &'a dyn TableLike,
    /// How messages name it: `in [server]`, `at the top level ...`.
    pub(super) place: &'static str,
    /// Where errors about the table as a whole point (its header).
    pub(super) at: usize,
}

/// One key of a section with its positions.
pub(super) struct Field<'a> {
    pub(super) key: &'a str,
    pub(super) item: &'a Item,
    pub(super) key_at: usize,
    /// The value's position (the key's when the value has no span).
    pub(super) at: usize,
}

impl<'a> Section<'a> {
    pub(super) fn field(&self, key: &str) -> Option<Field<'a>> {
        let (k, item) = self.table.get_key_value(key)?;
        let key_at = k.span().map_or(self.at, |s| s.start);
        let at = item.span().map_or(key_at, |s| s.start);
        Some(Field {
            key: k.get(),
            item,
            key_at,
            at,
        })
    }
}

/// A value with the position it was written at.
pub(super) struct Spanned<T> {
    pub(super) value: T,
    pub(super) at: usize,
}

impl Checker<'_> {
    // ---- typed values -------------------------------------------------

    pub(super) fn string<'a>(&mut self, f: &Field<'a>, what: &str) -> Option<&'a str> {
        let s = f.item.as_str();
        if s.is_none() {
            let name = match f.key {
                "key" => "key (the private key file)",
                other => other,
            };
            self.error(
                f.at,
                format!("{name} must be {what}, not {}", type_name(f.item)),
            );
        }
        s
    }

    /// An array of strings; None (error recorded) when it is not one.
    pub(super) fn string_list<'a>(
        &mut self,
        f: &Field<'a>,
        what: &str,
    ) -> Option<Vec<Spanned<&'a str>>> {
        let Some(array) = f.item.as_array() else {
            let hint = if f.item.is_str() {
                " (put it in brackets: [\"...\"])"
            } else {
                ""
            };
            self.error(
                f.at,
                format!(
                    "{} must be an array of {what}, not {}{hint}",
                    f.key,
                    type_name(f.item)
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for value in array.iter() {
            let at = value.span().map_or(f.at, |s| s.start);
            match value.as_str() {
                Some(s) => out.push(spanned(s, at)),
                None => {
                    ok = false;
                    self.error(
                        at,
                        format!(
                            "{} must hold only strings, but this is {}",
                            f.key,
                            value_type_name(value)
                        ),
                    );
                }
            }
        }
        ok.then_some(out)
    }

    pub(super) fn socket_list(&mut self, f: &Field<'_>) -> Vec<Spanned<SocketAddr>> {
        let Some(list) = self.string_list(f, "addresses like [\"127.0.0.1:8080\"]") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in list {
            match values::socket_addr(item.value) {
                Ok(addr) => out.push(spanned(addr, item.at)),
                Err(e) => self.error(item.at, format!("{}: {e}", f.key)),
            }
        }
        out
    }

    pub(super) fn duration(
        &mut self,
        sec: Section<'_>,
        key: &str,
        default: Duration,
        zero_ok: bool,
    ) -> Duration {
        let Some(f) = sec.field(key) else {
            return default;
        };
        let parsed = match &f.item {
            Item::Value(Value::String(s)) => values::duration(s.value()),
            Item::Value(Value::Integer(n)) => Err(format!(
                "{} is a plain number, not a duration; write it with a unit, like \"{}s\"",
                n.value(),
                n.value()
            )),
            other => {
                self.error(
                    f.at,
                    format!(
                        "{key} must be a duration like \"30s\", not {}",
                        type_name(other)
                    ),
                );
                return default;
            }
        };
        match parsed {
            Ok(d) if d.is_zero() && !zero_ok => {
                self.error(f.at, format!("{key} must be longer than zero"));
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.error(f.at, format!("{key}: {e}"));
                default
            }
        }
    }

    pub(super) fn size(&mut self, sec: Section<'_>, key: &str, default: usize, min: u64) -> usize {
        let Some(f) = sec.field(key) else {
            return default;
        };
        let parsed = match &f.item {
            Item::Value(Value::String(s)) => values::size(s.value()),
            Item::Value(Value::Integer(n)) => u64::try_from(*n.value())
                .map_err(|_| format!("{} is negative; a size is 0 or more bytes", n.value())),
            other => {
                self.error(
                    f.at,
                    format!(
                        "{key} must be a size like \"64KiB\" or a whole number of bytes, not {}",
                        type_name(other)
                    ),
                );
                return default;
            }
        };
        match parsed.map(usize::try_from) {
            Ok(Ok(n)) if n as u64 > MAX_SIZE => {
                self.error(
                    f.at,
                    format!("{key} of {n} bytes is more than tether can hold per connection or session; at most 1GiB"),
                );
                default
            }
            Ok(Ok(n)) if n as u64 >= min => n,
            Ok(Ok(n)) => {
                let least = if min == 1 {
                    "more than 0 bytes".to_string()
                } else {
                    format!("at least {min} bytes")
                };
                self.error(f.at, format!("{key} must be {least}, not {n}"));
                default
            }
            Ok(Err(_)) => {
                self.error(f.at, format!("{key} is too large for this machine"));
                default
            }
            Err(e) => {
                self.error(f.at, format!("{key}: {e}"));
                default
            }
        }
    }

    /// A positive whole number no larger than `max`.
    pub(super) fn count(&mut self, sec: Section<'_>, key: &str, default: usize, max: u64) -> usize {
        let Some(f) = sec.field(key) else {
            return default;
        };
        match f.item.as_integer() {
            Some(n) if n >= 1 && (n as u64) <= max && usize::try_from(n).is_ok() => n as usize,
            Some(n) if n < 1 => {
                self.error(f.at, format!("{key} must be at least 1, not {n}"));
                default
            }
            Some(n) => {
                self.error(f.at, format!("{key} must be at most {max}, not {n}"));
                default
            }
            None => {
                self.error(
                    f.at,
                    format!(
                        "{key} must be a whole number like {default}, not {}",
                        type_name(f.item)
                    ),
                );
                default
            }
        }
    }
}

/// No size setting may exceed this: buffers of that size per connection or
/// session cannot work, and the replay index counts in 32 bits.
const MAX_SIZE: u64 = 1 << 30;

pub(super) fn spanned<T>(value: T, at: usize) -> Spanned<T> {
    Spanned { value, at }
}

pub(super) fn type_name(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(v) => value_type_name(v),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

pub(super) fn value_type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a decimal number",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date/time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}
