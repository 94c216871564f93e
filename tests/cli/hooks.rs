//! `hooks.after_fetch`: run on each host once its copy is verified and installed, in
//! the release, with the host's placeholders filled in; a hook that fails fails that
//! host's fetch, named in the report, and the other hosts are not held up.

use crate::support::Cluster;

const DATACENTERS: &str =
    "  east:\n    racks:\n      r1: {services: [web], hosts: {h1: ~, h2: ~, h3: ~}}\n";

#[test]
fn after_fetch_runs_on_each_host_in_its_release_and_a_failure_is_that_hosts() {
    let c = Cluster::local(DATACENTERS).start();
    let d = c.dir();
    std::fs::create_dir_all(d.join("art")).unwrap();
    std::fs::write(d.join("art/data"), "payload").unwrap();
    // The first hook leaves a note in the release (its working directory); the
    // second fails on h2 only.
    std::fs::write(
        d.join("pb.yml"),
        "name: hooks\nartifact: {source: art, destination: /srv/app, version: v1}\ndistribution: {seed_window: 1s}\nhooks:\n  after_fetch:\n    - \"echo {host} {version} {release} > fetched\"\n    - \"if test {host} = h2; then echo no room on h2 >&2; exit 3; fi\"\nservices:\n  web: {start: \"true\"}\n",
    )
    .unwrap();
    let r = c.run(&["--json", "distribute", "pb.yml"]);
    let report = r.report();
    let host = |name: &str| {
        report["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == name)
            .unwrap_or_else(|| panic!("no {name} in {report:#}"))
            .clone()
    };
    for name in ["h1", "h3"] {
        assert_eq!(host(name)["ok"], true, "{name}: {report:#}");
        let release = c.root(name).join("srv/app/releases/v1");
        let note = std::fs::read_to_string(release.join("fetched"))
            .unwrap_or_else(|e| panic!("{name}: the hook left no note: {e}"));
        assert_eq!(
            note.trim(),
            format!("{name} v1 {}", release.display()),
            "{name}: the hook ran with the host's placeholders, in its release"
        );
    }
    let h2 = host("h2");
    assert_eq!(h2["ok"], false, "{report:#}");
    let error = h2["error"].as_str().unwrap();
    assert!(
        error.contains("after_fetch hook `if test h2 = h2;")
            && error.contains("exit status: 3")
            && error.contains("no room on h2"),
        "h2's error names the hook, its status and its stderr: {error}"
    );
}
