//! The line rate limit of one direction of a session
//! (`max_lines_per_second`): over it, reading waits, nothing is dropped.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::metrics::{Limit, Metrics};

/// Lines per second in one direction; over the limit, reading waits for
/// the next one-second window (backpressure, never a drop).
pub(crate) struct RateGate {
    limit: u32,
    count: u32,
    window_end: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl RateGate {
    pub(crate) fn new(limit: u32) -> RateGate {
        RateGate {
            limit,
            count: 0,
            window_end: None,
            sleep: None,
        }
    }

    /// Whether a line may be read now; the first refusal of a window is
    /// counted as a `line_rate` limit hit.
    pub(crate) fn allow(&mut self, cx: &mut Context<'_>, metrics: &Metrics) -> bool {
        if self.count < self.limit {
            return true;
        }
        let end = self.window_end.unwrap_or_else(Instant::now);
        if Instant::now() >= end {
            self.count = 0;
            self.window_end = None;
            self.sleep = None;
            return true;
        }
        let sleep = self.sleep.get_or_insert_with(|| {
            metrics.limit_hit(Limit::LineRate);
            Box::pin(tokio::time::sleep_until(end))
        });
        if sleep.as_mut().poll(cx).is_ready() {
            self.count = 0;
            self.window_end = None;
            self.sleep = None;
            return true;
        }
        false
    }

    pub(crate) fn note(&mut self) {
        let now = Instant::now();
        if self.window_end.is_none_or(|end| now >= end) {
            self.window_end = Some(now + Duration::from_secs(1));
            self.count = 0;
        }
        self.count += 1;
    }
}
