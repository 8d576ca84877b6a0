//! Test harness: starting real servers on free loopback ports.
