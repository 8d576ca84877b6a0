//! Request routing: vhost lookup and plain/persistent classification.

pub mod glob;
