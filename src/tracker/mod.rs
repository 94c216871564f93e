//! The tracker and the policies it answers with: who may join a deploy's swarm and
//! who feeds whom. Pure policy first, then the wire, then the server and its client:
//!
//! - [`roster`]: everyone who may join, in chain order (origins, datacenters, racks).
//! - [`swarm`]: the rack-aware chain and the mesh, and each member's latest state.
//! - [`stripes`]: striped, interior-node-disjoint trees with rack and datacenter
//!   locality, and their re-link after failures.
//! - [`announce`]: the wire format (HTTP announce in, bencode out).
//! - [`server`]: the tracker server (`rookery tracker`, or inside `distribute`).
//! - [`client`]: the agent's `/status` poll and `stopped` announce.
//! - [`withdrawn`]: a file of failed hosts that a tracker on its own follows.
//! - [`simulate`]: `rookery simulate`, the same policies over a generated fleet.

pub mod announce;
pub mod client;
pub mod roster;
pub mod server;
pub mod simulate;
pub mod stripes;
pub mod swarm;
pub mod withdrawn;
