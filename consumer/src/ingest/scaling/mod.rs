//! How many batch writers a queue gets: the decision alone, a pure function of what was observed and
//! when, so it can be tested with controlled time.
//!
//! A queue starts at `WRITERS_MIN` writers. When its backlog would take longer than
//! `SCALE_TARGET_DRAIN_SECS` to drain at the rate it is being drained, the writers double (up to
//! `WRITERS_MAX`), at most once per settle period so that the effect of one step is seen before the
//! next. They come down, one halving at a time, only once the backlog has stayed gone for
//! `SCALE_COOLDOWN_SECS` since the last change: a load that comes and goes does not make the writers
//! bounce.

use std::time::{Duration, Instant};

/// Bounds and pace of the writer count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ScalingSettings {
    /// Writers a queue never goes below.
    pub min: usize,
    /// Writers a queue never goes above.
    pub max: usize,
    /// The longest the backlog should take to drain; beyond it, writers are added.
    pub target_drain: Duration,
    /// How long the backlog must stay gone, since the last change, before writers are removed.
    pub cooldown: Duration,
    /// The least time between two increases, so that one step's effect is measured before the next.
    pub settle: Duration,
    /// A backlog of at most this many messages counts as gone (a batch in gathering is not a backlog).
    pub idle_backlog: u64,
}

impl ScalingSettings {
    /// The settings `WRITERS_MIN`, `WRITERS_MAX`, `SCALE_TARGET_DRAIN_SECS`, `SCALE_COOLDOWN_SECS` and
    /// `QUEUE_WATCH_INTERVAL_MS` give, where a backlog of at most one batch (`batch_size`) counts as gone.
    pub(crate) fn of(config: &crate::config::ScalingConfig, batch_size: usize) -> Self {
        Self {
            min: config.writers_min,
            max: config.writers_max,
            target_drain: Duration::from_secs(config.scale_target_drain_secs),
            cooldown: Duration::from_secs(config.scale_cooldown_secs),
            // Two looks between increases: one to see the step take effect, one to measure it.
            settle: 2 * Duration::from_millis(config.queue_watch_interval_ms),
            idle_backlog: batch_size as u64,
        }
    }
}

/// One look at a queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Observation {
    pub at: Instant,
    /// Messages waiting: ready on the broker plus delivered and not yet stored.
    pub backlog: u64,
    /// Messages this process stored from the queue per second since the previous look.
    pub drain_per_second: f64,
    /// Whether the database took the last write: writers cannot help a database that is down.
    pub database_up: bool,
}

/// Why the writer count changed, or did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    /// The backlog would take longer than the target to drain.
    DrainSlowerThanTarget,
    /// The backlog has been gone for the cooldown.
    BacklogGone,
    /// Nothing calls for a change.
    Steady,
    /// Draining too slowly, but writers were added too recently to judge them.
    Settling,
    /// Draining too slowly, but the queue already has its maximum.
    AtMaximum,
    /// The backlog is gone, but not yet for the cooldown.
    CoolingDown,
    /// The database is down: more writers would only wait with the others.
    DatabaseDown,
}

impl Reason {
    /// The label of `consumer_scaling_decisions_total` and of the log line.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::DrainSlowerThanTarget => "drain_slower_than_target",
            Self::BacklogGone => "backlog_gone",
            Self::Steady => "steady",
            Self::Settling => "settling",
            Self::AtMaximum => "at_maximum",
            Self::CoolingDown => "cooling_down",
            Self::DatabaseDown => "database_down",
        }
    }
}

/// The outcome of one look.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Decision {
    Grow {
        from: usize,
        to: usize,
        reason: Reason,
    },
    Shrink {
        from: usize,
        to: usize,
        reason: Reason,
    },
    Hold {
        writers: usize,
        reason: Reason,
    },
}

impl Decision {
    /// The writer count after the decision.
    #[cfg(test)]
    fn writers(self) -> usize {
        match self {
            Self::Grow { to, .. } | Self::Shrink { to, .. } => to,
            Self::Hold { writers, .. } => writers,
        }
    }

    /// The direction label: `up`, `down` or `hold`.
    pub(crate) fn direction(self) -> &'static str {
        match self {
            Self::Grow { .. } => "up",
            Self::Shrink { .. } => "down",
            Self::Hold { .. } => "hold",
        }
    }

    pub(crate) fn reason(self) -> Reason {
        match self {
            Self::Grow { reason, .. } | Self::Shrink { reason, .. } | Self::Hold { reason, .. } => {
                reason
            }
        }
    }
}

/// The writer count of one queue and what it remembers between looks.
#[derive(Debug, Clone)]
pub(crate) struct Scaler {
    settings: ScalingSettings,
    writers: usize,
    /// When the writer count last changed.
    changed_at: Option<Instant>,
    /// Since when the backlog has been gone, if it is.
    gone_since: Option<Instant>,
}

impl Scaler {
    /// A queue at its minimum. `settings.min` is raised to 1 and `settings.max` to `min` if below.
    pub(crate) fn new(mut settings: ScalingSettings) -> Self {
        settings.min = settings.min.max(1);
        settings.max = settings.max.max(settings.min);
        Self {
            writers: settings.min,
            settings,
            changed_at: None,
            gone_since: None,
        }
    }

    #[cfg(test)]
    fn writers(&self) -> usize {
        self.writers
    }

    /// Decides from one look, and remembers the outcome.
    pub(crate) fn decide(&mut self, seen: Observation) -> Decision {
        let settings = self.settings;
        let from = self.writers;
        if seen.backlog <= settings.idle_backlog {
            let since = *self.gone_since.get_or_insert(seen.at);
            let calm_since = self.changed_at.map_or(since, |changed| changed.max(since));
            if from <= settings.min {
                return Decision::Hold {
                    writers: from,
                    reason: Reason::Steady,
                };
            }
            if seen.at.saturating_duration_since(calm_since) < settings.cooldown {
                return Decision::Hold {
                    writers: from,
                    reason: Reason::CoolingDown,
                };
            }
            return self.change(seen.at, (from / 2).max(settings.min), Reason::BacklogGone);
        }
        self.gone_since = None;
        if !seen.database_up {
            return Decision::Hold {
                writers: from,
                reason: Reason::DatabaseDown,
            };
        }
        let drain_time = if seen.drain_per_second > 0.0 {
            Duration::try_from_secs_f64(seen.backlog as f64 / seen.drain_per_second)
                .unwrap_or(Duration::MAX)
        } else {
            Duration::MAX
        };
        if drain_time <= settings.target_drain {
            return Decision::Hold {
                writers: from,
                reason: Reason::Steady,
            };
        }
        if from >= settings.max {
            return Decision::Hold {
                writers: from,
                reason: Reason::AtMaximum,
            };
        }
        if self
            .changed_at
            .is_some_and(|changed| seen.at.saturating_duration_since(changed) < settings.settle)
        {
            return Decision::Hold {
                writers: from,
                reason: Reason::Settling,
            };
        }
        self.change(
            seen.at,
            (from * 2).min(settings.max),
            Reason::DrainSlowerThanTarget,
        )
    }

    fn change(&mut self, at: Instant, to: usize, reason: Reason) -> Decision {
        let from = self.writers;
        self.writers = to;
        self.changed_at = Some(at);
        if to > from {
            Decision::Grow { from, to, reason }
        } else {
            Decision::Shrink { from, to, reason }
        }
    }
}

#[cfg(test)]
mod tests;
