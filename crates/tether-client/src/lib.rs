//! tether native client.
