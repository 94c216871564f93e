//! The raw layer: YAML text to a tree of nodes that remember where they came from.
//!
//! Inventories and playbooks are decoded by hand from this tree instead of through
//! `serde`, because an operator needs *every* problem of a file at once, each with its
//! `file:line:column`, and serde stops at the first one. Aliases (`*name`) are expanded
//! and merge keys (`<<: *defaults`) are honoured, so the usual YAML habits for sharing
//! settings keep working.
//!
//! The files come from operators but also from anywhere a repository accepts changes
//! from, so the text is treated as hostile: bytes that are not UTF-8 and characters
//! YAML forbids (a NUL ends the text for the parser, silently dropping what follows)
//! are refused with their position, and the tree is bounded in size and depth, so an
//! alias bomb ("billion laughs") or a deep nest is an error, not an exhausted memory
//! or stack.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::config::diagnostic::{Diagnostic, Pos};

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

/// Largest configuration file read, in bytes: a big inventory is a few megabytes.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Most values a document may expand to, aliases included (every 64 bytes of a
/// scalar count as one more): far above any real inventory (10,000 hosts are some
/// 200,000), far below what would exhaust memory.
pub const MAX_NODES: usize = 1_000_000;
/// Deepest nesting of lists and mappings (dropping a tree recurses on its depth).
pub const MAX_DEPTH: usize = 128;

/// Reads a configuration file as UTF-8 text, refusing one too large to be a
/// configuration and naming the position of the first byte that is not UTF-8.
/// `what` names the file's role for the I/O message ("inventory").
pub fn read(path: &std::path::Path, file: &str, what: &str) -> Result<String, Diagnostic> {
    use std::io::Read;
    let cannot = |e: &dyn std::fmt::Display| {
        Diagnostic::new(file, None, format!("cannot read the {what}: {e}"))
    };
    let f = std::fs::File::open(path).map_err(|e| cannot(&e))?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| cannot(&e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Diagnostic::new(
            file,
            None,
            format!(
                "the {what} is larger than {} MiB; that is not a configuration file",
                MAX_FILE_BYTES >> 20
            ),
        ));
    }
    text_of(file, bytes)
}

/// The bytes as text, or the position of the first byte that is not UTF-8.
pub fn text_of(file: &str, bytes: Vec<u8>) -> Result<String, Diagnostic> {
    String::from_utf8(bytes).map_err(|e| {
        let good = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        // Valid up to `good`, so the prefix decodes.
        let before = std::str::from_utf8(&bytes[..good]).unwrap_or_default();
        Diagnostic::new(
            file,
            Some(position_after(before)),
            format!(
                "byte 0x{:02X} is not UTF-8: a YAML file must be UTF-8 text",
                bytes[good]
            ),
        )
    })
}

/// The position of the character that follows `before`, counting characters as the
/// YAML parser does.
fn position_after(before: &str) -> Pos {
    let line = before.matches('\n').count() as u32 + 1;
    let last = before.rfind('\n').map_or(before, |i| &before[i + 1..]);
    Pos {
        line,
        col: last.chars().count() as u32 + 1,
    }
}

/// Characters YAML 1.2 allows in a stream (its `c-printable`, plus the BOM).
fn printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
        || c >= '\u{10000}'
}

/// The first character YAML forbids, with its position: the parser would stop at a
/// NUL and take the text before it for the whole file.
fn check_characters(file: &str, text: &str) -> Result<(), Diagnostic> {
    let Some((at, c)) = text.char_indices().find(|&(_, c)| !printable(c)) else {
        return Ok(());
    };
    let name = match c {
        '\0' => "a NUL byte (U+0000)".to_string(),
        c => format!("control character U+{:04X}", c as u32),
    };
    Err(Diagnostic::new(
        file,
        Some(position_after(&text[..at])),
        format!("{name} is not allowed in a YAML file"),
    ))
}

