//! The subcommands an operator runs, each built from a validated configuration:
//!
//! - [`app`]: parses the command line, builds the config and the plan, dispatches.
//! - `skeleton`: what every command that acts on the cluster does the same way:
//!   runtime, Ctrl-C, the store, the document printed as JSON or text, the exit status.
//! - `prepare`: `rookery prepare`: the artifact hashed ahead of a deploy.
//! - `distribute`: `rookery distribute`.
//! - `rollout`: `rookery rollout` and `rollback`.
//! - `deploy`: `rookery deploy` and `reconcile`: distribution, then rollout.
//! - `status`: `rookery status`: live, staged and installed versions per host.
//! - `simulate`, `torrent`, `tracker`: the commands that act on no cluster.

pub mod app;
mod deploy;
mod distribute;
mod prepare;
mod rollout;
mod simulate;
mod skeleton;
mod status;
mod torrent;
mod tracker;
