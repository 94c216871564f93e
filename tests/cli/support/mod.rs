//! What the tests of this binary share, in one place:
//!
//! - [`test`]: the fluent [`Test`] (fixture files, one `rookery` run, its output checked);
//! - [`cluster`]: the one test [`Cluster`] (local hosts or real sshd per host, the local
//!   store or ZooKeeper), the [`Run`] of a command against it;
//! - [`zookeeper`]: ZooKeeper servers on loopback (one, or an ensemble of three) and a
//!   link to them that can be cut;
//! - [`process`]: children that die with the test, waiting, free ports, process groups;
//! - [`files`]: artifact contents and tree snapshots.
//!
//! The test files use these and nothing of each other's.

pub mod cluster;
pub mod files;
pub mod process;
pub mod test;
pub mod zookeeper;

pub use cluster::{Cluster, Run, Store, host_states, rt};
pub use files::{art_torrent, noise, snapshot, write_exec};
pub use process::{
    BIN, Lines, Proc, ctrl_c, free_port, is_zombie, parent_of, run_ok, running, spawn,
    spawn_in_group, start, succeed, wait_for_port, wait_until,
};
pub use test::{Test, repo};
pub use zookeeper::{Ensemble, Partition, ZooKeeper};
