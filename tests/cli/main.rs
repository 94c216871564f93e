//! The one integration-test binary: runs the built `rookery` on fixture files and pins
//! what users see (error text, exit codes, plan output).

mod errors;
mod examples;
mod helper;
mod plan;
mod swarm;
mod torrent;
