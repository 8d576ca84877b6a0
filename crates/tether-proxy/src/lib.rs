//! tether's gateway library.

pub mod config;
