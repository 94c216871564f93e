//! The one integration-test binary: runs the built `rookery` on fixture files and pins
//! what users see (error text, exit codes, plan output), up to deploys on clusters of
//! real processes. `support/` holds what the test files share: the `Test` builder, the
//! one `Cluster` (local or SSH hosts, local store or ZooKeeper) and its fixtures.

mod support;

mod caps;
mod coordination;
mod errors;
mod examples;
mod help;
mod hooks;
mod hostile;
mod json;
mod page_cache;
mod plan;
mod progress;
mod rollout;
mod seeding;
mod ssh;
mod stripes;
mod swarm;
mod torrent;
mod trees;
