//! rookery ships a build artifact to many hosts over rack-aware BitTorrent, then
//! restarts the services that use it in dependency order without losing quorum.
//!
//! # Layout
//!
//! Configuration flows in three stages: YAML nodes with positions -> a validated model
//! -> a plan. Nothing touches the network before a plan exists.
//!
//! - [`cli`]: the command line as typed (clap definitions).
//! - [`app`]: runs a command: builds the config and the plan, then dispatches.
//! - [`error`]: the library error type and the documented exit codes.
//! - [`yaml`]: YAML text to a tree of nodes that remember their line and column.
//! - [`decode`]: typed reading of nodes that collects every problem at once.
//! - [`diagnostic`]: one problem, tied to `file:line:col`, and lists of them.
//! - [`units`]: durations, sizes and rates with units (`30s`, `4MiB`, `400Mbit/s`).
//! - [`inventory`]: hosts by datacenter and rack, how to reach them, groups, origin,
//!   transport and coordination settings.
//! - [`playbook`]: the artifact, distribution settings and services with their
//!   quorum, batches, health checks and hooks.
//! - [`template`]: command templates with checked placeholders and shell quoting.
//! - [`selector`]: host patterns for `--limit`, groups and service placement.
//! - [`dependency`]: service order and dependency cycles.
//! - [`config`]: the inventory and playbook checked against each other.
//! - [`metainfo`]: deterministic BitTorrent v1 metainfo and the tree manifest
//!   (modes, empty files and directories, symlinks).
//! - [`links`]: symlinks confined by resolution, through chains of links.
//! - [`plan`]: services in order, cut into quorum-safe, rack-aware batches.
//! - [`announce`]: the tracker's wire format (HTTP announce in, bencode out).
//! - [`swarm`]: who may join a swarm and which peers each member is told about
//!   (the rack-aware pipeline and mesh policies).
//! - [`stripes`]: striped, interior-node-disjoint distribution trees with rack and
//!   datacenter locality, and their re-link after failures (pure policy; neither
//!   the simulator nor the tracker runs it yet).
//! - [`tracker`]: the tracker server.
//! - [`engine`]: the librqbit session as rookery runs it (closed swarm, caps).
//! - [`storage`]: librqbit storages with a bounded number of open files: read-only
//!   for the origin and installed releases, sealable for a download.
//! - [`release`]: release directories on a host: staging, reuse, manifest, install.
//! - [`page_cache`]: dropping, locking and preloading pages around a copy.
//! - [`fetch`]: `agent fetch` and `agent seed`, the host's side of a distribution.
//! - [`deploy`]: `rookery deploy` and `reconcile`: distribution, then rollout.
//! - [`simulate`]: `rookery simulate`: the pipeline over a generated topology, with failures.
//! - [`estimate`]: the distribution time `plan` predicts from the inventory's link speeds.
//! - [`distribute`]: `rookery distribute`: tracker, origin and agents, the report.
//! - [`daemon`]: fork-and-seed: report, then seed in the background.
//! - [`agent`]: host-side command flags to fetches, seeders and supervisors.
//! - [`supervisor`]: `agent run`: a service under supervision, live while healthy.
//! - [`transport`]: how the controller reaches a host (one trait): connections,
//!   commands, uploads, bounded fan-out, errors that name host and stage.
//! - [`ssh`]: the SSH transport (russh): settings cascade, auth, jump hosts, SFTP.
//! - [`known_hosts`]: host key trust, read the way OpenSSH reads it.
//! - [`local`]: the local transport (subprocesses) for the embedded default.
//! - [`bootstrap`]: puts this rookery binary on each host, by checksum.
//! - [`progress`]: job events to progress bars, plain lines, or nothing.
//! - [`coordination`]: the cluster's shared state (one trait): live instances,
//!   staged versions, deploy records, the deploy lock.
//! - [`zookeeper`]: that state in ZooKeeper (ephemeral nodes, the lock recipe).
//! - [`local_store`]: that state in a directory of flock-held files (embedded default).
//! - [`store`]: the store the inventory names, either implementation as one type.
//! - [`record`]: the deploy record kept in the store, what resume reads back.
//! - [`switch`]: `agent switch`, the host's side of a restart (stop, switch
//!   `current`, start), and the host's release list and pruning.
//! - [`rollout`]: services in dependency order, batches behind the quorum gate,
//!   switch back on failure, resume from the record.
//! - [`status`]: `rookery status`: live, staged and installed versions per host.
//! - [`shutdown`]: the cancellation tree and the runtime.
//! - [`render`]: the plan as text for an operator.

pub mod agent;
pub mod announce;
pub mod app;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod coordination;
pub mod daemon;
pub mod decode;
pub mod dependency;
pub mod deploy;
pub mod diagnostic;
pub mod distribute;
pub mod engine;
pub mod error;
pub mod estimate;
pub mod fetch;
pub mod inventory;
pub mod known_hosts;
pub mod links;
pub mod local;
pub mod local_store;
pub mod metainfo;
pub mod page_cache;
pub mod plan;
pub mod playbook;
pub mod progress;
pub mod record;
pub mod release;
pub mod render;
pub mod rollout;
pub mod selector;
pub mod shutdown;
pub mod simulate;
pub mod ssh;
pub mod status;
pub mod storage;
pub mod store;
pub mod stripes;
pub mod supervisor;
pub mod swarm;
pub mod switch;
pub mod template;
pub mod tracker;
pub mod transport;
pub mod units;
pub mod yaml;
pub mod zookeeper;
