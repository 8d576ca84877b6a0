//! Configuration: one TOML file parsed into validated types (SPEC section 1).

mod types;

pub use types::*;
