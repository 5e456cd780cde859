//! Network namespaces of the soak's own, one per service, each joined to the host by a veth pair on a
//! private /30. Faults on a service's links to its peers are nftables rules inside its namespace, so they
//! touch that service's traffic only: dropped packets (a partition: no RST, no FIN, only silence) or a
//! share of them lost at random. Deleting the namespace removes the veth pair and the rules with it.

use std::{
    net::Ipv4Addr,
    process::{Command, Stdio},
};

use anyhow::{bail, Context};

/// Runs `program args`, failing with its standard error when it does not succeed.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    output(Command::new(program).args(args))
}

/// Runs `command`, failing with its standard error when it does not succeed.
pub fn output(command: &mut Command) -> anyhow::Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Prefix of every namespace and veth the soak makes, so a leftover can be found and removed.
pub const PREFIX: &str = "chaos-";

pub struct Netns {
    pub name: String,
    /// The host's end of the veth pair: where the service reaches its peers' relays.
    pub host_ip: Ipv4Addr,
    /// The service's end: where clients reach the service.
    pub ns_ip: Ipv4Addr,
}

impl Netns {
    /// Namespace `chaos-<tag>` on 10.77.<index>.0/30.
    pub fn create(index: u8, tag: &str) -> anyhow::Result<Self> {
        let name = format!("{PREFIX}{tag}");
        let (host_if, ns_if) = (format!("chv-{tag}-h"), format!("chv-{tag}-n"));
        let (host_ip, ns_ip) = (
            Ipv4Addr::new(10, 77, index, 1),
            Ipv4Addr::new(10, 77, index, 2),
        );
        let _ = run("ip", &["netns", "del", &name]);
        run("ip", &["netns", "add", &name])?;
        let netns = Self {
            name,
            host_ip,
            ns_ip,
        };
        run(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ],
        )?;
        run("ip", &["link", "set", &ns_if, "netns", &netns.name])?;
        run(
            "ip",
            &["addr", "add", &format!("{host_ip}/30"), "dev", &host_if],
        )?;
        run("ip", &["link", "set", &host_if, "up"])?;
        netns.exec(
            "ip",
            &["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if],
        )?;
        netns.exec("ip", &["link", "set", &ns_if, "up"])?;
        netns.exec("ip", &["link", "set", "lo", "up"])?;
        netns.nft("add table inet chaos")?;
        netns.nft(
            "add chain inet chaos out { type filter hook output priority 0; policy accept; }",
        )?;
        netns
            .nft("add chain inet chaos in { type filter hook input priority 0; policy accept; }")?;
        Ok(netns)
    }

    /// `program args` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        output(self.command(program).args(args))
    }

    fn nft(&self, rule: &str) -> anyhow::Result<String> {
        self.exec("nft", &[rule])
    }

    /// Drops `percent` % of the packets between the service and the host's `ports` (100: all of them),
    /// both ways.
    pub fn drop_packets(&self, ports: &[u16], percent: u64) -> anyhow::Result<()> {
        let ports = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let share = if percent >= 100 {
            String::new()
        } else {
            format!("numgen random mod 100 < {percent} ")
        };
        let host = self.host_ip;
        self.nft(&format!(
            "add rule inet chaos out ip daddr {host} tcp dport {{ {ports} }} {share}drop"
        ))?;
        self.nft(&format!(
            "add rule inet chaos in ip saddr {host} tcp sport {{ {ports} }} {share}drop"
        ))?;
        Ok(())
    }

    /// Lets every packet through again.
    pub fn heal(&self) -> anyhow::Result<()> {
        self.nft("flush chain inet chaos out")?;
        self.nft("flush chain inet chaos in")?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}
