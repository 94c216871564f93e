//! What the controller asks of a host's agent, as types: one struct per `rookery
//! agent` subcommand, read by clap on the host and written by [`to_args`] on the
//! controller. The controller fills a struct and encodes it once; nothing builds an
//! argument list by hand, and a flag added to a struct reaches the wire by itself.
//!
//! The flags stay readable on the host (`ps` shows `agent fetch ... --host web-3`),
//! so operators can find and run an agent by hand. A setting an operator leaves out
//! takes the playbook's default ([`Distribution::default`]): defaults live there only.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::config::diagnostic::Invalid;
use crate::config::playbook::{Distribution, PageCache, SeedMode};
use crate::config::units::{Rate, format_duration, parse_duration};

/// `rookery agent ...`: the host-side commands.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Fetch a release over BitTorrent, verify it, install it, then seed for a while
    Fetch(FetchArgs),
    /// Serve a directory read-only to the swarm (the origin)
    Seed(SeedArgs),
    /// Run a service under supervision and register it as live while healthy
    Run(RunServiceArgs),
    /// Stop a service, point `current` at a release, start it there (idempotent)
    Switch(SwitchArgs),
    /// Start the services this host ran (at boot), optionally catching up
    Start(StartArgs),
    /// List the releases of a destination and what `current` points to (JSON)
    Releases(ReleasesArgs),
    /// Remove old releases, keeping the newest N and never the current or previous
    Prune(PruneArgs),
}

/// A request the controller sends: its subcommand name and its flags.
pub trait Request: Serialize {
    /// The `rookery agent` subcommand that reads it.
    const COMMAND: &'static str;

    /// The whole command line: `AGENT agent COMMAND --flag value ...`.
    fn argv(&self, agent: &str) -> Vec<String> {
        let mut argv = vec![agent.to_string(), "agent".into(), Self::COMMAND.into()];
        argv.extend(to_args(self));
        argv
    }

    /// [`Request::argv`] as one POSIX shell command line, every word quoted.
    fn command_line(&self, agent: &str) -> String {
        let words: Vec<String> = self
            .argv(agent)
            .iter()
            .map(|a| crate::config::template::shell_quote(a))
            .collect();
        words.join(" ")
    }
}

/// How an agent takes part in the swarm.
#[derive(Debug, Args, Clone, PartialEq, Serialize)]
pub struct SwarmArgs {
    /// Metainfo file of the release
    #[arg(long, value_name = "FILE")]
    pub torrent: PathBuf,
    /// This host's inventory name (reports, and `host=` on announces)
    #[arg(long, value_name = "NAME")]
    pub host: String,
    /// Address the BitTorrent engine listens on [default: 0.0.0.0 and the playbook's default port]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Announce URL of rookery's tracker
    #[arg(long, value_name = "URL")]
    pub tracker: Option<String>,
    /// A peer to connect to without a tracker (repeatable)
    #[arg(long = "peer", alias = "peers", value_name = "ADDR")]
    pub peers: Vec<SocketAddr>,
    /// Peer connections at most [default: the playbook's `max_peers`]
    #[arg(long, value_name = "N")]
    pub max_peers: Option<u32>,
    /// Upload cap (`50MiB/s`, `400Mbit/s`) [default: none]
    #[arg(long, value_name = "RATE", value_parser = Rate::parse)]
    #[serde(serialize_with = "rate_flag")]
    pub upload_limit: Option<Rate>,
    /// Download cap (`50MiB/s`, `400Mbit/s`) [default: none]
    #[arg(long, value_name = "RATE", value_parser = Rate::parse)]
    #[serde(serialize_with = "rate_flag")]
    pub download_limit: Option<Rate>,
    /// Striped fetching over N stripes: each peer is asked only for the stripes the
    /// tracker names it for (none until it does)
    #[arg(long, value_name = "N")]
    pub stripes: Option<usize>,
}

impl SwarmArgs {
    /// The address to listen on, the playbook's default port when not given.
    pub fn listen(&self) -> SocketAddr {
        self.listen.unwrap_or_else(|| {
            SocketAddr::new(IpAddr::from([0, 0, 0, 0]), Distribution::default().port)
        })
    }

    pub fn max_peers(&self) -> u32 {
        self.max_peers
            .unwrap_or_else(|| Distribution::default().max_peers)
    }
}

