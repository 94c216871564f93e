//! The raw layer: YAML text to a tree of nodes that remember where they came from.
//!
//! Inventories and playbooks are decoded by hand from this tree instead of through
//! `serde`, because an operator needs *every* problem of a file at once, each with its
//! `file:line:column`, and serde stops at the first one. Aliases (`*name`) are expanded
//! and merge keys (`<<: *defaults`) are honoured, so the usual YAML habits for sharing
//! settings keep working.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diagnostic::{Diagnostic, Pos};

/// One YAML node and the position of its first character.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub enum Value {
    /// `~`, `null`, or nothing at all after a key.
    Null,
    /// Any scalar; `quoted` tells `"1"` from `1`.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Entries in document order; keys are scalars (complex keys are rejected).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A short name for the node's kind, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "nothing",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The text of a scalar key or value.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// Parses one YAML document. An empty file is a `Null` node.
pub fn parse(file: &str, text: &str) -> Result<Node, Diagnostic> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, false) {
        let m = e.marker();
        return Err(Diagnostic::new(
            file,
            Some(Pos::from_marker(m)),
            format!("YAML syntax error: {}", e.info()),
        ));
    }
    if let Some((pos, message)) = builder.error {
        return Err(Diagnostic::new(file, Some(pos), message));
    }
    Ok(builder.root.unwrap_or(Node {
        value: Value::Null,
        pos: Pos { line: 1, col: 1 },
    }))
}

impl Pos {
    fn from_marker(m: &Marker) -> Pos {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Pos {
            line: m.line() as u32,
            col: m.col() as u32 + 1,
        }
    }
}

/// Builds the node tree from parser events.
#[derive(Default)]
struct Builder {
    /// Open collections: the node under construction and, for maps, a pending key.
    stack: Vec<(Node, Option<Node>)>,
    anchors: HashMap<usize, Node>,
    /// Anchor ids of the open collections, parallel to `stack`.
    open_anchors: Vec<usize>,
    root: Option<Node>,
    error: Option<(Pos, String)>,
}

impl Builder {
    fn push_value(&mut self, node: Node) {
        let Some((parent, pending_key)) = self.stack.last_mut() else {
            if self.root.is_none() {
                self.root = Some(node);
            }
            return;
        };
        match &mut parent.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => match pending_key.take() {
                None => {
                    if !matches!(node.value, Value::Scalar { .. } | Value::Null) {
                        self.error.get_or_insert((
                            node.pos,
                            "a mapping key must be a plain word or string".to_string(),
                        ));
                    }
                    *pending_key = Some(node);
                }
                Some(key) => entries.push((key, node)),
            },
            _ => unreachable!("only collections are pushed on the stack"),
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from_marker(&mark);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                // `- !web-3` and `- &web` are YAML tags and anchors, not text: a host
                // pattern would silently vanish. Ask for quotes instead.
                if let Some(tag) = tag.filter(|t| t.handle == "!") {
                    let word = format!("!{}{text}", tag.suffix);
                    self.error.get_or_insert((
                        pos,
                        format!(
                            "`{}` is read by YAML as a tag; quote it: '{}'",
                            word.trim(),
                            word.trim()
                        ),
                    ));
                } else if anchor > 0 && !quoted && text.is_empty() {
                    self.error.get_or_insert((pos, "an anchor (`&name`) on an empty value; if `&` starts a pattern, quote it: '&name'".to_string()));
                }
                let value =
                    if !quoted && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
                        Value::Null
                    } else {
                        Value::Scalar { text, quoted }
                    };
                let node = Node { value, pos };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push_value(node);
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push((
                    Node {
                        value: Value::Seq(Vec::new()),
                        pos,
                    },
                    None,
                ));
                self.open_anchors.push(anchor);
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push((
                    Node {
                        value: Value::Map(Vec::new()),
                        pos,
                    },
                    None,
                ));
                self.open_anchors.push(anchor);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (mut node, _) = self.stack.pop().expect("balanced events");
                let anchor = self.open_anchors.pop().unwrap_or(0);
                if let Value::Map(entries) = &mut node.value {
                    expand_merge_keys(entries);
                }
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push_value(node);
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(target) => {
                    let node = Node {
                        value: target.value.clone(),
                        pos,
                    };
                    self.push_value(node);
                }
                None => {
                    self.error
                        .get_or_insert((pos, "alias refers to an unknown anchor".into()));
                }
            },
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd
            | Event::Nothing => {}
        }
    }
}

