//! Maps each node of a YAML document to its source range, keyed by JSON pointer.
//!
//! serde-saphyr turns the document into a value but keeps no positions, and the JSON Schema validator
//! and serde report errors by path. This map, built from the same parser's events, joins the two:
//! any pointer becomes a byte range. The walk is iterative, so nesting depth cannot overflow the stack.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser, Span};

use crate::diagnostics::ptr;

/// Byte range in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct NodeSpan {
    /// The mapping key that holds this node, when its parent is a mapping.
    pub key: Option<Range>,
    pub value: Range,
}

#[derive(Debug, Default)]
pub struct SpanMap {
    nodes: HashMap<String, NodeSpan>,
}

impl SpanMap {
    /// The node's span, or that of its nearest recorded ancestor (nodes reached through an alias or a
    /// merge key have no source of their own; the alias is the best place to point).
    pub fn lookup(&self, pointer: &str) -> Option<NodeSpan> {
        let mut p = pointer;
        loop {
            if let Some(s) = self.nodes.get(p) {
                return Some(*s);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

enum Frame {
    Map {
        pointer: String,
        key: Option<(String, Range)>,
        start: usize,
    },
    Seq {
        pointer: String,
        next: usize,
        start: usize,
    },
    /// A complex (non-scalar) mapping key: its contents have no pointer.
    SkipKey {
        depth: usize,
        parent_key_start: usize,
    },
}

/// Builds the map for the first document of `text`. Parse errors end the walk early: the caller has
/// already parsed the text successfully with serde-saphyr, so they do not happen in practice.
pub fn build(text: &str, line_starts: &[usize]) -> SpanMap {
    let mut map = SpanMap::default();
    let mut stack: Vec<Frame> = Vec::new();
    let byte = |m: &serde_saphyr::granit_parser::Marker| -> usize {
        m.byte_offset().unwrap_or_else(|| {
            let line_start = line_starts
                .get(m.line().saturating_sub(1))
                .copied()
                .unwrap_or(0);
            text[line_start..]
                .char_indices()
                .nth(m.col())
                .map_or(text.len(), |(i, _)| line_start + i)
        })
    };
    let range = |s: &Span| Range {
        start: byte(&s.start),
        end: byte(&s.end).max(byte(&s.start)),
    };

    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else { break };
        match event {
            Event::DocumentEnd => break,
            Event::Scalar(ref value, ..) => {
                let r = range(&span);
                if let Some((pointer, key)) = place(&mut stack, Node::Scalar(value.as_ref()), r) {
                    map.nodes.insert(pointer, NodeSpan { key, value: r });
                }
            }
            Event::Alias(_) => {
                let r = range(&span);
                if let Some((pointer, key)) = place(&mut stack, Node::Alias, r) {
                    map.nodes.insert(pointer, NodeSpan { key, value: r });
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let r = range(&span);
                let is_map = matches!(event, Event::MappingStart(..));
                match place(&mut stack, Node::Collection, r) {
                    Some((pointer, key)) => {
                        map.nodes
                            .insert(pointer.clone(), NodeSpan { key, value: r });
                        stack.push(if is_map {
                            Frame::Map {
                                pointer,
                                key: None,
                                start: r.start,
                            }
                        } else {
                            Frame::Seq {
                                pointer,
                                next: 0,
                                start: r.start,
                            }
                        });
                    }
                    None => match stack.last_mut() {
                        Some(Frame::SkipKey { depth, .. }) => *depth += 1,
                        _ => stack.push(Frame::SkipKey {
                            depth: 1,
                            parent_key_start: r.start,
                        }),
                    },
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let end = byte(&span.end);
                match stack.last_mut() {
                    Some(Frame::SkipKey {
                        depth,
                        parent_key_start,
                    }) => {
                        *depth -= 1;
                        if *depth == 0 {
                            let start = *parent_key_start;
                            stack.pop();
                            // The complex key is done; the mapping now expects its value under a
                            // key no pointer can name.
                            if let Some(Frame::Map { key, .. }) = stack.last_mut() {
                                *key = Some(("\u{0}complex-key".into(), Range { start, end }));
                            }
                        }
                    }
                    Some(Frame::Map { pointer, start, .. } | Frame::Seq { pointer, start, .. }) => {
                        let (pointer, start) = (std::mem::take(pointer), *start);
                        stack.pop();
                        if let Some(n) = map.nodes.get_mut(&pointer) {
                            n.value = Range {
                                start,
                                end: end.max(start),
                            };
                        }
                    }
                    None => {}
                }
            }
            _ => {}
        }
    }
    map
}

enum Node<'a> {
    Scalar(&'a str),
    Alias,
    Collection,
}

/// Decides where a node that starts now belongs. Returns its pointer and key range, or `None` when
/// the node is a mapping key (or inside a complex key) and so has no pointer of its own.
fn place(stack: &mut [Frame], node: Node<'_>, r: Range) -> Option<(String, Option<Range>)> {
    match stack.last_mut() {
        None => Some((String::new(), None)),
        Some(Frame::SkipKey { .. }) => None,
        Some(Frame::Seq { pointer, next, .. }) => {
            let p = ptr(pointer, *next);
            *next += 1;
            Some((p, None))
        }
        Some(Frame::Map { pointer, key, .. }) => match key.take() {
            Some((k, key_range)) => Some((ptr(pointer, k), Some(key_range))),
            None => {
                // This node is a key. A collection key is finished by the SkipKey frame the caller
                // pushes; an alias key has no text a pointer could use.
                match node {
                    Node::Scalar(k) => *key = Some((k.to_string(), r)),
                    Node::Alias => *key = Some(("\u{0}alias-key".into(), r)),
                    Node::Collection => {}
                }
                None
            }
        },
    }
}