/// `rookery agent fetch`: one host's copy of a release.
#[derive(Debug, Args, Clone, PartialEq, Serialize)]
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
    #[arg(long, value_name = "ADDR", value_parser = origin_addr)]
    pub origin: Option<SocketAddr>,
    /// Keep seeding this long after the copy is verified [default: the playbook's `seed_window`]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(serialize_with = "duration_flag")]
    pub seed_window: Option<Duration>,
    /// `fixed`, or `adaptive` (stop once the rack has the copy, extend while peers need it) [default: the playbook's `seed_mode`]
    #[arg(long, value_name = "MODE", value_parser = seed_mode)]
    pub seed_mode: Option<SeedMode>,
    /// Longest seeding in adaptive mode [default: the playbook's `seed_window_max`]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(serialize_with = "duration_flag")]
    pub seed_window_max: Option<Duration>,
    /// Give up when nothing arrives for this long [default: the playbook's `stall_timeout`]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(serialize_with = "duration_flag")]
    pub stall_timeout: Option<Duration>,
    /// Drop the new release's pages from the page cache once verified
    #[arg(long)]
    pub drop_after_write: bool,
    /// mlock files of the current release matching this glob while fetching (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub lock_current: Vec<String>,
    /// Bytes of a hot set locked at most [default: 1 GiB]
    #[arg(long, value_name = "BYTES")]
    pub lock_max: Option<u64>,
    /// Read the new release into the page cache once installed
    #[arg(long)]
    pub preload: bool,
    /// Stay attached: seed in this process instead of forking into the background
    #[arg(long)]
    pub foreground: bool,
    /// A shell command run in the release directory once the copy is verified and
    /// installed (repeatable, in order); one that fails makes the fetch fail
    #[arg(long, value_name = "CMD")]
    pub after_fetch: Vec<String>,
}

impl Request for FetchArgs {
    const COMMAND: &'static str = "fetch";
}

impl FetchArgs {
    /// The page-cache care asked for.
    pub fn page_cache(&self) -> PageCache {
        PageCache {
            drop_after_write: self.drop_after_write,
            lock_current: self.lock_current.clone(),
            preload: self.preload,
            lock_max: self.lock_max.map(crate::config::units::ByteSize),
        }
    }

    /// Sets the flags of the playbook's page-cache care.
    pub fn with_page_cache(mut self, pc: &PageCache) -> FetchArgs {
        self.drop_after_write = pc.drop_after_write;
        self.lock_current = pc.lock_current.clone();
        self.lock_max = pc.lock_max.map(|b| b.0);
        self.preload = pc.preload;
        self
    }
}

/// `rookery agent seed`: the origin, serving a tree read-only.
#[derive(Debug, Args, Clone, PartialEq, Serialize)]
pub struct SeedArgs {
    #[command(flatten)]
    pub swarm: SwarmArgs,
    /// The tree the metainfo was made from
    #[arg(long, value_name = "DIR")]
    pub source: PathBuf,
    /// Stop after this long (default: until interrupted)
    #[arg(long = "for", alias = "duration", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(serialize_with = "duration_flag")]
    pub duration: Option<Duration>,
    /// Stop when stdin reaches end of file (started over SSH by the controller)
    #[arg(long)]
    pub until_stdin_closes: bool,
    /// Keep the uploads to the peers within this many pieces of each other (the
    /// origin of striped trees)
    #[arg(long, value_name = "PIECES")]
    pub in_step: Option<u32>,
    /// The metainfo was just made from `--source` on this host (by `rookery torrent create`):
    /// seed without reading and hashing the files again first. A piece that does not
    /// match after all is refused by every host that receives it.
    #[arg(long)]
    pub verified: bool,
}

impl Request for SeedArgs {
    const COMMAND: &'static str = "seed";
}

/// `rookery agent releases`.
#[derive(Debug, Args, Clone, PartialEq, Serialize)]
pub struct ReleasesArgs {
    #[arg(long, value_name = "DIR")]
    pub destination: PathBuf,
}

impl Request for ReleasesArgs {
    const COMMAND: &'static str = "releases";
}

/// `rookery agent prune`.
#[derive(Debug, Args, Clone, PartialEq, Serialize)]
pub struct PruneArgs {
    #[arg(long, value_name = "DIR")]
    pub destination: PathBuf,
    #[arg(long, value_name = "N")]
    pub keep: u32,
    /// The release `current` pointed to before the deploy (kept)
    #[arg(long, value_name = "VERSION")]
    pub previous: Option<String>,
}

