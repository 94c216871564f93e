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
//!
//! Here: the nodes, reading and checking the text, and parsing; `builder.rs` turns
//! the parser's events into nodes.

mod builder;

use builder::Builder;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};

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

#[cfg(test)]
mod tests;
