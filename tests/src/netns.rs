//! Several hosts on one machine: each a network namespace with its own host name, joined
//! by veth pairs to a bridge in a namespace of its own, on a private /24. `mpirun` runs in
//! the first host and reaches the others through an rsh agent that runs `ip netns exec`
//! in place of ssh. Everything made is removed on drop, whatever happened; namespaces left
//! by an earlier test process that died are swept away first.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

/// Every namespace these tests make starts with this, then the making process's id.
pub const PREFIX: &str = "cpmpi-";

/// The hosts' private network.
pub const SUBNET: &str = "10.213.7.0/24";

/// The address of host `index` on [`SUBNET`].
pub fn address(index: usize) -> String {
    format!("10.213.7.{}", index + 1)
}

/// Runs `ip` with `args`; its standard error if it fails.
fn ip(args: &[&str]) -> Result<String, String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("ip {}: {error}", args.join(" ")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// Names of the namespaces that exist now.
fn namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Kills every process in namespace `name`, then removes it (its veth ends go with it).
fn remove_namespace(name: &str) {
    for pid in ip(&["netns", "pids", name]).unwrap_or_default().split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            // SAFETY: kill(2) on a process inside a namespace this harness made.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = ip(&["netns", "del", name]);
}

/// The namespaces that exist now whose names start with `tag`.
pub fn namespaces_tagged(tag: &str) -> Vec<String> {
    namespaces().into_iter().filter(|name| name.starts_with(tag)).collect()
}

/// Removes the namespaces of earlier test processes that are gone.
pub fn sweep_leftovers() {
    for name in namespaces() {
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let owner = rest.split('-').next().and_then(|pid| pid.parse::<u32>().ok());
        if owner.is_none_or(|pid| !crate::alive(pid)) {
            remove_namespace(&name);
        }
    }
}

/// Why namespaces cannot be made here, if they cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some(String::from("network namespaces need root"));
    }
    for program in ["ip", "unshare"] {
        if !crate::mpi::on_path(program) {
            return Some(format!("`{program}` is not installed (apt-get install iproute2 util-linux)"));
        }
    }
    None
}

/// Hosts made of network namespaces, removed on drop.
pub struct Hosts {
    tag: String,
    count: usize,
    files: tempfile::TempDir,
}

impl Hosts {
    /// Makes `count` hosts named `node0`, `node1`, ... Err: why they could not be made.
    pub fn make(count: usize) -> Result<Hosts, String> {
        if let Some(reason) = unavailable() {
            return Err(reason);
        }
        sweep_leftovers();
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{PREFIX}{}-{serial}", std::process::id());
        let files = tempfile::tempdir().map_err(|error| error.to_string())?;
        let hosts = Hosts { tag, count, files };
        hosts.build()?;
        hosts.write_files()?;
        Ok(hosts)
    }

