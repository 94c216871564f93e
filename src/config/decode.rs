//! Typed reading of YAML nodes that collects problems instead of stopping at one.
//!
//! Every getter returns `Option`: `None` means "absent or wrong", and when wrong a
//! problem naming the key path (`services.api.quorum`) has already been recorded. The
//! loaders in `inventory.rs` and `playbook.rs` read like a schema because of this.

use crate::config::diagnostic::Invalid;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::config::diagnostic::{Diagnostic, Diagnostics, Pos, suggestion};
use crate::config::units::{ByteSize, Rate, parse_duration};
use crate::config::yaml::{Node, Value};

/// Reads nodes of one file and remembers what was wrong with them.
pub struct Decoder {
    file: String,
    problems: Diagnostics,
    /// Problems that may have left the model wrong (a value dropped or defaulted);
    /// unknown keys do not count: the model is as if they were absent.
    damage: usize,
}

/// A file decoded as far as it goes, so that the checks across files can still run
/// and every problem is reported at once: the model (none when the YAML itself does
/// not parse), its problems, and where those problems may have falsified it.
#[derive(Debug)]
pub struct Partial<T> {
    pub value: Option<T>,
    pub problems: Diagnostics,
    /// Some problem other than an unknown key: the model may lack a value.
    pub damaged: bool,
    /// Playbook services whose own settings had such a problem.
    pub damaged_services: Vec<String>,
}

impl<T> Partial<T> {
    /// A file that could not be read or parsed: its problems and no model.
    pub fn failed(problems: impl Into<Diagnostics>) -> Self {
        Partial {
            value: None,
            problems: problems.into(),
            damaged: true,
            damaged_services: Vec::new(),
        }
    }

    /// The model when the file has no problem at all.
    pub fn into_result(self) -> Result<T, Diagnostics> {
        match self.value {
            Some(v) if self.problems.is_empty() => Ok(v),
            _ => Err(self.problems.sorted()),
        }
    }
}

/// The entries of a mapping whose keys were checked against a schema.
pub struct Map<'n> {
    pub pos: Pos,
    entries: Vec<(&'n str, &'n Node)>,
}

