//! The command line as typed: clap definitions only, no behaviour.
//!
//! This is the first stage of configuration (ripgrep's "low" arguments): flags and
//! paths as given. `app.rs` turns them into a validated `Config` and a `Plan` before
//! anything is touched.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "rookery",
    version,
    about = "Ship a build artifact to many hosts over BitTorrent, then restart its services in dependency order without losing quorum",
    long_about = "rookery distributes a build directory to every host of an inventory over rack-aware \
BitTorrent, registers the result in a coordination store (ZooKeeper, or a local store for the \
embedded default), and rolls services to the new release in dependency order, batch by batch, \
never dropping a service below its quorum.\n\nStart with `rookery plan -i INVENTORY PLAYBOOK`: it \
validates both files and prints what a deploy would do, touching nothing.",
    after_help = "Exit codes: 0 ok, 1 failed, 2 usage, 3 invalid inventory or playbook, 4 some hosts failed, 5 deploy lock held, 7 a host key did not match known_hosts (nothing ran), 8 deploy stopped before its end (run it again to resume), 130 interrupted. See docs/exit-codes.md."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand accepts.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Inventory file (hosts, racks, datacenters, transport, coordination)
    #[arg(
        short,
        long,
        global = true,
        env = "ROOKERY_INVENTORY",
        value_name = "FILE"
    )]
    pub inventory: Option<PathBuf>,
    /// Only these hosts: names, globs, `dc:NAME`, `rack:DC/RACK`, `group:NAME`, `label:K=V`; `,` unions, `&` intersects, `!` excludes
    #[arg(short, long, global = true, value_name = "PATTERN")]
    pub limit: Option<String>,
    /// Print machine-readable JSON on stdout instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// Diagnostics on stderr: -v rookery's steps, -vv their details, -vvv the BitTorrent engine's too (ROOKERY_LOG overrides)
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Args, Clone)]
pub struct PlanArgs {
    /// Playbook file (artifact, distribution, services)
    #[arg(value_name = "PLAYBOOK")]
    pub playbook: PathBuf,
    /// The artifact's size for the estimate, when its source is not on this machine
    /// (default: the size of the source directory, when it is here)
    #[arg(long, value_name = "SIZE")]
    pub artifact_size: Option<String>,
}

/// A playbook run against the hosts: distribute, deploy, rollout, reconcile.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Playbook file (artifact, distribution, services)
    #[arg(value_name = "PLAYBOOK")]
    pub playbook: PathBuf,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// How the controller reaches hosts.
#[derive(Debug, Args, Clone)]
pub struct RemoteArgs {
    /// Hosts connected to or bootstrapped at once (fetches run on every host together; a batch restarts its hosts together, up to the service's max_parallel)
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub forks: u32,
    /// Record the key of a host not yet in known_hosts (like StrictHostKeyChecking=accept-new); a changed key is still refused
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// The address hosts reach this machine at, for the tracker and the origin seeder (default: the local address of the SSH connections)
    #[arg(long, value_name = "IP")]
    pub advertise: Option<std::net::IpAddr>,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Distribute the artifact, then roll every service to it
    Deploy(RunArgs),
    /// Validate inventory and playbook and print what a deploy would do; touches nothing
    Plan(PlanArgs),
    /// Copy the artifact to every host (BitTorrent), without restarting anything
    Distribute(RunArgs),
    /// Restart services on the distributed release, in dependency order, keeping quorum
    Rollout(RolloutArgs),
    /// Show live and staged versions, releases, the deploy lock and the last deploy
    Status(StatusArgs),
    /// Model a distribution over a generated topology (thousands of hosts) and predict its time
    Simulate(SimulateArgs),
    /// Return services to their previous release, keeping quorum
    Rollback(RollbackArgs),
    /// Bring hosts that missed a deploy to the version most of their service runs
    Reconcile(ReconcileArgs),
    /// Create or inspect BitTorrent metainfo
    #[command(subcommand)]
    Torrent(TorrentCommand),
    /// Run the rack-aware tracker on its own
    Tracker(TrackerArgs),
    /// Host-side commands, started by rookery over SSH
    #[command(subcommand, hide = true)]
    Agent(AgentCommand),
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout
    Man,
}