    fn build(&self) -> Result<(), String> {
        let bridge = self.bridge();
        ip(&["netns", "add", &bridge])?;
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
        for index in 0..self.count {
            let host = self.namespace(index);
            let port = format!("v{index}");
            ip(&["netns", "add", &host])?;
            ip(&["-n", &bridge, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host])?;
            ip(&["-n", &bridge, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &host, "addr", "add", &format!("{}/24", address(index)), "dev", "eth0"])?;
            ip(&["-n", &host, "link", "set", "eth0", "up"])?;
            ip(&["-n", &host, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    fn write_files(&self) -> Result<(), String> {
        let hostfile: String = (0..self.count).map(|index| format!("{} slots=1\n", address(index))).collect();
        std::fs::write(self.hostfile(), hostfile).map_err(|error| error.to_string())?;
        let cases: String = (0..self.count)
            .map(|index| {
                format!("    {}) ns={}; name={} ;;\n", address(index), self.namespace(index), host_name(index))
            })
            .collect();
        let agent = format!(
            "#!/bin/sh\n\
             # Stands in for ssh: runs the command in the host's namespace, under the host's name.\n\
             while [ \"${{1#-}}\" != \"$1\" ]; do shift; done\n\
             case \"$1\" in\n{cases}    *) echo \"no such host: $1\" >&2; exit 255 ;;\nesac\n\
             shift\n\
             exec ip netns exec \"$ns\" unshare --uts sh -c \"hostname $name && $*\"\n"
        );
        let path = self.agent();
        std::fs::write(&path, agent).map_err(|error| error.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(|error| error.to_string())
    }

    /// The namespace of host `index`.
    pub fn namespace(&self, index: usize) -> String {
        format!("{}-h{index}", self.tag)
    }

    fn bridge(&self) -> String {
        format!("{}-br", self.tag)
    }

    /// The hostfile: one slot on each host's address.
    pub fn hostfile(&self) -> PathBuf {
        self.files.path().join("hosts")
    }

    /// The rsh agent script that `mpirun` uses in place of ssh.
    pub fn agent(&self) -> PathBuf {
        self.files.path().join("netns-rsh")
    }

    /// `mpirun` in the first host, bounded by `timeout -k`, set to launch through the
    /// agent and to keep every byte (its own and the ranks') on [`SUBNET`]; one rank per
    /// host.
    pub fn mpirun_command(&self, limit_secs: u32) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace(0), "unshare", "--uts", "sh", "-c"])
            .arg(format!("hostname {} && exec \"$@\"", host_name(0)))
            .args(["sh", "timeout", "-k", "5", &limit_secs.to_string(), "mpirun", "--allow-run-as-root"])
            .arg("--hostfile")
            .arg(self.hostfile())
            .args(["--mca", "plm_rsh_agent"])
            .arg(self.agent())
            .args(["--mca", "plm_rsh_no_tree_spawn", "1", "--mca", "btl", "tcp,self"])
            .args(["--mca", "btl_tcp_if_include", SUBNET, "--mca", "oob_tcp_if_include", SUBNET])
            .args(["--mca", "mpi_yield_when_idle", "1", "-np", &self.count.to_string()])
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .stdin(Stdio::null());
        command
    }

    /// Takes host `index`'s link down, at the bridge: the host is cut off from the rest.
    pub fn cut(&self, index: usize) -> Result<(), String> {
        ip(&["-n", &self.bridge(), "link", "set", &format!("v{index}"), "down"]).map(drop)
    }

    /// Bytes host `index`'s link has (received, sent).
    pub fn link_bytes(&self, index: usize) -> (u64, u64) {
        let stats = ip(&["-n", &self.namespace(index), "-s", "-o", "link", "show", "dev", "eth0"]).unwrap_or_default();
        // One line: "... RX: bytes packets ... \    <rx> ... \    TX: bytes ... \    <tx> ...".
        let numbers: Vec<Vec<u64>> = stats
            .split('\\')
            .map(|part| part.split_whitespace().filter_map(|word| word.parse().ok()).collect())
            .collect();
        let after = |label: &str| {
            stats.split('\\').position(|part| part.contains(label)).and_then(|at| numbers.get(at + 1)?.first().copied())
        };
        (after("RX:").unwrap_or(0), after("TX:").unwrap_or(0))
    }

    /// Every address on host `index`, as `ip -o addr` shows them (`10.213.7.1/24`, ...).
    pub fn addresses(&self, index: usize) -> Vec<String> {
        ip(&["-n", &self.namespace(index), "-o", "addr", "show"])
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                let at = words.iter().position(|word| *word == "inet" || *word == "inet6")?;
                words.get(at + 1).map(|address| (*address).to_owned())
            })
            .collect()
    }

    /// Process ids still running in any of the hosts.
    pub fn processes(&self) -> Vec<u32> {
        (0..self.count)
            .flat_map(|index| {
                ip(&["netns", "pids", &self.namespace(index)])
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|pid| pid.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    }

    /// What every namespace of these hosts starts with.
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

/// Host `index`'s name.
pub fn host_name(index: usize) -> String {
    format!("node{index}")
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for index in 0..self.count {
            remove_namespace(&self.namespace(index));
        }
        remove_namespace(&self.bridge());
    }
}