impl<'n> Map<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .filter(|v| !matches!(v.value, Value::Null))
    }

    /// Like [`Map::get`], but a key written with no value (`zookeeper:`) counts.
    pub fn get_even_null(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

/// Joins a key path for messages: `join("services.api", "quorum")`.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A path written in a file, taken relative to that file's folder and cleaned of `.`
/// and `..` where that can be done without the filesystem.
pub fn resolve_path(base: &Path, written: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in base.join(written).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

fn place(path: &str) -> String {
    if path.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in `{path}`")
    }
}

impl Decoder {
    pub fn new(file: &str) -> Self {
        Decoder {
            file: file.to_string(),
            problems: Diagnostics::default(),
            damage: 0,
        }
    }

    /// How many problems so far may have left the model wrong.
    pub fn damage(&self) -> usize {
        self.damage
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.damage += 1;
        self.problems
            .push(Diagnostic::new(&self.file, Some(pos), message));
    }

    /// A problem of the file as a whole, such as a missing top-level key.
    pub fn file_error(&mut self, message: impl Into<String>) {
        self.damage += 1;
        self.problems
            .push(Diagnostic::new(&self.file, None, message));
    }

    pub fn finish(self) -> Diagnostics {
        self.problems
    }

    /// A mapping whose keys must all be in `allowed`. A missing (null) node reads as an
    /// empty mapping, so optional sections may be left out or left empty.
    pub fn map<'n>(&mut self, node: &'n Node, path: &str, allowed: &[&str]) -> Map<'n> {
        let entries = self.named_entries(node, path);
        let mut kept = Vec::with_capacity(entries.len());
        for (key, pos, value) in entries {
            if allowed.contains(&key) {
                kept.push((key, value));
            } else {
                let hint = suggestion(key, allowed.iter().copied());
                // Not damage: the model is as if the key were absent.
                self.problems.push(Diagnostic::new(
                    &self.file,
                    Some(pos),
                    format!("unknown key `{key}` {}{hint}", place(path)),
                ));
            }
        }
        Map {
            pos: node.pos,
            entries: kept,
        }
    }

    /// The entries of a mapping keyed by user-chosen names (hosts, racks, services),
    /// with the position of each key. Duplicate names are reported and dropped.
    pub fn named_entries<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
    ) -> Vec<(&'n str, Pos, &'n Node)> {
        let entries = match &node.value {
            Value::Null => return Vec::new(),
            Value::Map(entries) => entries,
            _ => {
                let what = if path.is_empty() {
                    "the file".to_string()
                } else {
                    format!("`{path}`")
                };
                self.error(
                    node.pos,
                    format!("{what} must be a mapping, found {}", node.kind()),
                );
                return Vec::new();
            }
        };
        let mut out: Vec<(&'n str, Pos, &'n Node)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let Some(key) = k.as_scalar() else {
                self.error(k.pos, format!("empty key {}", place(path)));
                continue;
            };
            if let Some((_, first, _)) = out.iter().find(|(name, _, _)| *name == key) {
                let line = first.line;
                self.error(
                    k.pos,
                    format!(
                        "duplicate key `{key}` {} (first set on line {line})",
                        place(path)
                    ),
                );
                continue;
            }
            out.push((key, k.pos, v));
        }
        out
    }

    /// The items of a list; a single scalar reads as a list of one.
    pub fn list<'n>(&mut self, node: &'n Node, path: &str) -> Vec<&'n Node> {
        match &node.value {
            Value::Null => Vec::new(),
            Value::Seq(items) => items.iter().collect(),
            Value::Scalar { .. } => vec![node],
            Value::Map(_) => {
                self.error(
                    node.pos,
                    format!("`{path}` must be a list, found a mapping"),
                );
                Vec::new()
            }
        }
    }

    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Scalar { text, .. } => Some(text.clone()),
            Value::Null => None,
            _ => {
                self.error(
                    node.pos,
                    format!("`{path}` must be a string, found {}", node.kind()),
                );
                None
            }
        }
    }

    /// A list of strings (or one string).
    pub fn strings(&mut self, node: &Node, path: &str) -> Vec<(String, Pos)> {
        let items = self.list(node, path);
        items
            .into_iter()
            .filter_map(|item| self.string(item, path).map(|s| (s, item.pos)))
            .collect()
    }

    pub fn u32(&mut self, node: &Node, path: &str) -> Option<u32> {
        let text = self.string(node, path)?;
        match text.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(
                    node.pos,
                    format!("`{path}` must be a whole number, found `{text}`"),
                );
                None
            }
        }
    }

    pub fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        let text = self.string(node, path)?;
        match text.as_str() {
            "true" | "yes" | "on" => Some(true),
            "false" | "no" | "off" => Some(false),
            _ => {
                self.error(
                    node.pos,
                    format!("`{path}` must be true or false, found `{text}`"),
                );
                None
            }
        }
    }

    pub fn duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        self.parsed(node, path, parse_duration)
    }

    pub fn size(&mut self, node: &Node, path: &str) -> Option<ByteSize> {
        self.parsed(node, path, ByteSize::parse)
    }

    pub fn rate(&mut self, node: &Node, path: &str) -> Option<Rate> {
        self.parsed(node, path, Rate::parse)
    }

    /// A scalar run through `parse`; its error message follows the key path.
    pub fn parsed<T>(
        &mut self,
        node: &Node,
        path: &str,
        parse: impl FnOnce(&str) -> Result<T, Invalid>,
    ) -> Option<T> {
        let text = self.string(node, path)?;
        match parse(&text) {
            Ok(v) => Some(v),
            Err(msg) => {
                self.error(node.pos, format!("`{path}`: {msg}"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml;

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        let root = yaml::parse("f.yml", "adress: x\nlabels: {}\nzebra: 1\n").unwrap();
        let mut d = Decoder::new("f.yml");
        let m = d.map(&root, "hosts.web-1", &["address", "labels"]);
        assert!(m.get("labels").is_some());
        let text: Vec<String> = d.finish().iter().map(|p| p.to_string()).collect();
        assert_eq!(
            text,
            [
                "f.yml:1:1: unknown key `adress` in `hosts.web-1` (did you mean `address`?)",
                "f.yml:3:1: unknown key `zebra` in `hosts.web-1`",
            ]
        );
    }

    #[test]
    fn paths_are_taken_from_the_file() {
        assert_eq!(
            resolve_path(Path::new("playbooks"), "../build/x"),
            PathBuf::from("build/x")
        );
        assert_eq!(resolve_path(Path::new(""), "./a"), PathBuf::from("a"));
        assert_eq!(
            resolve_path(Path::new("/etc/r"), "/abs"),
            PathBuf::from("/abs")
        );
        assert_eq!(
            resolve_path(Path::new(".."), "../x"),
            PathBuf::from("../../x")
        );
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let root = yaml::parse("f.yml", "a: 1\nb: 2\na: 3\n").unwrap();
        let mut d = Decoder::new("f.yml");
        let entries = d.named_entries(&root, "");
        assert_eq!(entries.len(), 2);
        assert_eq!(
            d.finish().iter().next().unwrap().to_string(),
            "f.yml:3:1: duplicate key `a` at the top level (first set on line 1)"
        );
    }

    #[test]
    fn typed_values() {
        let root = yaml::parse("f.yml", "n: two\nd: 30\nr: 50MiB/s\n").unwrap();
        let mut d = Decoder::new("f.yml");
        let m = d.map(&root, "", &["n", "d", "r"]);
        assert_eq!(d.u32(m.get("n").unwrap(), "n"), None);
        assert_eq!(d.duration(m.get("d").unwrap(), "d"), None);
        assert_eq!(d.rate(m.get("r").unwrap(), "r"), Some(Rate(50 << 20)));
        let problems: Vec<String> = d.finish().iter().map(|p| p.message.clone()).collect();
        assert_eq!(
            problems,
            [
                "`n` must be a whole number, found `two`",
                "`d`: `30` is not a duration (expected e.g. `30s`, `5m`, `1h30m`, `500ms`)",
            ]
        );
    }
}
