//! Symlinks confined by resolution: every link of a tree, followed through the other
//! links of the tree as the kernel would follow them, must end inside the tree.
//!
//! Checking each link's text alone is not enough: `bin/up -> ..` stays inside,
//! `bin/esc -> up/..` looks harmless, yet it resolves to the tree's parent, and
//! `bin/esc2 -> esc/../..` to any directory above. The same resolution runs on the
//! manifest when the metainfo is made and when a host reads it ([`check`]), and on
//! the installed release before a switch makes it live ([`check_tree`]).
//!
//! A link whose target does not exist (dangling) is allowed, as long as the path it
//! names stays inside. Absolute targets and loops are refused.

use std::collections::HashMap;
use std::path::Path;

/// Links followed per resolution before it counts as a loop (Linux's `ELOOP` is 40).
const MAX_HOPS: u32 = 40;

/// Why a link is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Escape {
    #[error(
        "symlink `{path}` (-> `{target}`) resolves outside the tree: only links that stay within it can be shipped"
    )]
    Outside { path: String, target: String },
    #[error(
        "symlink `{path}` (-> `{target}`) is absolute; only links within the tree can be shipped"
    )]
    Absolute { path: String, target: String },
    #[error("symlink `{path}` (-> `{target}`) is part of a loop of links")]
    Loop { path: String, target: String },
    #[error("cannot read the links of {path}: {error}")]
    Io { path: String, error: String },
}

enum Stop {
    Outside,
    Absolute,
    Loop,
}

/// Resolves `target` from the directory `dir` (components below the root), following
/// every link that `lookup` knows; returns the resolved path's components.
fn resolve(
    mut dir: Vec<String>,
    target: &str,
    hops: &mut u32,
    lookup: &dyn Fn(&[String]) -> Option<String>,
) -> Result<Vec<String>, Stop> {
    if target.starts_with('/') {
        return Err(Stop::Absolute);
    }
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if dir.pop().is_none() {
                    return Err(Stop::Outside);
                }
            }
            name => {
                dir.push(name.to_string());
                if let Some(next) = lookup(&dir) {
                    *hops += 1;
                    if *hops > MAX_HOPS {
                        return Err(Stop::Loop);
                    }
                    dir.pop();
                    dir = resolve(dir, &next, hops, lookup)?;
                }
            }
        }
    }
    Ok(dir)
}

/// Checks one link at `path` (relative, `/`-separated) with `target`.
fn check_one(
    path: &str,
    target: &str,
    lookup: &dyn Fn(&[String]) -> Option<String>,
) -> Result<(), Escape> {
    let mut dir: Vec<String> = path.split('/').map(str::to_string).collect();
    dir.pop();
    let (path, target) = (path.to_string(), target.to_string());
    match resolve(dir, &target, &mut 0, lookup) {
        Ok(_) => Ok(()),
        Err(Stop::Outside) => Err(Escape::Outside { path, target }),
        Err(Stop::Absolute) => Err(Escape::Absolute { path, target }),
        Err(Stop::Loop) => Err(Escape::Loop { path, target }),
    }
}

/// Checks a set of links given as `(path, target)`, relative to one root, against
/// each other.
pub fn check<'a>(
    links: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
) -> Result<(), Escape> {
    let by_path: HashMap<&str, &str> = links.clone().into_iter().collect();
    let lookup = |p: &[String]| by_path.get(p.join("/").as_str()).map(|t| t.to_string());
    for (path, target) in links {
        check_one(path, target, &lookup)?;
    }
    Ok(())
}

/// Checks every link of the tree under `root`, as it is on disk.
pub fn check_tree(root: &Path) -> Result<(), Escape> {
    let mut found = Vec::new();
    collect(root, "", &mut found)?;
    let lookup = |p: &[String]| {
        let abs = root.join(p.join("/"));
        let md = std::fs::symlink_metadata(&abs).ok()?;
        if !md.file_type().is_symlink() {
            return None;
        }
        // A target that is not UTF-8 never matches a name: treat it as opaque text.
        Some(
            std::fs::read_link(&abs)
                .ok()?
                .to_string_lossy()
                .into_owned(),
        )
    };
    for (path, target) in &found {
        check_one(path, target, &lookup)?;
    }
    Ok(())
}

fn collect(root: &Path, rel: &str, found: &mut Vec<(String, String)>) -> Result<(), Escape> {
    let dir = root.join(rel);
    let io = |e: std::io::Error| Escape::Io {
        path: dir.display().to_string(),
        error: e.to_string(),
    };
    for entry in std::fs::read_dir(&dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let ty = entry.file_type().map_err(io)?;
        if ty.is_symlink() {
            let target = std::fs::read_link(entry.path()).map_err(io)?;
            found.push((child, target.to_string_lossy().into_owned()));
        } else if ty.is_dir() {
            collect(root, &child, found)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outside(links: &[(&str, &str)]) -> Option<String> {
        check(links.iter().copied()).err().map(|e| e.to_string())
    }

    #[test]
    fn a_chain_of_relative_links_that_climbs_out_is_refused() {
        // The chain: each text alone stays inside.
        let chain = [
            ("bin/up", ".."),
            ("bin/esc", "up/.."),
            ("bin/esc2", "esc/../.."),
        ];
        let err = outside(&chain).expect("refused");
        assert!(err.contains("bin/esc"), "{err}");
        // Without the links it follows, `up/..` from bin/ is bin/: inside.
        assert_eq!(outside(&[("bin/esc", "up/..")]), None);
        assert_eq!(outside(&[("bin/up", "..")]), None);
    }

    #[test]
    fn links_inside_dangling_absolute_and_loops() {
        assert_eq!(
            outside(&[
                ("a/b/c", "../../x/y"),
                ("lib/so", "so.1"),
                ("lib/so.1", "so.1.2")
            ]),
            None
        );
        assert_eq!(outside(&[("dangling", "missing/file")]), None);
        assert!(
            outside(&[("a", "/etc/passwd")])
                .unwrap()
                .contains("absolute")
        );
        assert!(outside(&[("a", "b"), ("b", "a")]).unwrap().contains("loop"));
        assert!(outside(&[("top", "../x")]).unwrap().contains("outside"));
        // A link to a directory link, then up twice: root/.. is outside.
        assert!(
            outside(&[("d/l", "../e"), ("e/x", "../d/l/../..")])
                .unwrap()
                .contains("outside")
        );
    }

    #[test]
    fn the_tree_on_disk_is_checked_the_same_way() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("release");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::os::unix::fs::symlink("..", root.join("bin/up")).unwrap();
        std::os::unix::fs::symlink("up/bin", root.join("bin/self")).unwrap();
        check_tree(&root).unwrap();
        std::os::unix::fs::symlink("up/..", root.join("bin/esc")).unwrap();
        let err = check_tree(&root).unwrap_err().to_string();
        assert!(err.contains("bin/esc"), "{err}");
    }
}