/// Parses one YAML document. An empty file is a `Null` node.
pub fn parse(file: &str, text: &str) -> Result<Node, Diagnostic> {
    check_characters(file, text)?;
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    // Events one by one rather than `Parser::load`, which recurses once per level of
    // nesting (a deep nest would overflow the stack) and cannot stop early.
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| {
            Diagnostic::new(
                file,
                Some(Pos::from_marker(e.marker())),
                format!("YAML syntax error: {}", e.info()),
            )
        })?;
        // One document: what follows the first is not read, as before.
        let end = matches!(ev, Event::DocumentEnd | Event::StreamEnd);
        builder.on_event(ev, mark);
        if end || builder.stopped {
            break;
        }
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
    /// Nodes built so far, aliases counted at their expanded size.
    built: usize,
    /// `built` when each open collection started, parallel to `stack`.
    open_built: Vec<usize>,
    /// Expanded size and nesting depth of each anchored node, by anchor id.
    anchor_sizes: HashMap<usize, (usize, usize)>,
    /// Deepest child nesting of each open collection, parallel to `stack`.
    open_depth: Vec<usize>,
    /// Set when the tree grew past its bounds: later events are ignored.
    stopped: bool,
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

impl Builder {
    /// Counts `n` more nodes; past [`MAX_NODES`], records the error and stops building.
    fn grow(&mut self, n: usize, pos: Pos) -> bool {
        self.built = self.built.saturating_add(n);
        if self.built > MAX_NODES {
            self.stop(pos, format!("the document expands to more than {MAX_NODES} values (aliases counted at their size): refusing it, an alias bomb would exhaust memory"));
            return false;
        }
        true
    }

    /// A finished value `depth` levels deep goes into the open collection.
    fn note_depth(&mut self, depth: usize) {
        if let Some(d) = self.open_depth.last_mut() {
            *d = (*d).max(depth);
        }
    }

    fn stop(&mut self, pos: Pos, message: String) {
        self.error.get_or_insert((pos, message));
        self.stopped = true;
        self.stack.clear();
        self.anchors.clear();
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.stopped {
            return;
        }
        let pos = Pos::from_marker(&mark);
        if !self.within_bounds(&ev, pos) {
            return;
        }
        match ev {
            Event::Scalar(text, style, anchor, tag) => self.scalar(text, style, anchor, tag, pos),
            Event::SequenceStart(anchor, _) => self.open(Value::Seq(Vec::new()), anchor, pos),
            Event::MappingStart(anchor, _) => self.open(Value::Map(Vec::new()), anchor, pos),
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Alias(id) => self.alias(id, pos),
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd
            | Event::Nothing => {}
        }
    }
}

impl Builder {
    /// Counts the nodes `ev` adds (an alias at its anchor's size) and checks the
    /// nesting it makes; past either bound, records the error, stops building and
    /// returns false.
    fn within_bounds(&mut self, ev: &Event, pos: Pos) -> bool {
        let (cost, depth) = match ev {
            Event::Scalar(text, ..) => (1 + text.len() / 64, 0),
            Event::SequenceStart(..) | Event::MappingStart(..) => (1, 0),
            Event::Alias(id) => self.anchor_sizes.get(id).copied().unwrap_or((1, 0)),
            _ => (0, 0),
        };
        if !self.grow(cost, pos) {
            return false;
        }
        if let Event::Alias(_) = ev {
            if self.stack.len() + depth > MAX_DEPTH {
                self.stop(
                    pos,
                    format!("lists and mappings nest deeper than {MAX_DEPTH} levels"),
                );
                return false;
            }
            self.note_depth(depth);
        }
        if matches!(ev, Event::SequenceStart(..) | Event::MappingStart(..))
            && self.stack.len() >= MAX_DEPTH
        {
            self.stop(
                pos,
                format!("lists and mappings nest deeper than {MAX_DEPTH} levels"),
            );
            return false;
        }
        true
    }

