//! rookery ships a build artifact to many hosts over rack-aware BitTorrent, then
//! restarts the services that use it in dependency order without losing quorum.
//!
//! # Layout
//!
//! The library is grouped by concept, one folder each; every folder's `mod.rs` states
//! what it offers. Data flows one way, top to bottom: a command reads the
//! configuration, makes a plan, then acts on hosts through a transport and on the
//! cluster's shared state through the coordination store.
//!
//! Each folder uses only those listed after it (none uses one before it):
//!
//! ```text
//! command       every folder below: one module per subcommand
//! distribution  agent (the origin seeder), tracker, transport, coordination, torrent
//! rollout       agent (its answers), plan, transport, coordination
//! agent         tracker (the wire), coordination, torrent, config
//! tracker       plan (the model's constants), config, torrent
//! plan          config, torrent
//! transport     config
//! coordination  config
//! config        torrent (valid piece sizes)
//! torrent       nothing
//! ```
//!
//! The host agent (`agent/`) depends on the tracker's wire, the torrent layer, the
//! coordination store and the configuration types, never on the controller's
//! `distribution/` or `rollout/`; the controller reads the agent's answers (`Releases`)
//! and reuses its seeder for a controller origin.
//!
//! - [`config`]: YAML with positions, typed decoding that reports every problem at once,
//!   the inventory and the playbook, and the validated pair of both (`Config`).
//! - [`plan`]: services in dependency order, cut into quorum-safe, rack-aware batches;
//!   the distribution time it predicts; the plan as text.
//! - [`torrent`]: metainfo of a release tree, confined symlinks, storages with bounded
//!   open files, the librqbit session.
//! - [`tracker`]: who feeds whom (the roster, the chain and mesh, striped trees), the
//!   tracker's wire, server and client, and the simulator over the same policies.
//! - [`distribution`]: `rookery distribute`: metainfo, tracker and origin, an agent per
//!   host over the transport, progress and the report.
//! - [`transport`]: how the controller reaches a host (one trait; SSH or subprocesses),
//!   host key trust, putting the agent for each host's platform on it.
//! - [`coordination`]: the cluster's shared state (one trait; ZooKeeper or a directory):
//!   live instances, staged versions, deploy records, the deploy lock.
//! - [`rollout`]: services switched host by host behind the quorum gate, independent
//!   ones side by side, switch back on failure, resume from the record.
//! - [`agent`]: what runs on a host: fetch and seed, the supervisor, the switch, the
//!   start at boot, release directories and the page cache (its hot set locked).
//! - [`command`]: the subcommands, built from the validated configuration.
//!
//! Beside them: [`cli`] (the command line as typed), [`error`] (the library error type
//! and the documented exit codes), [`shutdown`] (the cancellation tree and the runtime),
//! [`progress`] (job events to bars, plain lines, or nothing) and [`os`] (process
//! liveness, atomic file writes, and the calls that differ between Linux and macOS).

pub mod agent;
pub mod cli;
pub mod command;
pub mod config;
pub mod coordination;
pub mod distribution;
pub mod error;
pub mod os;
pub mod plan;
pub mod progress;
pub mod rollout;
pub mod shutdown;
pub mod torrent;
pub mod tracker;
pub mod transport;
