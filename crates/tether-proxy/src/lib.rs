//! tether's gateway library.
//!
//! # Layout
//!
//! Layered: each module uses only those below it (docs/architecture.md
//! draws the layers and says where to change what). Top down: `serve` and
//! `admin`; `listener`, `http1`, `h2` (connections); `gateway` and
//! `router` (the request path); `session`; `forward`, `headers`, `tls`;
//! `exchange`, `body`, `conn_limits`, `client_addr`; `codec`, [`config`],
//! `pem`, `metrics`, [`descriptors`].

mod admin;
mod body;
mod client_addr;
mod closable;
mod codec;
pub mod config;
mod conn_limits;
pub mod descriptors;
mod exchange;
mod forward;
mod gateway;
mod h2;
mod headers;
mod http1;
mod listener;
mod metrics;
mod pem;
mod router;
mod serve;
mod session;
mod tls;

pub use serve::{run, Control, RunError};
