//! A small YAML document tree that keeps every scalar exactly as written.
//!
//! Generic YAML values resolve plain scalars as soon as they are read:
//! `1.10` becomes the float 1.1, `0x1F` the integer 31, `1e3` 1000.0, and the
//! text the user typed is gone. sarge hands `env` values to the application
//! verbatim, so this tree keeps each scalar's text and whether it was quoted,
//! and only the settings that want a number or a boolean ask for one
//! ([`Scalar::resolve`], the YAML 1.2 core schema).
//!
//! The events come from `saphyr-parser`, a pure-Rust YAML 1.2 parser that
//! reports each scalar's text, style and position. Its types stay in this
//! module.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

/// A value in the document, with the position where it starts.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    /// 1-based line.
    pub(crate) line: usize,
    /// 1-based column.
    pub(crate) column: usize,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Scalar(Scalar),
    Sequence(Vec<Node>),
    /// Entries in file order; keys are unique (duplicates are syntax errors).
    Mapping(Vec<(Node, Node)>),
    /// A value with an application tag such as `!secret`, which sarge does not
    /// interpret; holds the tag as written.
    Tagged(String),
}

/// A scalar as it appears in the file.
#[derive(Debug, Clone)]
pub(crate) struct Scalar {
    /// The scalar's content: for a plain scalar exactly the characters
    /// written, for quoted and block scalars the text after YAML's escapes
    /// and folding.
    pub(crate) text: String,
    /// Plain (unquoted, untagged) scalars may stand for null, a boolean or a
    /// number; quoted ones, block ones and `!!str` ones are always strings.
    pub(crate) plain: bool,
}

/// What a scalar means under the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Resolved<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

impl Scalar {
    /// The scalar's meaning under the YAML 1.2 core schema (so `yes` and
    /// `on` are strings, as YAML 1.2 says, not booleans as YAML 1.1 said).
    pub(crate) fn resolve(&self) -> Resolved<'_> {
        let text = self.text.as_str();
        if !self.plain {
            return Resolved::Str(text);
        }
        match text {
            "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
            "true" | "True" | "TRUE" => return Resolved::Bool(true),
            "false" | "False" | "FALSE" => return Resolved::Bool(false),
            ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
                return Resolved::Float(f64::INFINITY)
            }
            "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
            ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
            _ => {}
        }
        if let Some(octal) = text.strip_prefix("0o") {
            if is_digits(octal, 8) {
                return int_or_str(i64::from_str_radix(octal, 8).ok(), text);
            }
        }
        if let Some(hex) = text.strip_prefix("0x") {
            if is_digits(hex, 16) {
                return int_or_str(i64::from_str_radix(hex, 16).ok(), text);
            }
        }
        let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
        if is_digits(unsigned, 10) {
            // Too large for i64: still a number, just not a whole one sarge
            // could use.
            return match text.parse::<i64>() {
                Ok(int) => Resolved::Int(int),
                Err(_) => float_or_str(text),
            };
        }
        if is_float(unsigned) {
            return float_or_str(text);
        }
        Resolved::Str(text)
    }
}

fn int_or_str(int: Option<i64>, text: &str) -> Resolved<'_> {
    int.map_or(Resolved::Str(text), Resolved::Int)
}

fn float_or_str(text: &str) -> Resolved<'_> {
    text.parse::<f64>()
        .map_or(Resolved::Str(text), Resolved::Float)
}

fn is_digits(text: &str, radix: u32) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_digit(radix))
}

/// The core schema's float form without its sign:
/// `( \.[0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`.
fn is_float(text: &str) -> bool {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", fraction)) => is_digits(fraction, 10),
        Some((whole, fraction)) => {
            is_digits(whole, 10) && (fraction.is_empty() || is_digits(fraction, 10))
        }
        None => is_digits(mantissa, 10),
    };
    let exponent_ok = exponent.is_none_or(|exponent| {
        is_digits(exponent.strip_prefix(['-', '+']).unwrap_or(exponent), 10)
    });
    mantissa_ok && exponent_ok
}

/// Why the text is not a YAML document sarge can read.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    /// 1-based line.
    pub(crate) line: usize,
    /// 1-based column.
    pub(crate) column: usize,
    /// What went wrong, with the location at its end.
    pub(crate) message: String,
}

/// Nested collections deeper than this are refused rather than risking the
/// stack; a settings file needs four levels.
const MAX_DEPTH: usize = 64;

/// Aliases copy the anchored value; this many nodes is far beyond any real
/// settings file and stops an alias bomb from filling memory.
const MAX_NODES: usize = 100_000;

/// Parses a single-document YAML text; `None` for a file with no document
/// (empty, or only comments).
pub(crate) fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        nodes: 0,
    };
    let mut document = None;
    loop {
        let (event, span) = builder.next()?;
        match event {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => return Ok(document),
            Event::DocumentStart(_) => {
                if document.is_some() {
                    return Err(syntax_error(
                        span,
                        "a second document (`---`) is not supported; sarge.yaml holds one mapping",
                    ));
                }
                let (event, span) = builder.next()?;
                document = Some(builder.node(event, span, "", 0)?);
            }
            // The parser only sends values inside a document.
            other => {
                return Err(syntax_error(
                    span,
                    &format!("unexpected {other:?} outside a document"),
                ))
            }
        }
    }
}

struct Builder<'input> {
    parser: Parser<'input, saphyr_parser::StrInput<'input>>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
}

