//! tether's gateway library.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, parsed into validated types.
//! - `listener`: accept loops, connection limits, HTTP/1 vs HTTP/2.
//! - `http1`: tether's own strict HTTP/1.1 server loop; `h2`: hyper's HTTP/2.
//! - `gateway`: the request path shared by both (route, then forward).
//! - [`router`]: vhost table; `forward`: pooled client to origins;
//!   `headers`: hop-by-hop and forwarding fields.
//! - [`session`]: persistent sessions (SPEC 2, 4, 7).
//! - [`metrics`]: the families of SPEC 9, as atomics resolved per vhost.
//! - `admin`: health and readiness; [`serve`]: binding, serving, draining.

pub mod admin;
pub mod body;
mod client_addr;
mod codec;
pub mod config;
mod conn_limits;
pub mod descriptors;
pub mod exchange;
pub mod forward;
pub mod gateway;
mod h2;
mod headers;
mod http1;
mod listener;
pub mod metrics;
mod pem;
pub mod router;
mod serve;
pub mod session;
pub mod tls;

pub use serve::{run, Control, RunError};