    /// A scalar (null when plain and empty or `~`/`null`), remembered under its
    /// anchor; a YAML tag, or an anchor on an empty plain value, is an error asking
    /// for quotes.
    fn scalar(
        &mut self,
        text: String,
        style: TScalarStyle,
        anchor: usize,
        tag: Option<Tag>,
        pos: Pos,
    ) {
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
            self.error.get_or_insert((
                pos,
                "an anchor (`&name`) on an empty value; if `&` starts a pattern, quote it: '&name'"
                    .to_string(),
            ));
        }
        let value = if !quoted && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
            Value::Null
        } else {
            Value::Scalar { text, quoted }
        };
        let node = Node { value, pos };
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
            self.anchor_sizes
                .insert(anchor, (1 + node_text_len(&node) / 64, 0));
        }
        self.push_value(node);
    }

    /// A list or mapping starts: it is open until its end event.
    fn open(&mut self, value: Value, anchor: usize, pos: Pos) {
        self.stack.push((Node { value, pos }, None));
        self.open_anchors.push(anchor);
        // This collection's own node is already counted.
        self.open_built.push(self.built - 1);
        self.open_depth.push(0);
    }

    /// The innermost open collection ends: merge keys expanded, remembered under its
    /// anchor with its size and depth, and put in its parent.
    fn close(&mut self) {
        let (mut node, _) = self.stack.pop().expect("balanced events");
        let anchor = self.open_anchors.pop().unwrap_or(0);
        let started = self.open_built.pop().unwrap_or(0);
        let depth = 1 + self.open_depth.pop().unwrap_or(0);
        self.note_depth(depth);
        if let Value::Map(entries) = &mut node.value {
            expand_merge_keys(entries);
        }
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
            self.anchor_sizes
                .insert(anchor, (self.built - started, depth));
        }
        self.push_value(node);
    }

    /// An alias: a copy of its anchor's node, at the alias's position.
    fn alias(&mut self, id: usize, pos: Pos) {
        match self.anchors.get(&id) {
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
        }
    }
}

fn node_text_len(node: &Node) -> usize {
    node.as_scalar().map_or(0, str::len)
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

    #[test]
    fn a_nul_byte_is_refused_where_it_is() {
        let err = parse("t.yml", "a: 1\nb:\n  c: x\0\n  d: y\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.yml:3:7: a NUL byte (U+0000) is not allowed in a YAML file"
        );
        let err = parse("t.yml", "a: \u{1b}[31m\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.yml:1:4: control character U+001B is not allowed in a YAML file"
        );
        assert!(parse("t.yml", "\u{feff}a: \"\\0 é\"\t\r\n").is_ok());
    }

    #[test]
    fn bytes_that_are_not_utf8_are_placed() {
        let err = text_of("t.yml", b"a: 1\nb: caf\xe9\n".to_vec()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.yml:2:7: byte 0xE9 is not UTF-8: a YAML file must be UTF-8 text"
        );
        let err = text_of("t.yml", b"\xc3\xa9: \xff".to_vec()).unwrap_err();
        assert_eq!(err.pos, Some(Pos { line: 1, col: 4 }));
    }

    /// Nine levels of nine aliases: 9^9 values if expanded.
    fn laughs() -> String {
        let mut text = "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n".to_string();
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"
            ));
        }
        text
    }

    #[test]
    fn an_alias_bomb_is_refused() {
        let err = parse("t.yml", &laughs()).unwrap_err();
        assert!(
            err.to_string().starts_with("t.yml:7:"),
            "refused where it grows past the bound: {err}"
        );
        assert!(
            err.message.contains("an alias bomb would exhaust memory"),
            "{err}"
        );
        // A long scalar repeated counts at its size.
        let long = "x".repeat(64 * 1024);
        let mut text = format!("a: &a {long}\nb: [");
        text.push_str(&"*a, ".repeat(20_000));
        text.push_str("]\n");
        assert!(parse("t.yml", &text).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_also_through_aliases() {
        let err = parse("t.yml", &"- ".repeat(100_000)).unwrap_err();
        assert_eq!(
            err.message,
            format!("lists and mappings nest deeper than {MAX_DEPTH} levels")
        );
        let deep = |n: usize| format!("{}x{}", "[".repeat(n), "]".repeat(n));
        let text = format!(
            "a: &a {}\nb: &b {}\n",
            deep(100),
            deep(50).replace('x', "*a")
        );
        let err = parse("t.yml", &text).unwrap_err();
        assert_eq!(err.pos, Some(Pos { line: 2, col: 57 }), "{err}");
        assert!(parse("t.yml", &deep(100)).is_ok());
    }
}