/// Applies YAML merge keys: `<<: *base` (or a list of them) adds the entries of the
/// merged mappings that the mapping does not set itself.
fn expand_merge_keys(entries: &mut Vec<(Node, Node)>) {
    if !entries.iter().any(|(k, _)| k.as_scalar() == Some("<<")) {
        return;
    }
    let (merges, mut own): (Vec<_>, Vec<_>) = entries
        .drain(..)
        .partition(|(k, _)| k.as_scalar() == Some("<<"));
    for (key, value) in merges {
        let sources: Vec<Node> = match value.value {
            Value::Seq(items) => items,
            _ => vec![value],
        };
        for source in sources {
            match source.value {
                Value::Map(extra) => {
                    for (k, v) in extra {
                        let exists = own.iter().any(|(ok, _)| ok.as_scalar() == k.as_scalar());
                        if !exists {
                            own.push((k, v));
                        }
                    }
                }
                // Leave a bad merge in place so the decoder reports it as a key.
                _ => own.push((key.clone(), source)),
            }
        }
    }
    *entries = own;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_keys(node: &Node) -> Vec<String> {
        match &node.value {
            Value::Map(e) => e
                .iter()
                .map(|(k, _)| k.as_scalar().unwrap().to_string())
                .collect(),
            _ => panic!("not a map"),
        }
    }

    #[test]
    fn positions_are_one_based() {
        let root = parse("t.yml", "a: 1\nb:\n  c: x\n").unwrap();
        let Value::Map(entries) = &root.value else {
            panic!()
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(entries[1].1.pos.line, 3);
        let Value::Map(inner) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(inner[0].0.pos, Pos { line: 3, col: 3 });
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse("t.yml", "a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(err.file, "t.yml");
        assert!(err.pos.is_some());
        assert!(
            err.message.starts_with("YAML syntax error"),
            "{}",
            err.message
        );
    }

    #[test]
    fn merge_keys_and_aliases() {
        let text = "base: &b {x: 1, y: 2}\nitem:\n  <<: *b\n  y: 3\n";
        let root = parse("t.yml", text).unwrap();
        let Value::Map(entries) = &root.value else {
            panic!()
        };
        let item = &entries[1].1;
        assert_eq!(map_keys(item), ["y", "x"]);
        let Value::Map(ie) = &item.value else {
            panic!()
        };
        assert_eq!(ie[0].1.as_scalar(), Some("3"));
    }

    #[test]
    fn unquoted_exclusions_are_refused() {
        let err = parse("t.yml", "hosts: [a, !b]\n").unwrap_err();
        assert_eq!(err.message, "`!b` is read by YAML as a tag; quote it: '!b'");
        let err = parse("t.yml", "hosts:\n  - a\n  - &b\n").unwrap_err();
        assert!(
            err.message
                .starts_with("an anchor (`&name`) on an empty value"),
            "{}",
            err.message
        );
        assert!(parse("t.yml", "hosts: [a, '!b', '&c']\n").is_ok());
    }

    #[test]
    fn empty_document_is_null() {
        assert!(matches!(parse("t.yml", "").unwrap().value, Value::Null));
        assert!(matches!(
            parse("t.yml", "# only a comment\n").unwrap().value,
            Value::Null
        ));
    }

    #[test]
    fn quoted_scalars_are_not_null() {
        let root = parse("t.yml", "a: ''\nb: ~\n").unwrap();
        let Value::Map(e) = &root.value else { panic!() };
        assert!(matches!(e[0].1.value, Value::Scalar { quoted: true, .. }));
        assert!(matches!(e[1].1.value, Value::Null));
    }
}
