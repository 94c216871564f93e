//! The `--json` documents against docs/json.md: a local cluster is planned, deployed,
//! distributed to, rolled, previewed and asked for its status with `--json`, and
//! every field each document carries must be named in the doc's section for that
//! command (as `` `path` ``, `a[].b` for a field of each item of a list), and every
//! document must say `"schema": 1`.

use std::collections::BTreeSet;

use crate::support::{Cluster, repo, write_exec};

const DATACENTERS: &str = "  east:\n    racks:\n      r1: {hosts: {h1: {services: [web]}, h2: {services: [web]}}}\n  west:\n    racks:\n      r1: {hosts: {h3: {services: [web]}}}\n";

/// Fields whose keys are data (host names), not names: only the field is documented.
const MAPS: [&str; 1] = ["fed_by"];

/// The path of every value of `v` that is not itself an object or a list of objects
/// (`a.b`, `a[].b`); a field named in `MAPS` is one value.
fn paths(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    use serde_json::Value;
    match v {
        Value::Object(fields) => {
            for (k, x) in fields {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if MAPS.contains(&k.as_str()) {
                    out.insert(p);
                } else {
                    paths(x, &p, out);
                }
            }
        }
        Value::Array(items) if items.iter().any(Value::is_object) => {
            for x in items {
                paths(x, &format!("{prefix}[]"), out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

/// The backquoted names of the section of docs/json.md whose heading has `title`.
fn documented(doc: &str, title: &str) -> BTreeSet<String> {
    let section = doc
        .split("\n## ")
        .find(|s| s.lines().next().is_some_and(|h| h.contains(title)))
        .unwrap_or_else(|| panic!("docs/json.md has no section for {title}"));
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Asserts `v`'s paths (after `strip`) are in `section`.
#[track_caller]
fn check(doc: &str, command: &str, v: &serde_json::Value, parts: &[(&str, &str)]) {
    assert_eq!(v["schema"], 1, "{command}: no schema 1 in {v:#}");
    let mut all = BTreeSet::new();
    paths(v, "", &mut all);
    for path in &all {
        // A document inside another (`deploy`'s, `status`'s last deploy) is
        // documented in its own section.
        let (section, rel) = parts
            .iter()
            .find_map(|(prefix, section)| {
                if prefix.is_empty() {
                    Some((*section, path.as_str()))
                } else {
                    path.strip_prefix(&format!("{prefix}."))
                        .map(|rel| (*section, rel))
                }
            })
            .expect("the last part has an empty prefix");
        let names = documented(doc, section);
        let whole = parts.iter().any(|(p, _)| p == path);
        assert!(
            whole || names.contains(rel),
            "{command} --json prints `{path}`, which docs/json.md does not describe under \"{section}\""
        );
    }
}

#[test]
fn every_field_of_every_json_document_is_documented() {
    let doc = std::fs::read_to_string(repo().join("docs/json.md")).unwrap();
    let c = Cluster::local(DATACENTERS).start();
    let d = c.dir();
    std::fs::create_dir_all(d.join("art/bin")).unwrap();
    write_exec(
        &d.join("art/bin/serve"),
        "#!/bin/sh\nwhile :; do sleep 1; done\n",
    );
    std::fs::write(d.join("art/data"), "one").unwrap();
    let start = format!("exec /bin/sh {{release}}/bin/serve {}", d.display());
    std::fs::write(
        d.join("pb.yml"),
        format!(
            "name: json\nartifact: {{source: art, destination: /srv/app, keep_releases: 3}}\ndistribution: {{seed_window: 1s}}\nservices:\n  web: {{start: \"{start}\", quorum: 1, min_healthy_time: 300ms}}\n"
        ),
    )
    .unwrap();
    let json = |args: &[&str]| {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        c.run(&all).ok().report()
    };
    let record = [("", "rollout`, `rollback`, `reconcile`: the deploy record")];
    check(
        &doc,
        "plan",
        &json(&["plan", "pb.yml"]),
        &[("", "`rookery plan`")],
    );
    let deployed = json(&["deploy", "pb.yml"]);
    assert_eq!(
        deployed["rollout"]["recap"],
        serde_json::json!([{"service": "web", "changed": 3, "unchanged": 0, "failed": 0,
            "skipped": 0, "unreachable": 0, "pending": 0, "failed_hosts": []}]),
        "the recap of a first deploy to three hosts"
    );
    check(
        &doc,
        "deploy",
        &deployed,
        &[
            ("distribution", "`rookery distribute`"),
            ("rollout", record[0].1),
            ("", "`rookery deploy`"),
        ],
    );
    check(
        &doc,
        "status",
        &json(&["status", "pb.yml"]),
        &[("last_deploy", record[0].1), ("", "`rookery status`")],
    );
    std::fs::write(d.join("art/data"), "two").unwrap();
    check(
        &doc,
        "prepare",
        &json(&["prepare", "pb.yml"]),
        &[("", "`rookery prepare`")],
    );
    check(
        &doc,
        "distribute",
        &json(&["distribute", "pb.yml"]),
        &[("", "`rookery distribute`")],
    );
    check(&doc, "rollout", &json(&["rollout", "pb.yml"]), &record);
    check(
        &doc,
        "rollback --dry-run",
        &json(&["rollback", "--dry-run", "pb.yml"]),
        &[("", "--dry-run`")],
    );
}