#[derive(Debug, Args, Clone)]
pub struct RolloutArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The release to roll to (default: the version staged by the last distribution)
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    /// Playbook whose services to show, with the releases on each host (default: every service in the coordination store)
    #[arg(value_name = "PLAYBOOK")]
    pub playbook: Option<PathBuf>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args, Clone)]
pub struct SimulateArgs {
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub hosts: usize,
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub datacenters: usize,
    /// Racks per datacenter
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub racks: usize,
    /// Artifact size
    #[arg(long, value_name = "SIZE", default_value = "10GiB")]
    pub size: String,
    /// Piece size (default: chosen from the size, as for a real deploy)
    #[arg(long, value_name = "SIZE")]
    pub piece_size: Option<String>,
    /// Each host's link, each way
    #[arg(long, value_name = "RATE", default_value = "10Gbit/s")]
    pub link: String,
    /// Each rack's uplink (default: unlimited)
    #[arg(long, value_name = "RATE")]
    pub uplink: Option<String>,
    /// Each datacenter's interconnect (default: unlimited)
    #[arg(long, value_name = "RATE")]
    pub interconnect: Option<String>,
    /// Upload cap of every host (the playbook's upload_limit)
    #[arg(long, value_name = "RATE")]
    pub upload_limit: Option<String>,
    /// Fraction of hosts that fail during the transfer (0.01 = 1%)
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub fail: f64,
    /// Fraction of the artifact in files unchanged since the last release (their
    /// hashes are reused, not read again)
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub unchanged: f64,
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// How the tracker arranges hosts: `chain` (sharing: pipeline) or `stripes`
    #[arg(long, value_name = "SHAPE", default_value = "chain")]
    pub topology: String,
    /// Stripes of `--topology stripes`
    #[arg(long, value_name = "N", default_value_t = crate::config::playbook::DEFAULT_STRIPES)]
    pub stripes: usize,
    /// Seconds from a host's failure until those it fed are re-linked (default: 3
    /// for either shape, what the tracker's timings give)
    #[arg(long, value_name = "SECONDS")]
    pub detect: Option<f64>,
}

