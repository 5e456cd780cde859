//! The scheduler: one fault every 10–30 s, sometimes two at once on different targets, sometimes timed to
//! land while a largest batch is in flight, each held for a while and then healed; and its tally.

use std::{
    collections::{BTreeMap, HashSet},
    sync::atomic::Ordering,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::chaos::{clients::Clients, rng::Rng, world::World};

use super::{Target, FAULTS};

/// What the two faults of one moment must not share.
fn lock_of(target: Target) -> String {
    match target {
        Target::Service(i) | Target::Link(i, _) => format!("service {i}"),
        Target::Node(_) => "broker".into(),
        Target::Database => "database".into(),
    }
}

fn describe(world: &World, target: Target) -> String {
    match target {
        Target::Service(i) => world.service_name(i),
        Target::Node(n) => format!("node {n}"),
        Target::Database => "primary".into(),
        Target::Link(i, peer) => format!("{} <-> {peer:?}", world.service_name(i)).to_lowercase(),
    }
}

/// What the scheduler did.
#[derive(Default)]
pub struct Tally {
    pub by_kind: BTreeMap<&'static str, u64>,
    pub two_at_once: u64,
    pub during_largest_batch: u64,
    /// Faults that could not be injected or healed (the soak's own trouble, shown in the printout).
    pub errors: Vec<String>,
}

pub struct Scheduler {
    world: Arc<World>,
    rng: Rng,
    busy: Arc<Mutex<HashSet<String>>>,
    tally: Arc<Mutex<Tally>>,
    started: Instant,
    running: Vec<tokio::task::JoinHandle<()>>,
}

impl Scheduler {
    pub fn new(world: Arc<World>, seed: u64, started: Instant) -> Self {
        Self {
            world,
            rng: Rng::new(seed),
            busy: Arc::default(),
            tally: Arc::default(),
            started,
            running: Vec::new(),
        }
    }

    /// Injects faults until `until`, then waits for every one to be healed.
    pub async fn run(mut self, until: Instant, clients: &Clients) -> Tally {
        loop {
            let pause = self.rng.secs((10, 30));
            if Instant::now() + pause >= until {
                break;
            }
            tokio::time::sleep(pause).await;
            let count = if self.rng.chance(20) { 2 } else { 1 };
            let during_largest = self.rng.chance(30);
            if during_largest {
                let give_up = Instant::now() + Duration::from_secs(15);
                while clients.largest_in_flight.load(Ordering::Relaxed) == 0
                    && Instant::now() < give_up
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let in_batch = clients.largest_in_flight.load(Ordering::Relaxed) > 0;
            let mut injected = 0;
            for _ in 0..count {
                injected += usize::from(self.inject_one());
            }
            let mut tally = self.tally.lock().unwrap();
            tally.two_at_once += u64::from(injected == 2);
            tally.during_largest_batch += u64::from(injected > 0 && during_largest && in_batch);
        }
        for task in self.running.drain(..) {
            let _ = task.await;
        }
        Arc::try_unwrap(self.tally).map_or_else(|_| Tally::default(), |m| m.into_inner().unwrap())
    }

    /// Draws a fault and a free target, and starts it; false when none was free.
    fn inject_one(&mut self) -> bool {
        for _ in 0..20 {
            let spec = self.rng.pick(FAULTS).expect("faults");
            let targets = spec.targets(&self.world);
            let target = *self.rng.pick(&targets).expect("a target");
            let lock = lock_of(target);
            if !self.busy.lock().unwrap().insert(lock.clone()) {
                continue;
            }
            let hold = self.rng.secs(spec.hold);
            let dial = self.rng.between(0, 99);
            let (world, busy, tally) = (self.world.clone(), self.busy.clone(), self.tally.clone());
            let started = self.started;
            self.running.push(tokio::spawn(async move {
                let what = format!("{} on {}", spec.name, describe(&world, target));
                let at = started.elapsed().as_secs();
                let injecting = world.clone();
                let result =
                    tokio::task::spawn_blocking(move || spec.inject(&injecting, target, dial))
                        .await;
                match result {
                    Ok(Ok(detail)) => {
                        let detail = if detail.is_empty() {
                            detail
                        } else {
                            format!(" ({detail})")
                        };
                        let held = if hold.is_zero() {
                            String::new()
                        } else {
                            format!(", held {:.1} s", hold.as_secs_f64())
                        };
                        println!("[{at:>4}s] {what}{detail}{held}");
                        *tally.lock().unwrap().by_kind.entry(spec.name).or_default() += 1;
                    }
                    Ok(Err(error)) => tally
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("{what}: {error:#}")),
                    Err(error) => tally
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("{what}: {error}")),
                }
                tokio::time::sleep(hold).await;
                let healing = world.clone();
                match tokio::task::spawn_blocking(move || spec.heal(&healing, target)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tally
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("healing {what}: {error:#}")),
                    Err(error) => tally
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("healing {what}: {error}")),
                }
                busy.lock().unwrap().remove(&lock);
            }));
            return true;
        }
        false
    }
}
