//! tether's gateway library.

pub mod config;
pub mod router;
