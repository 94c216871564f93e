//! Distribution: who feeds whom, and the run that ships a release to every host.
//!
//! Policy first, then the wire, then the run:
//!
//! - [`swarm`]: who may join a swarm and which peers each member is told about (the
//!   rack-aware chain and the mesh).
//! - [`stripes`]: striped, interior-node-disjoint trees with rack and datacenter
//!   locality, and their re-link after failures.
//! - [`announce`]: the tracker's wire format (HTTP announce in, bencode out).
//! - [`tracker`]: the tracker server that answers with those policies.
//! - [`simulate`]: `rookery simulate`, the same policies over a generated fleet.
//! - [`distribute`]: `rookery distribute`: tracker, origin and agents, the report.

pub mod announce;
pub mod distribute;
pub mod roster;
pub mod simulate;
pub mod stripes;
pub mod swarm;
pub mod tracker;
