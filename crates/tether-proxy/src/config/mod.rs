//! Configuration: one TOML file parsed into validated types (SPEC section 1).
//!
//! [`load`] reads a file and [`parse`] a string; both return a validated
//! [`Config`] or every error of the file as [`ConfigErrors`], whose
//! `Display` is the `FILE:LINE:COLUMN: sentence` list of `tether check`.

mod cluster;
mod error;
mod fields;
pub mod glob;
mod parse;
mod types;
mod values;
mod vhost;
mod warnings;

#[cfg(test)]
mod tests;

pub use cluster::{valid_node, MAX_NODE_LEN};
pub use error::{ConfigError, ConfigErrors};
pub use glob::PathGlob;
pub use parse::{load, parse};
pub use types::*;
pub(crate) use values::upstream as parse_upstream;
pub use warnings::{descriptors_needed, warnings};
