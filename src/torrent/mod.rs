//! The BitTorrent content layer, shared by the controller and the host agent:
//! deterministic metainfo for a release tree, symlinks confined by resolution,
//! storages with a bounded number of open files, and the librqbit session as rookery
//! runs it. Nothing here knows about hosts, racks or services.
//!
//! - [`metainfo`]: BitTorrent v1 metainfo and the tree manifest (modes, empty files
//!   and directories, symlinks), and piece hashes reused from the previous release.
//! - [`links`]: symlinks confined by resolution, through chains of links.
//! - [`storage`]: read-only storage for origins and installed releases, sealable
//!   storage for a download.
//! - [`engine`]: the librqbit session: closed swarm, caps, stripes.
//! - [`in_step`]: the origin's uploads to the stripes' roots, kept in step.

pub mod engine;
pub mod in_step;
pub mod links;
pub mod metainfo;
pub mod storage;
