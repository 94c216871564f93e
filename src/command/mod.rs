//! The subcommands an operator runs, each built from a validated configuration:
//!
//! - [`app`]: parses the command line, builds the config and the plan, dispatches.
//! - [`deploy`]: `rookery deploy` and `reconcile`: distribution, then rollout.
//! - [`status`]: `rookery status`: live, staged and installed versions per host.

pub mod app;
pub mod deploy;
pub mod status;
