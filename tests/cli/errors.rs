//! Every class of configuration error, with its exact text and exit status: these
//! messages are what an operator sees at 3 a.m., so they are pinned here.

use crate::support::Test;

const INV: &str = "\
cluster: test
datacenters:
  east:
    racks:
      r1:
        hosts:
          a: {services: [db, api]}
          b: {services: [db, api]}
      r2:
        hosts:
          c: {services: [db, api]}
";

const PB: &str = "\
artifact: {source: build, destination: /srv/app}
services:
  db: {start: ./db}
  api: {start: ./api, depends_on: [db]}
";

fn plan() -> Test {
    Test::new().args(["plan", "-i", "inv.yml", "pb.yml"])
}

#[test]
fn valid_files_plan_cleanly() {
    plan()
        .file("inv.yml", INV)
        .file("pb.yml", PB)
        .stdout_has("Rollout: 2 services in dependency order")
        .run();
}

#[test]
fn yaml_syntax_error_names_file_line_and_column() {
    plan()
        .file("inv.yml", "datacenters:\n  east: [r1\n")
        .file("pb.yml", PB)
        .status(3)
        .stderr(
            "error: invalid configuration: 1 problem found\n  inv.yml:3:1: YAML syntax error: while parsing a flow sequence, expected ',' or ']'\n",
        )
        .run();
}

#[test]
fn unknown_keys_are_named_with_the_closest_valid_key() {
    plan()
        .file("inv.yml", &INV.replace("a: {services", "a: {adress: 10.0.0.1, services"))
        .file("pb.yml", &PB.replace("depends_on", "depend_on").replace("services:", "servics: {}\nservices:"))
        .status(3)
        .stderr(
            "error: invalid configuration: 3 problems found
  inv.yml:7:15: unknown key `adress` in `datacenters.east.racks.r1.hosts.a` (did you mean `address`?)
  pb.yml:2:1: unknown key `servics` at the top level (did you mean `services`?)
  pb.yml:5:23: unknown key `depend_on` in `services.api` (did you mean `depends_on`?)
",
        )
        .run();
}

#[test]
fn unknown_references_are_named() {
    plan()
        .file(
            "inv.yml",
            &format!("{INV}groups:\n  edge: [a, rack:r9]\norigin: buildd\n"),
        )
        .file(
            "pb.yml",
            &format!("{PB}  web: {{start: ./web, hosts: [group:edgy], depends_on: [apy]}}\n"),
        )
        .status(3)
        // The playbook's own references come too; where `web` runs is not judged
        // against an inventory that has problems of its own.
        .stderr(
            "error: invalid configuration: 3 problems found
  inv.yml:13:13: group `edge`: `rack:r9` matches no host
  inv.yml:14:9: `origin` names unknown host `buildd`; use `controller` or a host of the inventory
  pb.yml:5:57: service `web` depends on unknown service `apy` (did you mean `api`?)
",
        )
        .run();
    plan()
        .file("inv.yml", INV)
        .file(
            "pb.yml",
            &format!("{PB}  web: {{start: ./web, hosts: [group:edgy, d], depends_on: [apy]}}\n"),
        )
        .status(3)
        .stderr(
            "error: invalid configuration: 3 problems found
  pb.yml:5:31: `services.web.hosts`: unknown group `edgy`
  pb.yml:5:43: `services.web.hosts`: `d` is not a host, group, DC or rack
  pb.yml:5:60: service `web` depends on unknown service `apy` (did you mean `api`?)
",
        )
        .run();
}

#[test]
fn dependency_cycles_are_named_in_order() {
    plan()
        .file("inv.yml", INV)
        .file(
            "pb.yml",
            "\
artifact: {source: build, destination: /srv/app}
services:
  db: {start: ./db, depends_on: [api]}
  cache: {start: ./cache, depends_on: [db], hosts: [a]}
  api: {start: ./api, depends_on: [cache]}
",
        )
        .status(3)
        .stderr(
            "error: invalid configuration: 1 problem found\n  pb.yml:3:34: dependency cycle: db -> api -> cache -> db\n",
        )
        .run();
}

#[test]
fn a_quorum_that_forbids_every_restart_is_rejected() {
    plan()
        .file("inv.yml", INV)
        .file("pb.yml", &PB.replace("./db}", "./db, quorum: 100%}"))
        .status(3)
        .stderr(
            "error: invalid configuration: 1 problem found
  pb.yml:3:29: quorum of service `db` is 3 but it runs on 3 hosts: no host could ever restart (quorum must be below the host count)
",
        )
        .run();
}

#[test]
fn duplicate_host_names_and_addresses() {
    plan()
        .file(
            "inv.yml",
            "\
transport: ssh
coordination: {zookeeper: {connect: 'zk:2181'}}
datacenters:
  east:
    racks:
      r1: {hosts: {a: 10.0.0.1, b: 10.0.0.2}}
      r2: {hosts: {a: 10.0.0.3, c: 10.0.0.2}}
",
        )
        .file(
            "pb.yml",
            "artifact: {source: b, destination: /srv}\nservices: {db: {start: x, hosts: [a]}}\n",
        )
        .status(3)
        .stderr(
            "error: invalid configuration: 2 problems found
  inv.yml:7:20: duplicate host `a` (first defined on line 6)
  inv.yml:7:33: host `c` has the same address as `b`: 10.0.0.2:22
",
        )
        .run();
}

