//! The faults the soak injects, in one table, and how each is injected and healed. Their scheduler
//! ([`scheduler`]) injects one every 10–30 s (sometimes two at once, sometimes timed to land while a largest
//! batch is in flight), holds it for a random while, then heals it. Two faults at once never share a
//! target (a service, the broker, the database).

mod scheduler;

pub use scheduler::{Scheduler, Tally};

use std::{sync::Arc, time::Duration};

use super::{broker::NODES, world::World};

/// What a fault is aimed at.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// A publisher (0, 1) or consumer (2, 3).
    Service(usize),
    /// Broker node 1, 2 or 3.
    Node(usize),
    /// The database primary.
    Database,
    /// The link from a service to the broker (all nodes) or, for a consumer, to the database.
    Link(usize, Peer),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Peer {
    Broker,
    Database,
}

/// Which targets a kind of fault takes.
#[derive(Clone, Copy)]
pub enum On {
    Services,
    Nodes,
    Database,
    Links,
}

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    KillService,
    FreezeService,
    KillNode,
    FreezeNode,
    CloseConnections,
    MemoryAlarm,
    RestartDatabase,
    FailOver,
    FreezeDatabase,
    Partition,
    PacketLoss,
    Delay,
}

pub struct Spec {
    pub kind: Kind,
    pub name: &'static str,
    on: On,
    /// Seconds the fault is held before it is healed (a range).
    hold: (u64, u64),
}

/// Every fault kind, drawn with equal chance.
pub const FAULTS: &[Spec] = &[
    Spec {
        kind: Kind::KillService,
        name: "SIGKILL service",
        on: On::Services,
        hold: (0, 5),
    },
    Spec {
        kind: Kind::FreezeService,
        name: "SIGSTOP service",
        on: On::Services,
        hold: (3, 20),
    },
    Spec {
        kind: Kind::KillNode,
        name: "SIGKILL broker node",
        on: On::Nodes,
        hold: (0, 10),
    },
    Spec {
        kind: Kind::FreezeNode,
        name: "SIGSTOP broker node",
        on: On::Nodes,
        hold: (3, 20),
    },
    Spec {
        kind: Kind::CloseConnections,
        name: "close_all_connections",
        on: On::Nodes,
        hold: (0, 0),
    },
    Spec {
        kind: Kind::MemoryAlarm,
        name: "memory alarm",
        on: On::Nodes,
        hold: (5, 15),
    },
    Spec {
        kind: Kind::RestartDatabase,
        name: "database restart",
        on: On::Database,
        hold: (0, 0),
    },
    Spec {
        kind: Kind::FailOver,
        name: "database failover",
        on: On::Database,
        hold: (3, 10),
    },
    Spec {
        kind: Kind::FreezeDatabase,
        name: "SIGSTOP database",
        on: On::Database,
        hold: (3, 20),
    },
    Spec {
        kind: Kind::Partition,
        name: "partition",
        on: On::Links,
        hold: (5, 40),
    },
    Spec {
        kind: Kind::PacketLoss,
        name: "packet loss",
        on: On::Links,
        hold: (10, 30),
    },
    Spec {
        kind: Kind::Delay,
        name: "delay",
        on: On::Links,
        hold: (10, 30),
    },
];

impl Spec {
    fn targets(&self, world: &World) -> Vec<Target> {
        match self.on {
            On::Services => (0..world.services.len()).map(Target::Service).collect(),
            On::Nodes => NODES.iter().map(|&n| Target::Node(n)).collect(),
            On::Database => vec![Target::Database],
            On::Links => (0..world.services.len())
                .map(|i| Target::Link(i, Peer::Broker))
                .chain(
                    world
                        .db_relays
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.is_some())
                        .map(|(i, _)| Target::Link(i, Peer::Database)),
                )
                .collect(),
        }
    }

    /// Starts the fault; `dial` (0–99) sets its strength where it has one.
    fn inject(&self, world: &World, target: Target, dial: u64) -> anyhow::Result<String> {
        use Kind::*;
        match (self.kind, target) {
            (KillService, Target::Service(i)) => world.services[i].lock().unwrap().kill(),
            (FreezeService, Target::Service(i)) => {
                world.services[i].lock().unwrap().signal(libc::SIGSTOP)
            }
            (KillNode, Target::Node(n)) => world.broker.signal(n, libc::SIGKILL)?,
            (FreezeNode, Target::Node(n)) => world.broker.signal(n, libc::SIGSTOP)?,
            (CloseConnections, Target::Node(n)) => world
                .broker
                .ctl(n, &["close_all_connections", "chaos soak"])
                .map(drop)?,
            (MemoryAlarm, Target::Node(n)) => world
                .broker
                .ctl(n, &["set_vm_memory_high_watermark", "0.0001"])
                .map(drop)?,
            (RestartDatabase, _) => {
                let mode = if dial < 50 { "fast" } else { "immediate" };
                world.db.lock().unwrap().restart_primary(mode)?;
                return Ok(format!("-m {mode}"));
            }
            (FailOver, _) => {
                let port = world.db.lock().unwrap().fail_over()?;
                world.follow_primary();
                return Ok(format!("new primary on port {port}"));
            }
            (FreezeDatabase, _) => world.db.lock().unwrap().freeze(libc::SIGSTOP)?,
            (Partition | PacketLoss, Target::Link(i, peer)) => {
                let percent = if matches!(self.kind, Partition) {
                    100
                } else {
                    5 + dial % 26
                };
                world.services[i]
                    .lock()
                    .unwrap()
                    .netns
                    .drop_packets(&peer_ports(peer), percent)?;
                return Ok(format!("{percent} % of packets dropped"));
            }
            (Delay, Target::Link(i, peer)) => {
                let delay = Duration::from_millis(100 + dial * 10);
                for relay in relays(world, i, peer) {
                    relay.set_delay(delay);
                }
                return Ok(format!("{delay:?} a chunk"));
            }
            (kind, target) => anyhow::bail!("{kind:?} cannot aim at {target:?}"),
        }
        Ok(String::new())
    }

    fn heal(&self, world: &World, target: Target) -> anyhow::Result<()> {
        use Kind::*;
        match (self.kind, target) {
            (KillService | FreezeService, Target::Service(i)) => {
                world.services[i].lock().unwrap().restore()?
            }
            (KillNode, Target::Node(n)) => world.broker.restart(n)?,
            (FreezeNode, Target::Node(n)) => world.broker.signal(n, libc::SIGCONT)?,
            (MemoryAlarm, Target::Node(n)) => world
                .broker
                .ctl(n, &["set_vm_memory_high_watermark", "0.4"])
                .map(drop)?,
            (FailOver, _) => world.db.lock().unwrap().rebuild_standby()?,
            (FreezeDatabase, _) => world.db.lock().unwrap().freeze(libc::SIGCONT)?,
            (Partition | PacketLoss, Target::Link(i, _)) => {
                world.services[i].lock().unwrap().netns.heal()?
            }
            (Delay, Target::Link(i, peer)) => {
                for relay in relays(world, i, peer) {
                    relay.set_delay(Duration::ZERO);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn peer_ports(peer: Peer) -> Vec<u16> {
    match peer {
        Peer::Broker => NODES
            .iter()
            .map(|&n| super::broker::Broker::port(n))
            .collect(),
        Peer::Database => vec![super::world::DATABASE_RELAY_PORT],
    }
}

fn relays(world: &World, i: usize, peer: Peer) -> Vec<Arc<super::relay::Relay>> {
    match peer {
        Peer::Broker => world.broker_relays[i].clone(),
        Peer::Database => world.db_relays[i].iter().cloned().collect(),
    }
}