impl<'input> Builder<'input> {
    fn next(&mut self) -> Result<(Event<'input>, Span), SyntaxError> {
        match self.parser.next_event() {
            Some(Ok(next)) => Ok(next),
            Some(Err(error)) => {
                let mark = error.marker();
                Err(SyntaxError {
                    line: mark.line(),
                    column: mark.col() + 1,
                    message: format!(
                        "{} at line {} column {}",
                        error.info(),
                        mark.line(),
                        mark.col() + 1
                    ),
                })
            }
            // The parser ends every stream with StreamEnd before None.
            None => Ok((Event::StreamEnd, Span::default())),
        }
    }

    /// Reads the value that `event` starts; `path` is the dotted key of the
    /// value, for messages about duplicate keys.
    fn node(
        &mut self,
        event: Event<'input>,
        span: Span,
        path: &str,
        depth: usize,
    ) -> Result<Node, SyntaxError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(syntax_error(
                span,
                &format!("more than {MAX_NODES} values (aliases expanding?)"),
            ));
        }
        if depth > MAX_DEPTH {
            return Err(syntax_error(
                span,
                &format!("values nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        let at = |kind| Node {
            kind,
            line: span.start.line(),
            column: span.start.col() + 1,
        };
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let kind = match tag.as_deref() {
                    None => Kind::Scalar(Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    }),
                    Some(tag) if is_core(tag, "str") => Kind::Scalar(Scalar {
                        text: text.into_owned(),
                        plain: false,
                    }),
                    // `!!int 5` and the like: the text decides, as untagged.
                    Some(tag) if tag.is_yaml_core_schema() => Kind::Scalar(Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    }),
                    Some(tag) => Kind::Tagged(tag.to_string()),
                };
                (at(kind), anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                let mut items = Vec::new();
                loop {
                    let (event, span) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(event, span, path, depth + 1)?);
                }
                (at(tagged_or(tag.as_deref(), Kind::Sequence(items))), anchor)
            }
            Event::MappingStart(anchor, tag) => {
                let mut entries: Vec<(Node, Node)> = Vec::new();
                loop {
                    let (event, span) = self.next()?;
                    if matches!(event, Event::MappingEnd) {
                        break;
                    }
                    let key = self.node(event, span, path, depth + 1)?;
                    let name = key_name(&key);
                    if entries.iter().any(|(seen, _)| same_key(seen, &key)) {
                        let prefix = if path.is_empty() {
                            String::new()
                        } else {
                            format!("{path}: ")
                        };
                        let message = format!(
                            "{prefix}duplicate entry with key {name:?} at line {} column {}",
                            key.line, key.column
                        );
                        return Err(SyntaxError {
                            line: key.line,
                            column: key.column,
                            message,
                        });
                    }
                    let child_path = if path.is_empty() {
                        name
                    } else {
                        format!("{path}.{name}")
                    };
                    let (event, span) = self.next()?;
                    let value = self.node(event, span, &child_path, depth + 1)?;
                    entries.push((key, value));
                }
                (
                    at(tagged_or(tag.as_deref(), Kind::Mapping(entries))),
                    anchor,
                )
            }
            Event::Alias(anchor) => {
                let Some(target) = self.anchors.get(&anchor) else {
                    return Err(syntax_error(span, "alias to an unknown anchor"));
                };
                let mut copy = target.clone();
                self.nodes += count(&copy);
                copy.line = span.start.line();
                copy.column = span.start.col() + 1;
                (copy, 0)
            }
            other => {
                return Err(syntax_error(
                    span,
                    &format!("unexpected {other:?} where a value belongs"),
                ))
            }
        };
        // The parser numbers anchors from 1; 0 means "no anchor".
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }
}

fn is_core(tag: &Tag, suffix: &str) -> bool {
    tag.is_yaml_core_schema() && tag.suffix == suffix
}

/// Core schema tags on collections (`!!map`, `!!seq`) say nothing new;
/// any other tag is kept so that it can be reported.
fn tagged_or(tag: Option<&Tag>, kind: Kind) -> Kind {
    match tag {
        Some(tag) if !tag.is_yaml_core_schema() => Kind::Tagged(tag.to_string()),
        _ => kind,
    }
}

/// Two keys are the same when they are the same scalar text with the same
/// meaning (`A` and `"A"` are one key; `1` and `"1"` are not).
fn same_key(a: &Node, b: &Node) -> bool {
    match (&a.kind, &b.kind) {
        (Kind::Scalar(a), Kind::Scalar(b)) => a.resolve() == b.resolve() && a.text == b.text,
        _ => false,
    }
}

/// A key as shown in dotted paths and messages.
fn key_name(key: &Node) -> String {
    match &key.kind {
        Kind::Scalar(scalar) => scalar.text.clone(),
        Kind::Sequence(_) => "[list]".to_owned(),
        Kind::Mapping(_) => "{mapping}".to_owned(),
        Kind::Tagged(tag) => tag.clone(),
    }
}

fn count(node: &Node) -> usize {
    1 + match &node.kind {
        Kind::Scalar(_) | Kind::Tagged(_) => 0,
        Kind::Sequence(items) => items.iter().map(count).sum(),
        Kind::Mapping(entries) => entries.iter().map(|(k, v)| count(k) + count(v)).sum(),
    }
}

fn syntax_error(span: Span, problem: &str) -> SyntaxError {
    let (line, column) = (span.start.line(), span.start.col() + 1);
    SyntaxError {
        line,
        column,
        message: format!("{problem} at line {line} column {column}"),
    }
}
