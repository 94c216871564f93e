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
//! ```text
//!            command  ──────────────►  plan
//!          ╱    │    ╲                   │
//!  distribution │   rollout              │
//!      │   ╲    │    ╱   │               │
//!      │   transport   coordination      │
//!      │        │    ╱                   │
//!    torrent   config  ◄─────────────────┘
//!
//!  agent (host side): torrent, coordination, config; nothing of the controller's
//! ```
//!
//! - [`config`]: YAML with positions, typed decoding that reports every problem at once,
//!   the inventory and the playbook, and the validated pair of both (`Config`).
//! - [`plan`]: services in dependency order, cut into quorum-safe, rack-aware batches;
//!   the distribution time it predicts; the plan as text.
//! - [`torrent`]: metainfo of a release tree, confined symlinks, storages with bounded
//!   open files, the librqbit session.
//! - [`distribution`]: who feeds whom (chain, mesh, striped trees), the tracker, the
//!   simulator, and `rookery distribute`.
//! - [`transport`]: how the controller reaches a host (one trait; SSH or subprocesses),
//!   host key trust, putting the rookery binary on a host.
//! - [`coordination`]: the cluster's shared state (one trait; ZooKeeper or a directory):
//!   live instances, staged versions, deploy records, the deploy lock.
//! - [`rollout`]: services switched host by host behind the quorum gate, switch back on
//!   failure, resume from the record.
//! - [`agent`]: what runs on a host: fetch and seed, the supervisor, the switch, release
//!   directories and the page cache.
//! - [`command`]: the subcommands, built from the validated configuration.
//!
//! Beside them: [`cli`] (the command line as typed), [`error`] (the library error type
//! and the documented exit codes), [`shutdown`] (the cancellation tree and the runtime)
//! and [`progress`] (job events to bars, plain lines, or nothing).

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
pub mod transport;