impl Request for PruneArgs {
    const COMMAND: &'static str = "prune";
}

/// `rookery agent run`: one service instance under supervision.
#[derive(Debug, Args, Clone, PartialEq, Serialize)]
pub struct RunServiceArgs {
    /// Return once the instance is healthy and registered; supervise in the background
    #[arg(long)]
    pub detach: bool,
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
    /// Log file of a detached supervisor
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Where the supervisor records its pid (default: `<release>/../../.rookery/run/<service>.json`)
    #[arg(long, value_name = "FILE")]
    pub run_file: Option<PathBuf>,
    /// Keep the release's files matching this glob mapped and locked in memory while
    /// the service runs (repeatable; the playbook's `page_cache.lock_current`)
    #[arg(long, value_name = "GLOB")]
    pub lock: Vec<String>,
    /// Bytes of the hot set locked at most [default: 1 GiB]
    #[arg(long, value_name = "BYTES")]
    pub lock_max: Option<u64>,
    #[command(flatten)]
    pub store: crate::coordination::store::StoreArgs,
    /// The service command: one shell command line, or a program and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    #[serde(skip)]
    pub command: Vec<String>,
}

impl Request for RunServiceArgs {
    const COMMAND: &'static str = "run";

    /// The flags, then `--` and the service command, which clap takes as given.
    fn argv(&self, agent: &str) -> Vec<String> {
        let mut argv = vec![agent.to_string(), "agent".into(), Self::COMMAND.into()];
        argv.extend(to_args(self));
        argv.push("--".into());
        argv.extend(self.command.iter().cloned());
        argv
    }
}

/// How a supervisor checks its service.
#[derive(Debug, Args, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HealthArgs {
    /// Health check, a shell command line; none: live as soon as started
    #[arg(long, value_name = "CMD")]
    pub health: Option<String>,
    #[arg(long, value_name = "DURATION", default_value = HealthArgs::DEFAULT_INTERVAL)]
    pub health_interval: String,
    /// Fail (and stop the service) if it is not healthy this long after it started
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub health_deadline: String,
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
    #[arg(long = "var", alias = "vars", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    #[command(flatten)]
    pub health: HealthArgs,
    #[command(flatten)]
    pub store: crate::coordination::store::StoreArgs,
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

impl HealthArgs {
    /// How often a supervisor runs the health check (the playbook does not set it).
    pub const DEFAULT_INTERVAL: &str = "1s";
}

impl Request for SwitchArgs {
    const COMMAND: &'static str = "switch";
}

/// `--origin`: an address, or an IP alone (any port).
fn origin_addr(text: &str) -> Result<SocketAddr, Invalid> {
    match text.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, 0)),
        Err(_) => text
            .parse()
            .map_err(|_| Invalid(format!("`{text}` is neither an IP nor an IP:PORT address"))),
    }
}

fn seed_mode(text: &str) -> Result<SeedMode, Invalid> {
    match text {
        "fixed" => Ok(SeedMode::Fixed),
        "adaptive" => Ok(SeedMode::Adaptive),
        other => Err(format!("`{other}`: use fixed or adaptive").into()),
    }
}

fn duration_flag<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_duration(*d)),
        None => s.serialize_none(),
    }
}

fn rate_flag<S: serde::Serializer>(r: &Option<Rate>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        Some(r) => s.serialize_str(&format!("{}B/s", r.0)),
        None => s.serialize_none(),
    }
}

/// The flags that clap reads back into `value`, in the order its fields are
/// declared: each field `snake_name` becomes `--snake-name VALUE`; `true` a bare
/// flag; `false` and `None` nothing; a list one flag per item; a nested struct
/// (clap's `flatten`) its own fields.
pub fn to_args<T: Serialize + ?Sized>(value: &T) -> Vec<String> {
    match value.serialize(flags::Piece::Of) {
        Ok(flags::Piece::Flags(v)) => v,
        Ok(_) => panic!("a request is a struct"),
        Err(e) => panic!("a request field cannot be a flag: {}", e.0),
    }
}

/// A small serde serializer from a request struct to its flags (serde_json would
/// sort the fields, and `ps` and operators read them in the struct's order).
mod flags {
    use serde::ser::{self, Impossible, Serialize};

