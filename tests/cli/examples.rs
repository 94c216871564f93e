//! The example files shipped in `inventory/` and `playbooks/` and the complete examples
//! in `docs/` must stay valid: they are what new users copy.

use crate::helper::{Test, repo};

#[test]
fn shipped_examples_plan_cleanly() {
    let root = repo();
    let (inv, pb) = (
        root.join("inventory/local.yml"),
        root.join("playbooks/demo.yml"),
    );
    Test::new()
        .args(["plan", "-i", inv.to_str().unwrap(), pb.to_str().unwrap()])
        .stdout_has("Rollout:")
        .run();
}

/// Every ```yaml block whose first line is `# inventory example` or `# playbook example`
/// loads without a problem.
#[test]
fn docs_examples_are_valid() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("```yaml\n") {
            let body = &rest[start + 8..];
            let end = body.find("\n```").expect("closed block");
            let block = &body[..end + 1];
            rest = &body[end + 4..];
            let name = path.file_name().unwrap().to_string_lossy();
            if block.starts_with("# inventory example") {
                rookery::inventory::Inventory::from_str(&name, block, std::path::Path::new("/"))
                    .unwrap_or_else(|e| {
                        panic!("inventory example in {name} is invalid: {e}\n{block}")
                    });
                checked += 1;
            } else if block.starts_with("# playbook example") {
                rookery::playbook::Playbook::from_str(&name, block, std::path::Path::new("/"))
                    .unwrap_or_else(|e| {
                        panic!("playbook example in {name} is invalid: {e}\n{block}")
                    });
                checked += 1;
            }
        }
    }
    assert!(
        checked > 0 || !repo().join("docs/inventory.md").exists(),
        "no example was found in docs/"
    );
}
