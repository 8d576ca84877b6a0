//! systemd's service notifications (`Type=notify`): ready, reloading,
//! stopping, and the new main PID after an upgrade (SPEC 10). Without
//! systemd (`NOTIFY_SOCKET` unset) each is a no-op.

use sd_notify::NotifyState;

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Every listener is bound and the configuration loaded.
pub(crate) fn ready() {
    notify(&[NotifyState::Ready]);
}

/// SIGHUP: a reload starts.
pub fn reloading() {
    notify(&[NotifyState::Reloading]);
}

/// A reload is over (applied or refused).
pub fn reloaded() {
    notify(&[NotifyState::Ready]);
}

/// SIGTERM: draining.
pub(crate) fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// The new process after an upgrade is the service's main process now
/// (needs `NotifyAccess=all`).
pub(crate) fn main_pid() {
    notify(&[NotifyState::MainPid(std::process::id()), NotifyState::Ready]);
}
