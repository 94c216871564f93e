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
    after_help = "Exit codes: 0 ok, 1 failed, 2 usage, 3 invalid inventory or playbook, 4 some hosts failed, 5 deploy lock held, 7 a host key did not match known_hosts (nothing ran), 8 deploy stopped before its end (run it again to resume), 9 canaries baked and waiting for `rollout --promote`, 130 interrupted. See docs/exit-codes.md."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// The shared flags as they may also be written before the subcommand
/// (`rookery -i INV plan PB`); each subcommand accepts the ones that apply to it
/// after its name too, and `Cli::global` merges the two places.
#[derive(Debug, Args, Clone, Default)]
pub struct Global {
    /// Inventory file (hosts, racks, datacenters, transport, coordination; default: $ROOKERY_INVENTORY)
    #[arg(short, long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// Only these hosts: names, globs, `dc:NAME`, `rack:DC/RACK`, `group:NAME`, `label:K=V`; `,` unions, `&` intersects, `!` excludes
    #[arg(short, long, value_name = "PATTERN")]
    pub limit: Option<String>,
    /// Print machine-readable JSON on stdout instead of text
    #[arg(long)]
    pub json: bool,
    /// Diagnostics on stderr: -v rookery's steps, -vv their details, -vvv the BitTorrent engine's too (ROOKERY_LOG overrides)
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors
    #[arg(short, long)]
    pub quiet: bool,
}

/// The inventory, for subcommands that read one.
#[derive(Debug, Args, Clone, Default)]
pub struct InventoryArg {
    /// Inventory file (hosts, racks, datacenters, transport, coordination)
    #[arg(short, long, env = "ROOKERY_INVENTORY", value_name = "FILE")]
    pub inventory: Option<PathBuf>,
}

/// The inventory and the hosts of it a command acts on.
#[derive(Debug, Args, Clone, Default)]
pub struct HostsArgs {
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// Only these hosts: names, globs, `dc:NAME`, `rack:DC/RACK`, `group:NAME`, `label:K=V`; `,` unions, `&` intersects, `!` excludes
    #[arg(short, long, value_name = "PATTERN")]
    pub limit: Option<String>,
}

/// What a command prints: JSON or text, and how much on stderr.
#[derive(Debug, Args, Clone, Default)]
pub struct OutputArgs {
    /// Print machine-readable JSON on stdout instead of text
    #[arg(long)]
    pub json: bool,
    /// Diagnostics on stderr: -v rookery's steps, -vv their details, -vvv the BitTorrent engine's too (ROOKERY_LOG overrides)
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args, Clone)]
pub struct PlanArgs {
    /// Playbook file (artifact, distribution, services)
    #[arg(value_name = "PLAYBOOK")]
    pub playbook: PathBuf,
    #[command(flatten)]
    pub hosts: HostsArgs,
    /// The artifact's size for the estimate, when its source is not on this machine
    /// (default: the size of the source directory, when it is here)
    #[arg(long, value_name = "SIZE")]
    pub artifact_size: Option<String>,
    #[command(flatten)]
    pub out: OutputArgs,
}

/// `rookery prepare`: the artifact hashed ahead of a deploy.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Playbook file (artifact, distribution, services)
    #[arg(value_name = "PLAYBOOK")]
    pub playbook: PathBuf,
    #[command(flatten)]
    pub inventory: InventoryArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

/// A playbook run against the hosts: distribute, deploy, rollout, reconcile.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Playbook file (artifact, distribution, services)
    #[arg(value_name = "PLAYBOOK")]
    pub playbook: PathBuf,
    #[command(flatten)]
    pub hosts: HostsArgs,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub out: OutputArgs,
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
    /// Hash the artifact where the origin is, ahead of `distribute` or `deploy`, which
    /// then reuse the hashes of every file unchanged since
    Prepare(PrepareArgs),
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
    Agent(crate::agent::request::AgentCommand),
    /// Print a shell completion script
    Completions {
        /// The shell the script is for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff) on stdout: rookery's, or one subcommand's; or write
    /// every page into a directory
    Man {
        /// The subcommand (`deploy`, `torrent create`, `agent start`, ...)
        #[arg(value_name = "SUBCOMMAND", num_args = 0..)]
        subcommand: Vec<String>,
        /// Write `rookery.1` and `rookery-SUBCOMMAND.1` for every subcommand here
        #[arg(long, value_name = "DIR", conflicts_with = "subcommand")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args, Clone)]
pub struct RolloutArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The release to roll to (default: the version staged by the last distribution)
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    /// Promote the canaries of the deploy waiting for promotion (exit 9), and go on
    #[arg(long)]
    pub promote: bool,
}

#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    /// Playbook whose services to show, with the releases on each host (default: every service in the coordination store)
    #[arg(value_name = "PLAYBOOK")]
    pub playbook: Option<PathBuf>,
    #[command(flatten)]
    pub hosts: HostsArgs,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args, Clone)]
