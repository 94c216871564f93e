//! `rookery distribute`, the controller's side of a distribution: the metainfo of the
//! release, the tracker and the origin, an agent started on every host over the
//! transport, the hosts' progress, and the report.

pub mod distribute;