    #[derive(Debug)]
    pub struct Error(pub String);

    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Error {}
    impl ser::Error for Error {
        fn custom<T: std::fmt::Display>(msg: T) -> Error {
            Error(msg.to_string())
        }
    }

    /// One field's value, as flags see it.
    pub enum Piece {
        /// The serializer itself (before a value is given).
        Of,
        Absent,
        Bool(bool),
        Scalar(String),
        List(Vec<String>),
        Flags(Vec<String>),
    }

    fn unsupported(what: &str) -> Error {
        Error(format!("{what} has no flag form"))
    }

    pub struct Seq(Vec<String>);
    pub struct Struct(Vec<String>);

    impl ser::SerializeSeq for Seq {
        type Ok = Piece;
        type Error = Error;
        fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
            match v.serialize(Piece::Of)? {
                Piece::Scalar(s) => {
                    self.0.push(s);
                    Ok(())
                }
                _ => Err(unsupported("a list item that is not a value")),
            }
        }
        fn end(self) -> Result<Piece, Error> {
            Ok(Piece::List(self.0))
        }
    }

    impl ser::SerializeStruct for Struct {
        type Ok = Piece;
        type Error = Error;
        fn serialize_field<T: Serialize + ?Sized>(
            &mut self,
            name: &'static str,
            v: &T,
        ) -> Result<(), Error> {
            let flag = format!("--{}", name.replace('_', "-"));
            match v.serialize(Piece::Of)? {
                Piece::Of | Piece::Absent | Piece::Bool(false) => {}
                Piece::Bool(true) => self.0.push(flag),
                Piece::Scalar(s) => self.0.extend([flag, s]),
                Piece::List(items) => {
                    for s in items {
                        self.0.extend([flag.clone(), s]);
                    }
                }
                Piece::Flags(nested) => self.0.extend(nested),
            }
            Ok(())
        }
        fn end(self) -> Result<Piece, Error> {
            Ok(Piece::Flags(self.0))
        }
    }

    macro_rules! scalar {
        ($($f:ident: $t:ty),*) => {$(
            fn $f(self, v: $t) -> Result<Piece, Error> {
                Ok(Piece::Scalar(v.to_string()))
            }
        )*};
    }

    impl ser::Serializer for Piece {
        type Ok = Piece;
        type Error = Error;
        type SerializeSeq = Seq;
        type SerializeTuple = Impossible<Piece, Error>;
        type SerializeTupleStruct = Impossible<Piece, Error>;
        type SerializeTupleVariant = Impossible<Piece, Error>;
        type SerializeMap = Impossible<Piece, Error>;
        type SerializeStruct = Struct;
        type SerializeStructVariant = Impossible<Piece, Error>;

        scalar!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
            serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64,
            serialize_f32: f32, serialize_f64: f64, serialize_char: char, serialize_str: &str);

        fn serialize_bool(self, v: bool) -> Result<Piece, Error> {
            Ok(Piece::Bool(v))
        }
        fn serialize_bytes(self, _: &[u8]) -> Result<Piece, Error> {
            Err(unsupported("bytes"))
        }
        fn serialize_none(self) -> Result<Piece, Error> {
            Ok(Piece::Absent)
        }
        fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Piece, Error> {
            v.serialize(self)
        }
        fn serialize_unit(self) -> Result<Piece, Error> {
            Ok(Piece::Absent)
        }
        fn serialize_unit_struct(self, _: &'static str) -> Result<Piece, Error> {
            Ok(Piece::Absent)
        }
        fn serialize_unit_variant(
            self,
            _: &'static str,
            _: u32,
            variant: &'static str,
        ) -> Result<Piece, Error> {
            Ok(Piece::Scalar(variant.to_string()))
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            v: &T,
        ) -> Result<Piece, Error> {
            v.serialize(self)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<Piece, Error> {
            Err(unsupported("an enum with data"))
        }
        fn serialize_seq(self, len: Option<usize>) -> Result<Seq, Error> {
            Ok(Seq(Vec::with_capacity(len.unwrap_or(0))))
        }
        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
            Err(unsupported("a tuple"))
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, Error> {
            Err(unsupported("a tuple struct"))
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, Error> {
            Err(unsupported("an enum with data"))
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
            Err(unsupported("a map"))
        }
        fn serialize_struct(self, _: &'static str, len: usize) -> Result<Struct, Error> {
            Ok(Struct(Vec::with_capacity(2 * len)))
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, Error> {
            Err(unsupported("an enum with data"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Agent {
        #[command(subcommand)]
        command: AgentCommand,
    }

    fn parse(argv: Vec<String>) -> AgentCommand {
        // argv[0] is the agent path, argv[1] `agent`: clap takes the binary name.
        Agent::try_parse_from(&argv[1..])
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
            .command
    }

    fn swarm() -> SwarmArgs {
        SwarmArgs {
            torrent: "/srv/app/.rookery/v1.torrent".into(),
            host: "web-3".into(),
            listen: Some("10.0.0.3:6881".parse().unwrap()),
            tracker: Some("http://10.0.0.1:7000/announce?host=web-3".into()),
            peers: vec!["10.0.0.4:6881".parse().unwrap()],
            max_peers: Some(16),
            upload_limit: Some(Rate(2_500_000)),
            download_limit: None,
            stripes: Some(8),
        }
    }

    #[test]
    fn a_fetch_request_reads_back_as_it_was_written() {
        let fetch = FetchArgs {
            swarm: swarm(),
            destination: "/srv/app dir".into(),
            version: "v1".into(),
            origin: Some("10.0.0.1:0".parse().unwrap()),
            seed_window: Some(Duration::from_secs(90)),
            seed_mode: Some(SeedMode::Adaptive),
            seed_window_max: Some(Duration::from_secs(300)),
            stall_timeout: None,
            drop_after_write: true,
            lock_current: vec!["bin/*".into(), "lib/*.so".into()],
            lock_max: Some(4096),
            preload: false,
            foreground: false,
            after_fetch: vec!["systemctl reload 'my app'".into()],
        };
        let argv = fetch.argv("/opt/rookery");
        assert_eq!(argv[..3], ["/opt/rookery", "agent", "fetch"]);
        assert!(argv.windows(2).any(|w| w == ["--host", "web-3"]));
        match parse(argv) {
            AgentCommand::Fetch(back) => {
                assert_eq!(back, fetch);
                let pc = back.page_cache();
                assert_eq!(pc.lock_current, ["bin/*", "lib/*.so"]);
                assert_eq!(pc.lock_max, Some(crate::config::units::ByteSize(4096)));
                assert_eq!(back.clone().with_page_cache(&pc), back);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_seed_request_reads_back_as_it_was_written() {
        let seed = SeedArgs {
            swarm: swarm(),
            source: "build/out".into(),
            duration: Some(Duration::from_millis(1500)),
            until_stdin_closes: true,
            in_step: Some(32),
            verified: true,
        };
        match parse(seed.argv("rookery")) {
            AgentCommand::Seed(back) => assert_eq!(back, seed),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_prune_request_reads_back_as_it_was_written() {
        let prune = PruneArgs {
            destination: "/srv/app".into(),
            keep: 3,
            previous: Some("v0".into()),
        };
        match parse(prune.argv("rookery")) {
            AgentCommand::Prune(back) => assert_eq!(back, prune),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_keep_the_order_of_the_fields_that_operators_grep_for() {
        let run = RunServiceArgs {
            detach: true,
            service: "a".into(),
            host: "h1".into(),
            version: "v1".into(),
            release: "/srv/app/releases/v1".into(),
            health: HealthArgs {
                health: None,
                health_interval: "1s".into(),
                health_deadline: "60s".into(),
            },
            log: None,
            run_file: None,
            lock: vec!["index/**".into()],
            lock_max: Some(1 << 20),
            store: crate::coordination::store::StoreArgs {
                cluster: "c".into(),
                local_store: Some("/var/lib/rookery".into()),
                zookeeper: None,
                zk_root: None,
                session_timeout: "10s".into(),
            },
            command: vec!["bin/serve --port 80".into()],
        };
        let line = run.argv("rookery").join(" ");
        assert!(
            line.starts_with("rookery agent run --detach --service a --host h1 --version v1 --release /srv/app/releases/v1"),
            "{line}"
        );
        assert!(line.ends_with(" -- bin/serve --port 80"), "{line}");
        match parse(run.argv("rookery")) {
            AgentCommand::Run(back) => assert_eq!(back, run),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_command_line_quotes_every_word() {
        let r = ReleasesArgs {
            destination: "/srv/it's here".into(),
        };
        assert_eq!(
            r.command_line("/opt/rookery"),
            "/opt/rookery agent releases --destination '/srv/it'\\''s here'"
        );
    }
}
