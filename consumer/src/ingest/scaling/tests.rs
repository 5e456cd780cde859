//! The scaler's decisions under controlled time: growing, settling, cooling down and shrinking.

use super::*;

fn settings() -> ScalingSettings {
    ScalingSettings {
        min: 1,
        max: 8,
        target_drain: Duration::from_secs(10),
        cooldown: Duration::from_secs(60),
        settle: Duration::from_secs(10),
        idle_backlog: 100,
    }
}

/// Looks at `seconds` after `start`.
fn look(start: Instant, seconds: u64, backlog: u64, drain_per_second: f64) -> Observation {
    Observation {
        at: start + Duration::from_secs(seconds),
        backlog,
        drain_per_second,
        database_up: true,
    }
}

#[test]
fn a_backlog_that_drains_within_the_target_changes_nothing() {
    let start = Instant::now();
    let mut scaler = Scaler::new(settings());
    let decision = scaler.decide(look(start, 0, 5_000, 1_000.0));
    assert_eq!(
        decision,
        Decision::Hold {
            writers: 1,
            reason: Reason::Steady
        }
    );
}

#[test]
fn a_slow_drain_doubles_the_writers_once_per_settle_period_up_to_the_maximum() {
    let start = Instant::now();
    let mut scaler = Scaler::new(settings());
    let grown = scaler.decide(look(start, 0, 50_000, 1_000.0));
    assert_eq!(
        grown,
        Decision::Grow {
            from: 1,
            to: 2,
            reason: Reason::DrainSlowerThanTarget
        }
    );
    assert_eq!(
        scaler.decide(look(start, 5, 48_000, 1_000.0)).reason(),
        Reason::Settling
    );
    assert_eq!(scaler.decide(look(start, 10, 45_000, 1_500.0)).writers(), 4);
    assert_eq!(scaler.decide(look(start, 20, 40_000, 2_000.0)).writers(), 8);
    assert_eq!(
        scaler.decide(look(start, 30, 35_000, 2_500.0)),
        Decision::Hold {
            writers: 8,
            reason: Reason::AtMaximum
        }
    );
}

#[test]
fn nothing_drained_yet_with_a_backlog_counts_as_too_slow() {
    let start = Instant::now();
    let mut scaler = Scaler::new(settings());
    assert_eq!(scaler.decide(look(start, 0, 1_000, 0.0)).writers(), 2);
}

#[test]
fn writers_come_down_only_after_the_backlog_stays_gone_for_the_cooldown_one_halving_at_a_time() {
    let start = Instant::now();
    let mut scaler = Scaler::new(settings());
    scaler.decide(look(start, 0, 50_000, 100.0));
    scaler.decide(look(start, 10, 50_000, 100.0));
    assert_eq!(scaler.writers(), 4);
    // Gone at 20 s: held through the cooldown, counted from the later of the change and the calm.
    assert_eq!(
        scaler.decide(look(start, 20, 0, 3_000.0)).reason(),
        Reason::CoolingDown
    );
    assert_eq!(
        scaler.decide(look(start, 79, 50, 10.0)).reason(),
        Reason::CoolingDown
    );
    assert_eq!(
        scaler.decide(look(start, 80, 0, 0.0)),
        Decision::Shrink {
            from: 4,
            to: 2,
            reason: Reason::BacklogGone
        }
    );
    assert_eq!(
        scaler.decide(look(start, 100, 0, 0.0)).reason(),
        Reason::CoolingDown
    );
    assert_eq!(scaler.decide(look(start, 140, 0, 0.0)).writers(), 1);
    assert_eq!(
        scaler.decide(look(start, 500, 0, 0.0)),
        Decision::Hold {
            writers: 1,
            reason: Reason::Steady
        }
    );
}

#[test]
fn a_backlog_that_returns_during_the_cooldown_restarts_it() {
    let start = Instant::now();
    let mut scaler = Scaler::new(settings());
    scaler.decide(look(start, 0, 50_000, 100.0));
    assert_eq!(scaler.writers(), 2);
    scaler.decide(look(start, 10, 0, 5_000.0));
    // Back, but draining within the target: held, and the calm is over.
    assert_eq!(
        scaler.decide(look(start, 50, 2_000, 1_000.0)).reason(),
        Reason::Steady
    );
    // Gone again at 60 s: the cooldown counts from there, not from 10 s.
    assert_eq!(
        scaler.decide(look(start, 60, 0, 1_000.0)).reason(),
        Reason::CoolingDown
    );
    assert_eq!(
        scaler.decide(look(start, 110, 0, 0.0)).reason(),
        Reason::CoolingDown
    );
    assert_eq!(scaler.decide(look(start, 120, 0, 0.0)).writers(), 1);
}

#[test]
fn a_database_that_is_down_adds_no_writers() {
    let start = Instant::now();
    let mut scaler = Scaler::new(settings());
    let seen = Observation {
        database_up: false,
        ..look(start, 0, 50_000, 0.0)
    };
    assert_eq!(
        scaler.decide(seen),
        Decision::Hold {
            writers: 1,
            reason: Reason::DatabaseDown
        }
    );
}

#[test]
fn a_steady_load_that_one_writer_keeps_up_with_makes_no_change_in_an_hour() {
    let start = Instant::now();
    let mut scaler = Scaler::new(settings());
    let changes = (0..720)
        .map(|tick| {
            // A batch or two in hand at each look, drained as fast as it comes.
            let backlog = if tick % 3 == 0 { 600 } else { 40 };
            scaler.decide(look(start, tick * 5, backlog, 2_000.0))
        })
        .filter(|decision| !matches!(decision, Decision::Hold { .. }))
        .count();
    assert_eq!(changes, 0);
}

#[test]
fn bounds_below_one_or_crossed_are_made_sane() {
    let scaler = Scaler::new(ScalingSettings {
        min: 0,
        max: 0,
        ..settings()
    });
    assert_eq!(scaler.writers(), 1);
    assert_eq!(scaler.settings.max, 1);
}
