//! The one integration-test binary: runs the built `rookery` on fixture files and pins
//! what users see (error text, exit codes, plan output).

mod caps;
mod coordination;
mod errors;
mod examples;
mod helper;
mod hostile;
mod plan;
mod rollout;
mod seeding;
mod ssh;
mod stripes;
mod swarm;
mod torrent;
mod trees;
