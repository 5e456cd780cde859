//! Everything the soak runs and the faults act on: the broker nodes, the database pair, the services in
//! their namespaces, and the relays between them. Its methods block (they run programs), so async code
//! calls them through `spawn_blocking`.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{
    broker::{Broker, NODES},
    net::Netns,
    postgres::Database,
    relay::Relay,
    services::Service,
};

/// Where the consumers reach the database primary, on the host's end of their veth.
pub const DATABASE_RELAY_PORT: u16 = 6432;
/// Each service listens on this port inside its namespace.
const HTTP_PORT: u16 = 8080;
pub const DATABASE: &str = "chaos";

pub struct World {
    pub broker: Broker,
    pub db: Mutex<Database>,
    /// Publishers first, then consumers.
    pub services: Vec<Mutex<Service>>,
    /// Per service, its relays to broker nodes 1, 2 and 3.
    pub broker_relays: Vec<Vec<Arc<Relay>>>,
    /// Per service, its relay to the database primary (consumers only).
    pub db_relays: Vec<Option<Arc<Relay>>>,
    pub queue: String,
}

/// Where the soak's pieces are.
pub struct Setup {
    pub repo: PathBuf,
    pub bin_dir: PathBuf,
    pub run_dir: PathBuf,
    pub queue: String,
    pub pg_ports: [u16; 2],
}

impl World {
    pub async fn build(setup: &Setup) -> anyhow::Result<Self> {
        let broker = Broker::new(setup.repo.clone());
        let (run_dir, ports) = (setup.run_dir.clone(), setup.pg_ports);
        let db = tokio::task::spawn_blocking(move || Database::create(&run_dir, ports)).await??;
        let primary: SocketAddr = ([127, 0, 0, 1], db.primary_port()).into();
        let mut world = Self {
            broker,
            db: Mutex::new(db),
            services: Vec::new(),
            broker_relays: Vec::new(),
            db_relays: Vec::new(),
            queue: setup.queue.clone(),
        };
        let roles = [
            ("publisher", 1),
            ("publisher", 2),
            ("consumer", 1),
            ("consumer", 2),
        ];
        for (index, (role, n)) in roles.into_iter().enumerate() {
            let tag = format!("{}{n}", &role[..1]);
            let netns = Arc::new(Netns::create(index as u8 + 1, &tag)?);
            let mut relays = Vec::new();
            let mut urls = Vec::new();
            for node in NODES {
                let port = Broker::port(node);
                let listen = SocketAddr::from((netns.host_ip, port));
                relays.push(Relay::start(listen, ([127, 0, 0, 1], port).into()).await?);
                urls.push(format!("amqp://guest:guest@{}:{port}/%2f", netns.host_ip));
            }
            let mut env = vec![
                ("AMQP_URL".to_owned(), urls.join(",")),
                ("QUEUE_NAME".to_owned(), setup.queue.clone()),
                ("QUEUE_SHARDS".to_owned(), "4".to_owned()),
            ];
            let db_relay = if role == "consumer" {
                // The partitioned table of RETENTION (hourly partitions at 24h), so that keyed retries
                // and the feed are proven on it; the soak is far shorter than the retention.
                env.push(("RETENTION".to_owned(), "24h".to_owned()));
                let listen = SocketAddr::from((netns.host_ip, DATABASE_RELAY_PORT));
                env.push((
                    "DATABASE_URL".to_owned(),
                    format!("postgres://postgres@{listen}/{DATABASE}"),
                ));
                Some(Relay::start(listen, primary).await?)
            } else {
                None
            };
            let name = format!("{role}-{n}");
            let service = Service::start(
                name.clone(),
                setup.bin_dir.join(role),
                netns,
                env,
                HTTP_PORT,
                setup.run_dir.join(format!("{name}.log")),
            )?;
            world.services.push(Mutex::new(service));
            world.broker_relays.push(relays);
            world.db_relays.push(db_relay);
        }
        Ok(world)
    }

    pub fn publisher_urls(&self) -> Vec<String> {
        self.services[..2]
            .iter()
            .map(|service| service.lock().unwrap().url())
            .collect()
    }

    pub fn consumer_urls(&self) -> Vec<String> {
        self.services[2..]
            .iter()
            .map(|service| service.lock().unwrap().url())
            .collect()
    }

    pub fn urls(&self) -> Vec<(String, String)> {
        self.services
            .iter()
            .map(|service| {
                let service = service.lock().unwrap();
                (service.name.clone(), service.url())
            })
            .collect()
    }

    pub fn service_name(&self, i: usize) -> String {
        self.services[i].lock().unwrap().name.clone()
    }

    /// Points every consumer's database relay at the primary.
    pub fn follow_primary(&self) {
        let port = self.db.lock().unwrap().primary_port();
        for relay in self.db_relays.iter().flatten() {
            relay.switch(([127, 0, 0, 1], port).into());
        }
    }

    /// Undoes whatever faults left behind: links healed, nodes continued and running, the database with a
    /// synchronous standby, every service continued and running.
    pub fn restore(&self) -> anyhow::Result<()> {
        for (i, service) in self.services.iter().enumerate() {
            service.lock().unwrap().netns.heal()?;
            for relay in self.broker_relays[i].iter().chain(self.db_relays[i].iter()) {
                relay.set_delay(Duration::ZERO);
            }
        }
        self.broker.restore()?;
        self.db.lock().unwrap().restore()?;
        self.follow_primary();
        for service in &self.services {
            service.lock().unwrap().restore()?;
        }
        Ok(())
    }

    /// Stops the services and relays, and the database; the namespaces go when the services drop.
    pub fn tear_down(&self) {
        for service in &self.services {
            service.lock().unwrap().kill();
        }
        for relay in self
            .broker_relays
            .iter()
            .flatten()
            .chain(self.db_relays.iter().flatten())
        {
            relay.stop();
        }
        self.db.lock().unwrap().stop_all();
    }
}