#[test]
fn bad_durations_sizes_and_rates_are_named() {
    plan()
        .file("inv.yml", INV)
        .file(
            "pb.yml",
            "\
artifact: {source: build, destination: /srv/app}
distribution:
  seed_window: 30
  piece_size: 4 parsecs
  upload_limit: 400Mbit
services:
  db: {start: ./db, health_deadline: 5 minutes}
",
        )
        .status(3)
        .stderr(
            "error: invalid configuration: 4 problems found
  pb.yml:3:16: `distribution.seed_window`: `30` is not a duration (expected e.g. `30s`, `5m`, `1h30m`, `500ms`)
  pb.yml:4:15: `distribution.piece_size`: `4 parsecs` is not a size (expected e.g. `4MiB`, `512KiB`, `2GB`)
  pb.yml:5:17: `distribution.upload_limit`: `400Mbit` is not a rate (expected e.g. `50MiB/s`, `400Mbit/s`, `1Gbit/s`)
  pb.yml:7:38: `services.db.health_deadline`: `5 minutes` is not a duration (expected e.g. `30s`, `5m`, `1h30m`, `500ms`)
",
        )
        .run();
}

#[test]
fn problems_of_both_files_come_together() {
    plan()
        .file(
            "inv.yml",
            &INV.replace("cluster: test", "cluster: test\nclustr: x"),
        )
        .file("pb.yml", &PB.replace("/srv/app", "srv"))
        .status(3)
        .stderr(
            "error: invalid configuration: 2 problems found
  inv.yml:2:1: unknown key `clustr` at the top level (did you mean `cluster`?)
  pb.yml:1:40: `artifact.destination` must be an absolute path without `.` or `..`, found `srv`
",
        )
        .run();
}

#[test]
fn missing_files_and_inventory() {
    plan()
        .file("pb.yml", PB)
        .status(3)
        .stderr_has(
            "error: invalid configuration: 1 problem found\n  inv.yml: cannot read the inventory: ",
        )
        .run();
    Test::new()
        .args(["plan", "pb.yml"])
        .status(2)
        .stderr("error: no inventory given: pass `-i FILE` or set ROOKERY_INVENTORY\n")
        .run();
}

#[test]
fn a_limit_that_matches_nothing_is_an_error() {
    plan()
        .file("inv.yml", INV)
        .file("pb.yml", PB)
        .args(["--limit", "dc:west"])
        .status(2)
        .stderr("error: --limit `dc:west`: `dc:west` matches no host\n")
        .run();
    plan()
        .file("inv.yml", INV)
        .file("pb.yml", PB)
        .args(["--limit", "east/r3"])
        .status(2)
        .stderr("error: --limit `east/r3`: `east/r3` is not a host, group, DC or rack (did you mean `east/r2`?)\n")
        .run();
}

#[test]
fn rollout_commands_refuse_what_they_cannot_do() {
    // Nothing distributed yet: nothing to roll to.
    Test::new()
        .file("inv.yml", INV)
        .file("pb.yml", PB)
        .args(["rollout", "-i", "inv.yml", "pb.yml"])
        .status(2)
        .stderr("error: nothing is staged for this playbook's services: run `rookery distribute` first, or pass --version\n")
        .run();
    Test::new()
        .file("inv.yml", INV)
        .file("pb.yml", PB)
        .args(["rollback", "-i", "inv.yml", "pb.yml"])
        .status(2)
        .stderr("error: no deploy is recorded, so there is no previous release to return to\n")
        .run();
    Test::new()
        .file("inv.yml", INV)
        .file("pb.yml", PB)
        .args(["rollback", "-i", "inv.yml", "pb.yml", "--service", "dv"])
        .status(2)
        .stderr("error: --service `dv`: no such service in playbook `pb`\n")
        .run();
    // Invalid input is reported before anything is touched.
    Test::new()
        .file("inv.yml", INV)
        .file("pb.yml", "services: {}\n")
        .args(["deploy", "-i", "inv.yml", "pb.yml"])
        .status(3)
        .stderr("error: invalid configuration: 1 problem found\n  pb.yml: missing key `artifact`\n")
        .run();
}

#[test]
fn a_tracker_for_hosts_the_inventory_lacks_is_refused() {
    let made = Test::new()
        .file(
            "inv.yml",
            "datacenters: {east: {racks: {r1: {hosts: {a: ~, b: ~}}}}}\n",
        )
        .file("art/f", "x")
        .args(["torrent", "create", "art", "-o", "art.torrent"])
        .run();
    Test::new_in(made.dir)
        .args(["-i", "inv.yml", "tracker", "--torrent", "art.torrent"])
        .args(["--host", "a", "--host", "c"])
        .status(2)
        .stderr("error: --host `c` is not a host of the inventory\n")
        .run();
}