#[derive(Debug, Args, Clone)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Print the host moves it would make, and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args, Clone)]
pub struct RollbackArgs {
    #[arg(value_name = "PLAYBOOK")]
    pub playbook: PathBuf,
    /// Only this service (repeatable; default: all services of the playbook)
    #[arg(long, value_name = "NAME")]
    pub service: Vec<String>,
    /// Print the host moves it would make, and change nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Subcommand)]
pub enum TorrentCommand {
    /// Write deterministic BitTorrent v1 metainfo for a directory
    Create {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Output file
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Piece size (e.g. `4MiB`); default: chosen from the total size
        #[arg(long, value_name = "SIZE")]
        piece_size: Option<String>,
        /// Announce URL of the tracker
        #[arg(long, value_name = "URL")]
        tracker: Option<String>,
        /// Ship setuid and setgid bits as they are (refused by default)
        #[arg(long)]
        keep_special_bits: bool,
        /// Metainfo of the release before: files whose content it held keep its
        /// order and changes go last, so hosts that have it fetch little more than
        /// the changed bytes
        #[arg(long, value_name = "FILE")]
        previous: Option<PathBuf>,
    },
    /// Print the contents of a metainfo file
    Inspect {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Debug, Args, Clone)]
pub struct TrackerArgs {
    /// Address to listen on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6969")]
    pub listen: String,
    /// Metainfo files whose swarms the tracker serves (at least one)
    #[arg(long = "torrent", value_name = "FILE", required = true)]
    pub torrents: Vec<PathBuf>,
    /// Peer lists for rookery agents: `pipeline` (chain), `stripes` (striped trees) or
    /// `mesh`
    #[arg(long, value_name = "MODE", default_value = "pipeline")]
    pub sharing: String,
    /// Stripes of `--sharing stripes` (5 to 64)
    #[arg(long, value_name = "N", default_value_t = crate::config::playbook::DEFAULT_STRIPES)]
    pub stripes: usize,
    /// Re-announce interval told to clients
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    pub interval: String,
    /// Only these inventory hosts take part (repeatable; default: every host). A chain
    /// member that never announces holds up its successor until it is skipped.
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// Stop when stdin reaches end of file (started over SSH by the controller: the run ends, or the connection drops)
    #[arg(long)]
    pub until_stdin_closes: bool,
}

/// How an agent takes part in the swarm.
#[derive(Debug, Args, Clone)]
pub struct SwarmArgs {
    /// Metainfo file of the release
    #[arg(long, value_name = "FILE")]
    pub torrent: PathBuf,
    /// This host's inventory name (reports, and `host=` on announces)
    #[arg(long, value_name = "NAME")]
    pub host: String,
    /// Address the BitTorrent engine listens on
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:6881")]
    pub listen: String,
    /// Announce URL of rookery's tracker
    #[arg(long, value_name = "URL")]
    pub tracker: Option<String>,
    /// A peer to connect to without a tracker (repeatable)
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<String>,
    /// Peer connections at most
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_peers: u32,
    /// Upload cap (`50MiB/s`, `400Mbit/s`, `unlimited`)
    #[arg(long, value_name = "RATE", default_value = "unlimited")]
    pub upload_limit: String,
    /// Download cap (`50MiB/s`, `400Mbit/s`, `unlimited`)
    #[arg(long, value_name = "RATE", default_value = "unlimited")]
    pub download_limit: String,
    /// Striped fetching over N stripes: each peer is asked only for the stripes the
    /// tracker names it for (none until it does)
    #[arg(long, value_name = "N")]
    pub stripes: Option<usize>,
}

#[derive(Debug, Args, Clone)]
pub struct FetchArgs {
    #[command(flatten)]
    pub swarm: SwarmArgs,
    /// Destination root (`releases/<version>` goes under it)
    #[arg(long, value_name = "DIR")]
    pub destination: PathBuf,
    /// Release version (directory name under `releases/`)
    #[arg(long, value_name = "VERSION")]
    pub version: String,
    /// The origin's address, to count its bytes apart (`IP` or `IP:PORT`)
    #[arg(long, value_name = "ADDR")]
    pub origin: Option<String>,
    /// Keep seeding this long after the copy is verified
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub seed_window: String,
    /// `fixed`, or `adaptive` (stop once the rack has the copy, extend while peers need it)
    #[arg(long, value_name = "MODE", default_value = "fixed")]
    pub seed_mode: String,
    /// Longest seeding in adaptive mode
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub seed_window_max: String,
    /// Give up when nothing arrives for this long
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub stall_timeout: String,
    /// Drop the new release's pages from the page cache once verified
    #[arg(long)]
    pub drop_after_write: bool,
    /// mlock files of the current release matching this glob while fetching (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub lock_current: Vec<String>,
    /// Read the new release into the page cache once installed
    #[arg(long)]
    pub preload: bool,
    /// Stay attached: seed in this process instead of forking into the background
    #[arg(long)]
    pub foreground: bool,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Fetch a release over BitTorrent, verify it, install it, then seed for a while
    Fetch(FetchArgs),
    /// Serve a directory read-only to the swarm (the origin)
    Seed {
        #[command(flatten)]
        swarm: SwarmArgs,
        /// The tree the metainfo was made from
        #[arg(long, value_name = "DIR")]
        source: PathBuf,
        /// Stop after this long (default: until interrupted)
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        /// Stop when stdin reaches end of file (started over SSH by the controller)
        #[arg(long)]
        until_stdin_closes: bool,
    },
    /// Run a service under supervision and register it as live while healthy
    Run(RunServiceArgs),
    /// Stop a service, point `current` at a release, start it there (idempotent)
    Switch(SwitchArgs),
    /// Start the services this host ran (at boot), optionally catching up
    Start(StartArgs),
    /// List the releases of a destination and what `current` points to (JSON)
    Releases {
        #[arg(long, value_name = "DIR")]
        destination: PathBuf,
    },
    /// Remove old releases, keeping the newest N and never the current or previous
    Prune {
        #[arg(long, value_name = "DIR")]
        destination: PathBuf,
        #[arg(long, value_name = "N")]
        keep: u32,
        /// The release `current` pointed to before the deploy (kept)
        #[arg(long, value_name = "VERSION")]
        previous: Option<String>,
    },
}

/// `rookery agent run`: one service instance under supervision.
#[derive(Debug, Args, Clone)]
pub struct RunServiceArgs {
    #[arg(long, value_name = "NAME")]
    pub service: String,
    /// This host's inventory name
    #[arg(long, value_name = "NAME")]
    pub host: String,
    /// The release version the instance runs
    #[arg(long, value_name = "VERSION")]
    pub version: String,
    /// The release directory (working directory of the service)
    #[arg(long, value_name = "DIR")]
    pub release: PathBuf,
    #[command(flatten)]
    pub health: HealthArgs,
    /// Return once the instance is healthy and registered; supervise in the background
    #[arg(long)]
    pub detach: bool,
    /// Log file of a detached supervisor
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Where the supervisor records its pid (default: `<release>/../../.rookery/run/<service>.json`)
    #[arg(long, value_name = "FILE")]
    pub run_file: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// The service command: one shell command line, or a program and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// How a supervisor checks its service.
#[derive(Debug, Args, Clone, serde::Serialize, serde::Deserialize)]
pub struct HealthArgs {
    /// Health check, a shell command line; none: live as soon as started
    #[arg(long, value_name = "CMD")]
    pub health: Option<String>,
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    pub health_interval: String,
    /// Fail (and stop the service) if it is not healthy this long after it started
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub health_deadline: String,
}

/// Which coordination store a host-side command opens.
#[derive(Debug, Args, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoreArgs {
    /// Cluster name (for messages)
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub cluster: String,
    /// The local coordination store (a directory on this machine)
    #[arg(long, value_name = "DIR", conflicts_with = "zookeeper")]
    pub local_store: Option<PathBuf>,
    /// ZooKeeper connect string
    #[arg(long, value_name = "HOSTS", requires = "zk_root")]
    pub zookeeper: Option<String>,
    /// The cluster's root znode
    #[arg(long, value_name = "PATH")]
    pub zk_root: Option<String>,
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub session_timeout: String,
}

/// `rookery agent switch`: make one service on this host run one release.
///
/// `--start`, `--stop` and `--health` are the playbook's templates, filled in here:
/// `{version}`, `{release}`, `{current}` and `{destination}` by the switch (`--stop`
/// for the release that runs now), the others from `--var`. The switch keeps its
/// arguments in `<destination>/.rookery/services/<service>.json`, so that `agent
/// start` can start the service again after a reboot, on any release.
#[derive(Debug, Args, Clone, serde::Serialize, serde::Deserialize)]
pub struct SwitchArgs {
    #[arg(long, value_name = "NAME")]
    pub service: String,
    /// This host's inventory name
    #[arg(long, value_name = "NAME")]
    pub host: String,
    /// The release to run (a directory under `<destination>/releases/`)
    #[arg(long, value_name = "VERSION")]
    pub version: String,
    /// The artifact's destination root on this host
    #[arg(long, value_name = "DIR")]
    pub destination: PathBuf,
    /// Graceful stop command for the running instance (a shell command line)
    #[arg(long, value_name = "CMD")]
    pub stop: Option<String>,
    /// The start command (a shell command line run in the release directory)
    #[arg(long, value_name = "CMD")]
    pub start: String,
    /// A placeholder's value, such as `host=web-1` or `rack=east/r1` (repeatable)
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    #[command(flatten)]
    pub health: HealthArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Switching back: run the version with the commands and health check its own
    /// last successful switch on this host used (kept under `.rookery/services/`),
    /// not the given ones, which belong to the release being left (a broken health
    /// check of a new playbook must not fail the way back); the given ones serve
    /// only when none was kept
    #[arg(long)]
    #[serde(default, skip_serializing)]
    pub restore: bool,
}

/// `rookery agent start`: start the services a host ran, after a reboot.
#[derive(Debug, Args, Clone)]
pub struct StartArgs {
    /// The artifact's destination root on this host
    #[arg(long, value_name = "DIR")]
    pub destination: PathBuf,
    /// Only these services (default: every service switched on this host)
    #[arg(long, value_name = "NAME")]
    pub service: Vec<String>,
    /// Start the version most live instances of the service run elsewhere, when its
    /// release is on this host (seed 001's catch-up), instead of the last one switched to
    #[arg(long)]
    pub catch_up: bool,
}