pub struct SimulateArgs {
    /// Hosts of the generated fleet
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub hosts: usize,
    /// Datacenters the hosts are spread over
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
    /// How fast the origin reads the artifact (e.g. `1GB/s` from a disk, when a build
    /// prepared long before is no longer in its page cache; default: its link is the bound)
    #[arg(long, value_name = "RATE")]
    pub origin_read: Option<String>,
    /// Fraction of hosts that fail during the transfer (0.01 = 1%)
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub fail: f64,
    /// Fraction of the artifact in files unchanged since the last release and laid
    /// out before every changed one (a release that adds files, or changes files in
    /// place at their length): their hashes are reused, not read again. A change of
    /// length early in the layout shifts what follows, whose pieces are hashed again
    /// (model spread changes as 0). 1: the artifact was hashed ahead (`rookery
    /// prepare`)
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub unchanged: f64,
    /// Seed of the random choices (which hosts fail, when), for repeatable runs
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// How the tracker arranges hosts: `chain` (sharing: pipeline) or `stripes`
    #[arg(long, value_name = "SHAPE", default_value = "chain")]
    pub topology: String,
    /// Stripes of `--topology stripes`
    #[arg(long, value_name = "N", default_value_t = crate::config::playbook::DEFAULT_STRIPES)]
    pub stripes: usize,
    /// Seconds from a host's failure until those it fed are re-linked (default 1.7,
    /// what the tracker's timings give: those it fed report it once its connection
    /// drops or it stalls, and it is given up after 1.5 s of silence)
    #[arg(long, value_name = "SECONDS")]
    pub detect: Option<f64>,
    /// Kill host hH (h1 is the first) once a third of the artifact has reached it,
    /// as `bench/swarm.sh --kill H` does
    #[arg(long, value_name = "H")]
    pub kill: Option<usize>,
    /// Seconds each hop adds beyond its piece (announce, request, queues); the
    /// default is what the shaped benchmark measured
    #[arg(long, value_name = "SECONDS", default_value_t = crate::plan::estimate::HOP_LAG_SECONDS)]
    pub hop_lag: f64,
    /// Seconds over which the agents come up, each at a random moment (by --seed):
    /// bench/swarm.sh reports the spread it saw (48 agents: 0.1 to 0.4 s)
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub start_spread: f64,
    #[command(flatten)]
    pub out: OutputArgs,
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
    /// Playbook file (artifact, distribution, services)
    #[arg(value_name = "PLAYBOOK")]
    pub playbook: PathBuf,
    #[command(flatten)]
    pub hosts: HostsArgs,
    /// Only this service (repeatable; default: all services of the playbook)
    #[arg(long, value_name = "NAME")]
    pub service: Vec<String>,
    /// Print the host moves it would make, and change nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

/// `rookery torrent create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The artifact: the directory whose files the metainfo describes
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Output file
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Piece size (e.g. `4MiB`); default: chosen from the total size
    #[arg(long, value_name = "SIZE")]
    pub piece_size: Option<String>,
    /// Announce URL of the tracker
    #[arg(long, value_name = "URL")]
    pub tracker: Option<String>,
    /// Ship setuid and setgid bits as they are (refused by default)
    #[arg(long)]
    pub keep_special_bits: bool,
    /// Metainfo of the release before: files whose content it held keep its
    /// order and changes go last, so hosts that have it fetch little more than
    /// the changed bytes
    #[arg(long, value_name = "FILE")]
    pub previous: Option<PathBuf>,
    /// Start from the output file of the last `--reuse` run, if it is there: lay the
    /// tree out after it (as `--previous`) and take the hashes of files unchanged
    /// since then (size, times, inode) instead of reading them; keep what this run
    /// read beside the output (`FILE.stats.json`) for the next one
    #[arg(long, conflicts_with = "previous")]
    pub reuse: bool,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum TorrentCommand {
    /// Write deterministic BitTorrent v1 metainfo for a directory
    Create(CreateArgs),
    /// Print the contents of a metainfo file
    Inspect {
        /// The metainfo (`.torrent`) file
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        out: OutputArgs,
    },
}

#[derive(Debug, Args, Clone, serde::Serialize)]
pub struct TrackerArgs {
    /// The inventory whose hosts the tracker arranges (sent before the subcommand
    /// when the controller starts it, so not part of its arguments here)
    #[command(flatten)]
    #[serde(skip)]
    pub inventory: InventoryArg,
    /// Address to listen on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6969")]
    pub listen: String,
    /// Metainfo files whose swarms the tracker serves (at least one)
    #[arg(long, value_name = "FILE", required = true)]
    pub torrent: Vec<PathBuf>,
    /// Peer lists for rookery agents: `pipeline` (chain), `stripes` (striped trees) or
    /// `mesh`
    #[arg(long, value_name = "MODE", default_value = "pipeline")]
    pub sharing: String,
    /// Stripes of `--sharing stripes` (5 to 64)
    #[arg(long, value_name = "N", default_value_t = crate::config::playbook::DEFAULT_STRIPES)]
    pub stripes: usize,
    /// Re-announce interval told to clients
    #[arg(long, value_name = "DURATION", default_value = TrackerArgs::DEFAULT_INTERVAL)]
    pub interval: String,
    /// Only these inventory hosts take part (repeatable; default: every host). A chain
    /// member that never announces holds up its successor until it is skipped.
    #[arg(long, value_name = "NAME")]
    pub host: Vec<String>,
    /// Withdraw the hosts named in this file, one per line, also those added while it
    /// runs: they take part in no swarm, and hosts waiting for them are answered at
    /// once (the controller adds a host whose agent failed to start)
    #[arg(long, value_name = "FILE")]
    pub withdrawn: Option<PathBuf>,
    /// Stop when stdin reaches end of file (started over SSH by the controller: the run ends, or the connection drops)
    #[arg(long)]
    pub until_stdin_closes: bool,
    #[command(flatten)]
    #[serde(skip)]
    pub out: OutputArgs,
}

impl TrackerArgs {
    /// The re-announce interval told to clients unless `--interval` says otherwise.
    pub const DEFAULT_INTERVAL: &str = "2s";
}
