//! The process's limit on open file descriptors (SPEC 1 limits can only
//! hold if the kernel lets tether open that many sockets).

use rustix::process::{getrlimit, setrlimit, Resource};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the
/// soft limit in force afterwards (`None` when unlimited or unknown).
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = raised,
            Err(e) => tracing::debug!(error = %e, "could not raise the open files limit"),
        }
    }
    limit.current
}

/// The soft limit as it is, without changing it (for `tether check`).
pub fn open_files_limit() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}
