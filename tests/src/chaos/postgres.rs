//! The soak's own PostgreSQL: a primary and a synchronous hot standby on two ports of their own, run as the
//! `postgres` user from the machine's `/usr/lib/postgresql/<version>/bin`. A failover stops the primary as a
//! crash would, promotes the standby, and later rebuilds a standby from the new primary with
//! `pg_basebackup`, so that the next failover works too. The machine's own PostgreSQL is never touched.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use super::net::output;

/// One data directory and the port it serves on, whichever role it has.
struct Slot {
    data: PathBuf,
    port: u16,
}

pub struct Database {
    bin: PathBuf,
    run_dir: PathBuf,
    slots: [Slot; 2],
    primary: usize,
    /// Whether a standby streams from the primary (false between a failover and the rebuild).
    pub has_standby: bool,
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL's server tools in /usr/lib/postgresql")?
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
    });
    versions
        .pop()
        .context("no /usr/lib/postgresql/*/bin/initdb")
}

impl Database {
    /// Initialises, starts and pairs both instances under `run_dir`, on `ports`.
    pub fn create(run_dir: &Path, ports: [u16; 2]) -> anyhow::Result<Self> {
        let slot = |i: usize| Slot {
            data: run_dir.join(format!("pg{i}")),
            port: ports[i],
        };
        let mut db = Self {
            bin: bin_dir()?,
            run_dir: run_dir.to_owned(),
            slots: [slot(0), slot(1)],
            primary: 0,
            has_standby: false,
        };
        let data = db.slots[0]
            .data
            .to_str()
            .context("a UTF-8 path")?
            .to_owned();
        db.pg(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        )?;
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n\
             max_connections = 200\nwal_keep_size = '2GB'\nshared_buffers = '128MB'\n",
            run_dir.display()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(db.slots[0].data.join("postgresql.conf"))
            .and_then(|mut file| std::io::Write::write_all(&mut file, conf.as_bytes()))
            .context("configuring the primary")?;
        db.start(0)?;
        db.rebuild_standby()?;
        Ok(db)
    }

    /// `tool args` as the `postgres` user (PostgreSQL refuses to run as root).
    fn pg(&self, tool: &str, args: &[&str]) -> anyhow::Result<String> {
        output(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join(tool))
                .args(args),
        )
    }

    fn start(&self, i: usize) -> anyhow::Result<()> {
        let slot = &self.slots[i];
        let log = self.run_dir.join(format!("pg{i}.log"));
        self.pg(
            "pg_ctl",
            &[
                "-D",
                slot.data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &format!("-p {}", slot.port),
                "-w",
                "-t",
                "120",
                "start",
            ],
        )?;
        Ok(())
    }

    fn stop(&self, i: usize, mode: &str) -> anyhow::Result<()> {
        self.pg(
            "pg_ctl",
            &[
                "-D",
                self.slots[i].data.to_str().unwrap(),
                "-m",
                mode,
                "-w",
                "stop",
            ],
        )?;
        Ok(())
    }

    fn sql(&self, i: usize, statement: &str) -> anyhow::Result<String> {
        output(Command::new("psql").args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.slots[i].port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-Atqc",
            statement,
        ]))
    }

    pub fn primary_port(&self) -> u16 {
        self.slots[self.primary].port
    }

    /// The URL of database `name` on the primary, for the checker.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.primary_port()
        )
    }

    /// Restarts the primary, `fast` (rolling back sessions) or `immediate` (a crash, then recovery).
    pub fn restart_primary(&self, mode: &str) -> anyhow::Result<()> {
        let _ = self.stop(self.primary, mode);
        self.start(self.primary)
    }

    /// Stops (`SIGSTOP`) or continues (`SIGCONT`) the primary's postmaster and every backend: a frozen
    /// database, whose sockets stay open and silent.
    pub fn freeze(&self, signal: i32) -> anyhow::Result<()> {
        let pid_file = self.slots[self.primary].data.join("postmaster.pid");
        let postmaster: i32 = std::fs::read_to_string(&pid_file)?
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .context("postmaster.pid")?;
        let mut pids = vec![postmaster];
        pids.extend(children_of(postmaster));
        if signal == libc::SIGCONT {
            pids.reverse();
        }
        for pid in pids {
            // SAFETY: signalling processes of the soak's own PostgreSQL instance.
            unsafe { libc::kill(pid, signal) };
        }
        Ok(())
    }

    /// A crash of the primary and the promotion of its synchronous standby; returns the new primary's
    /// port. The old primary's directory is rebuilt as a standby by [`Self::rebuild_standby`].
    pub fn fail_over(&mut self) -> anyhow::Result<u16> {
        if !self.has_standby {
            bail!("no standby to promote");
        }
        let _ = self.freeze(libc::SIGCONT);
        let _ = self.stop(self.primary, "immediate");
        let standby = 1 - self.primary;
        self.pg(
            "pg_ctl",
            &[
                "-D",
                self.slots[standby].data.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "promote",
            ],
        )?;
        self.primary = standby;
        self.has_standby = false;
        Ok(self.primary_port())
    }

    /// Makes the other slot a fresh standby of the primary, then makes it synchronous. The copy is made
    /// before `synchronous_standby_names` is set, so the standby does not inherit it (a promoted standby
    /// that did would wait for a standby of its own before committing anything).
    pub fn rebuild_standby(&mut self) -> anyhow::Result<()> {
        let standby = 1 - self.primary;
        let _ = self.stop(standby, "immediate");
        let data = self.slots[standby].data.clone();
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        self.sql(self.primary, "ALTER SYSTEM RESET synchronous_standby_names")?;
        self.sql(self.primary, "SELECT pg_reload_conf()")?;
        self.pg(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.primary_port().to_string(),
                "-U",
                "postgres",
                "-D",
                data.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        )?;
        self.start(standby)?;
        self.sql(
            self.primary,
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
        )?;
        self.sql(self.primary, "SELECT pg_reload_conf()")?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while self
            .sql(self.primary, "SELECT sync_state FROM pg_stat_replication")
            .map_or(true, |state| state.trim() != "sync")
        {
            if Instant::now() > deadline {
                bail!("the standby did not become synchronous within 120 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.has_standby = true;
        Ok(())
    }

    /// Whatever a fault left: the primary continued and running, and a synchronous standby beside it.
    pub fn restore(&mut self) -> anyhow::Result<()> {
        let _ = self.freeze(libc::SIGCONT);
        if self.sql(self.primary, "SELECT 1").is_err() {
            let _ = self.start(self.primary);
        }
        let synchronous = self
            .sql(self.primary, "SELECT sync_state FROM pg_stat_replication")
            .is_ok_and(|state| state.trim() == "sync");
        if !synchronous {
            self.rebuild_standby()?;
        }
        Ok(())
    }

    pub fn stop_all(&self) {
        let _ = self.freeze(libc::SIGCONT);
        for i in 0..2 {
            let _ = self.stop(i, "immediate");
        }
    }
}

/// Processes whose parent is `parent`, from `/proc`.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let ppid: i32 = status
                .lines()
                .find_map(|line| line.strip_prefix("PPid:"))?
                .trim()
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

impl Drop for Database {
    fn drop(&mut self) {
        self.stop_all();
    }
}
