//! Building the node tree from the parser's events, one at a time: aliases expanded
//! at their anchors' size, merge keys applied, and the tree's size and depth bounded.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::*;

impl Pos {
    pub(super) fn from_marker(m: &Marker) -> Pos {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Pos {
            line: m.line() as u32,
            col: m.col() as u32 + 1,
        }
    }
}

/// Builds the node tree from parser events.
#[derive(Default)]
pub(super) struct Builder {
    /// Open collections: the node under construction and, for maps, a pending key.
    stack: Vec<(Node, Option<Node>)>,
    anchors: HashMap<usize, Node>,
    /// Anchor ids of the open collections, parallel to `stack`.
    open_anchors: Vec<usize>,
    pub(super) root: Option<Node>,
    pub(super) error: Option<(Pos, String)>,
    /// Nodes built so far, aliases counted at their expanded size.
    built: usize,
    /// `built` when each open collection started, parallel to `stack`.
    open_built: Vec<usize>,
    /// Expanded size and nesting depth of each anchored node, by anchor id.
    anchor_sizes: HashMap<usize, (usize, usize)>,
    /// Deepest child nesting of each open collection, parallel to `stack`.
    open_depth: Vec<usize>,
    /// Set when the tree grew past its bounds: later events are ignored.
    pub(super) stopped: bool,
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
