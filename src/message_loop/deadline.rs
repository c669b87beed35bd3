//! Deadlines of the loop's connections: one that makes no progress for too
//! long (a message or a reply stalled half-way, or, when asked, one idle
//! between messages) is closed, so a silent client holds no descriptor and
//! no buffer for good.

use super::conn::Conn;
use std::time::{Duration, Instant};

/// Longest wait between two looks for expired connections.
const MAX_GRANULARITY: Duration = Duration::from_millis(250);
const MIN_GRANULARITY: Duration = Duration::from_millis(10);

pub(super) struct Deadlines {
    /// A message partly received, or a reply partly sent, that makes no
    /// progress for this long.
    stall: Option<Duration>,
    /// Nothing received, nothing to send, no message with the handler.
    idle: Option<Duration>,
    /// How often connections are looked at.
    pub(super) granularity: Duration,
}

impl Deadlines {
    pub(super) fn new(stall: Option<Duration>, idle: Option<Duration>) -> Self {
        let shortest = stall.into_iter().chain(idle).min();
        let granularity = shortest.map_or(MAX_GRANULARITY, |shortest| {
            (shortest / 10).clamp(MIN_GRANULARITY, MAX_GRANULARITY)
        });
        Self {
            stall,
            idle,
            granularity,
        }
    }

    pub(super) fn any(&self) -> bool {
        self.stall.is_some() || self.idle.is_some()
    }

    /// Why `conn` is to be closed at `now`, if it is.
    pub(super) fn expired(&self, conn: &Conn, now: Instant) -> Option<String> {
        if conn.busy || conn.hangup || conn.end.is_some() {
            return None;
        }
        let quiet = now.saturating_duration_since(conn.progress);
        let (limit, what) = if conn.unsent() {
            (self.stall?, "a reply the client does not read")
        } else if !conn.unread().is_empty() {
            (self.stall?, "a message the client does not finish")
        } else {
            (self.idle?, "an idle connection")
        };
        (quiet >= limit).then(|| format!("no progress for {:.3} s on {what}", limit.as_secs_f64()))
    }
}
