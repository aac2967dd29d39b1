//! Loading a configuration: TOML syntax, deserialization and every problem
//! located by key path and line. [`load_with`] runs a caller's build step
//! (the address map, in `addrmap::load`) in the same pass, so its problems
//! are reported with the semantic ones.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::IntoDeserializer;
use serde::Deserialize;
use toml_edit::{ImDocument, Item, Table, Value};

use super::{validate, Config, Problem};

/// A problem found by a [`load_with`] build step, located by its config key
/// path (e.g. `view[1].prefixes[3]`) so `check-config` can point at the line.
pub trait KeyedProblem {
    fn key(&self) -> &str;
    fn message(&self) -> &str;
}

/// Add a build step's problems to the semantic ones, one message per key
/// (a semantic check that already explained a key wins).
pub fn add_build_problems<E: KeyedProblem>(problems: &mut Vec<Problem>, errors: Vec<E>) {
    for e in errors {
        if !problems.iter().any(|p| p.key == e.key()) {
            problems.push(Problem::at(e.key(), e.message()));
        }
    }
}

/// Parse, validate and build `text`: `build` turns the checked config into
/// what the caller serves (the address map, in `addrmap::load`). `base_dir`
/// resolves relative paths in the file (e.g. `prefixes_file`); use the
/// config file's directory.
///
/// On failure returns every problem found, sorted by line. A TOML syntax
/// error stops at that error; otherwise every type, unknown-key and
/// missing-key error is reported; when the file deserializes, every semantic
/// problem and every build problem is reported together.
pub fn load_with<T, E: KeyedProblem>(
    text: &str,
    base_dir: &Path,
    build: impl FnOnce(&Config, &Path) -> Result<T, Vec<E>>,
) -> Result<(Config, T), Vec<Problem>> {
    let config = match Config::deserialize(parse(text)?.into_deserializer()) {
        Ok(config) => config,
        Err(first) => {
            // Only on failure: parse again (the first document was consumed)
            // to locate this error and look for the others.
            let doc = parse(text)?;
            return Err(deserialize_problems(first, &Locator::new(text, &doc)));
        }
    };

    let mut problems = validate(&config);
    problems.extend(super::handoff::check_files(&config, base_dir));
    match build(&config, base_dir) {
        Ok(built) if problems.is_empty() => return Ok((config, built)),
        Ok(_) => {}
        Err(errors) => add_build_problems(&mut problems, errors),
    }
    let doc = parse(text)?;
    let locator = Locator::new(text, &doc);
    for p in &mut problems {
        if p.line.is_none() {
            p.line = locator.line_of_key(&p.key);
        }
    }
    sort_problems(&mut problems);
    Err(problems)
}

/// Parse keeping spans; a syntax error is the one problem reported.
pub(super) fn parse(text: &str) -> Result<ImDocument<String>, Vec<Problem>> {
    ImDocument::parse(text.to_owned()).map_err(|e| {
        let line = e.span().map(|s| LineIndex::new(text).line_of(s.start));
        vec![Problem {
            line,
            key: String::new(),
            message: format!("TOML syntax error: {}", one_line(e.message())),
        }]
    })
}

/// Read the file at `path`; returns its text and the directory relative
/// paths inside it resolve against (the file's own).
pub fn read_file(path: &Path) -> Result<(String, PathBuf), Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Problem::at(
            String::new(),
            format!(
                "cannot read config file {}: {e}; check the path and its permissions, \
                 or run without --config to use the embedded default",
                path.display()
            ),
        )]
    })?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok((text, base_dir.to_path_buf()))
}

/// Where relative paths of the embedded default resolve: the current directory.
pub const EMBEDDED_BASE_DIR: &str = ".";

pub(super) fn sort_problems(problems: &mut [Problem]) {
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
}

/// Every type and unknown-key error, not just serde's `first`: each failing
/// node is deserialized again on its own (its key or element wrapped in a
/// bare skeleton of its ancestors, spans kept), then each of its children, so
/// one bad key does not hide the next one.
pub(super) fn deserialize_problems(
    first: toml_edit::de::Error,
    locator: &Locator<'_>,
) -> Vec<Problem> {
    let mut errors = vec![first];
    let root = Node::Item(locator.doc.as_item());
    let mut budget = MAX_REFINE_STEPS;
    for (seg, _, child) in root.children() {
        refine(&mut vec![(root, seg)], child, &mut errors, &mut budget);
    }

    let mut problems: Vec<Problem> = Vec::new();
    let mut seen: Vec<(Option<Range<usize>>, String)> = Vec::new();
    for e in errors {
        let id = (e.span(), e.message().to_owned());
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        let (line, key) = match e.span() {
            Some(span) => (
                Some(locator.lines.line_of(span.start)),
                locator.key_at(span.start),
            ),
            None => (None, String::new()),
        };
        let message = with_hint(one_line(e.message()));
        problems.push(Problem { line, key, message });
    }
    sort_problems(&mut problems);
    problems
}

/// Bound on the re-deserializations one failing document may cost.
const MAX_REFINE_STEPS: usize = 10_000;

/// Deserialize `node` alone (inside a skeleton of `ancestors`); if that fails,
/// record the error and look for more in each child.
pub(super) fn refine<'a>(
    ancestors: &mut Vec<(Node<'a>, Seg)>,
    node: Node<'a>,
    errors: &mut Vec<toml_edit::de::Error>,
    budget: &mut usize,
) {
    if *budget == 0 {
        return;
    }
    *budget -= 1;
    let Some(skeleton) = skeleton(ancestors, node) else {
        return;
    };
    let Err(e) = Config::deserialize(skeleton.into_deserializer()) else {
        return;
    };
    // Errors without a span come from the bare skeleton (e.g. a required key
    // of an ancestor that the skeleton left out): not real problems.
    if e.span().is_none() {
        return;
    }
    errors.push(e);
    for (seg, _, child) in node.children() {
        ancestors.push((node, seg));
        refine(ancestors, child, errors, budget);
        ancestors.pop();
    }
}

/// A document holding only `leaf` (cloned, so its spans still point into the
/// original text) under bare copies of its ancestors.
pub(super) fn skeleton(
    ancestors: &[(Node<'_>, Seg)],
    leaf: Node<'_>,
) -> Option<toml_edit::DocumentMut> {
    let mut cur = match leaf {
        Node::Item(i) => Item::clone(i),
        Node::Table(t) => Item::Table(t.clone()),
        Node::Value(v) => Item::Value(v.clone()),
    };
    for (parent, seg) in ancestors.iter().rev() {
        cur = match (parent, seg) {
            (Node::Item(Item::ArrayOfTables(_)), Seg::Index(_)) => {
                let mut a = toml_edit::ArrayOfTables::new();
                a.push(cur.into_table().ok()?);
                Item::ArrayOfTables(a)
            }
            (_, Seg::Index(_)) => {
                let mut a = toml_edit::Array::new();
                a.push_formatted(cur.into_value().ok()?);
                Item::Value(Value::Array(a))
            }
            (_, Seg::Key(k)) if parent.as_table().is_some() => {
                let mut t = Table::new();
                t.insert(k, cur);
                Item::Table(t)
            }
            (_, Seg::Key(k)) => {
                let mut t = toml_edit::InlineTable::new();
                t.insert(k, cur.into_value().ok()?);
                Item::Value(Value::InlineTable(t))
            }
        };
    }
    Some(toml_edit::DocumentMut::from(cur.into_table().ok()?))
}

/// Add what to write instead to serde messages that do not say it.
pub(super) fn with_hint(message: String) -> String {
    let hint = if message.contains("invalid socket address syntax") {
        "write IP:PORT, e.g. \"127.0.0.1:8053\" or \"[::1]:8053\""
    } else if message.contains("invalid IP address syntax") {
        "write a prefix such as \"10.0.0.0/8\" or \"2001:db8::/32\""
    } else {
        return message;
    };
    format!("{message}; {hint}")
}

/// Multi-line parser messages on one line.
pub(super) fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Byte offset -> 1-based line number.
pub(super) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(super) fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    pub(super) fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset)
    }
}

/// Maps key paths to lines and byte offsets to key paths, using the spans of
/// the parsed document.
pub(super) struct Locator<'a> {
    lines: LineIndex,
    doc: &'a ImDocument<String>,
}

/// A node of the parsed document while walking a key path.
#[derive(Clone, Copy)]
pub(super) enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    pub(super) fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Table(t) => t.span(),
            Node::Value(v) => v.span(),
        }
    }

    pub(super) fn as_table(self) -> Option<&'a Table> {
        match self {
            Node::Item(Item::Table(t)) | Node::Table(t) => Some(t),
            _ => None,
        }
    }

    pub(super) fn as_value(self) -> Option<&'a Value> {
        match self {
            Node::Item(Item::Value(v)) | Node::Value(v) => Some(v),
            _ => None,
        }
    }

    /// The child under `key` and the span of the key itself.
    pub(super) fn child(self, key: &str) -> Option<(Option<Range<usize>>, Node<'a>)> {
        if let Some(t) = self.as_table() {
            let (k, item) = t.get_key_value(key)?;
            return Some((k.span(), Node::Item(item)));
        }
        if let Some(Value::InlineTable(t)) = self.as_value() {
            let (k, item) = t.get_key_value(key)?;
            return Some((k.span(), Node::Item(item)));
        }
        None
    }

    pub(super) fn element(self, index: usize) -> Option<Node<'a>> {
        match self {
            Node::Item(Item::ArrayOfTables(a)) => a.get(index).map(Node::Table),
            _ => match self.as_value() {
                Some(Value::Array(a)) => a.get(index).map(Node::Value),
                _ => None,
            },
        }
    }

    /// Every child with its path segment and key span.
    pub(super) fn children(self) -> Vec<(Seg, Option<Range<usize>>, Node<'a>)> {
        let mut out = Vec::new();
        if let Some(t) = self.as_table() {
            for (k, item) in t.iter() {
                let span = t.key(k).and_then(|k| k.span());
                out.push((Seg::Key(k.to_owned()), span, Node::Item(item)));
            }
        } else if let Node::Item(Item::ArrayOfTables(a)) = self {
            for (i, t) in a.iter().enumerate() {
                out.push((Seg::Index(i), None, Node::Table(t)));
            }
        } else {
            match self.as_value() {
                Some(Value::InlineTable(t)) => {
                    for (k, v) in t.iter() {
                        let span = t.key(k).and_then(|k| k.span());
                        out.push((Seg::Key(k.to_owned()), span, Node::Value(v)));
                    }
                }
                Some(Value::Array(a)) => {
                    for (i, v) in a.iter().enumerate() {
                        out.push((Seg::Index(i), None, Node::Value(v)));
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// One step of a key path: a key in a table or an index in an array.
#[derive(Debug, Clone)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

impl fmt::Display for Seg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seg::Key(k) => write!(f, ".{k}"),
            Seg::Index(i) => write!(f, "[{i}]"),
        }
    }
}

pub(super) fn contains(span: &Option<Range<usize>>, offset: usize) -> bool {
    span.as_ref()
        .is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
}

/// Split `view[1].record[0].data` into `view`, `[1]`, `record`, `[0]`, `data`.
pub(super) fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Seg::Key(name.to_owned()));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else { break };
            match stripped[..end].parse() {
                Ok(i) => out.push(Seg::Index(i)),
                Err(_) => out.push(Seg::Key(stripped[..end].to_owned())),
            }
            rest = &stripped[end + 1..];
        }
    }
    out
}

impl<'a> Locator<'a> {
    pub(super) fn new(text: &str, doc: &'a ImDocument<String>) -> Locator<'a> {
        Locator {
            lines: LineIndex::new(text),
            doc,
        }
    }

    /// The line of the deepest part of `path` present in the file: the value
    /// (or array element, or `[[table]]` header) when the whole path exists,
    /// else the nearest ancestor. `None` when not even the first key is in
    /// the file (a default value).
    pub(super) fn line_of_key(&self, path: &str) -> Option<usize> {
        let mut node = Node::Item(self.doc.as_item());
        let mut best: Option<Range<usize>> = None;
        for seg in segments(path) {
            let next = match seg {
                Seg::Key(k) => node.child(&k).map(|(key_span, child)| {
                    // Prefer the key's own line: a multi-line value starts there.
                    (key_span.or_else(|| child.span()), child)
                }),
                Seg::Index(i) => node.element(i).map(|child| (child.span(), child)),
            };
            match next {
                Some((span, child)) => {
                    if span.is_some() {
                        best = span;
                    }
                    node = child;
                }
                None => break,
            }
        }
        best.map(|s| self.lines.line_of(s.start))
    }

    /// The deepest key path whose key or value span contains `offset`.
    pub(super) fn key_at(&self, offset: usize) -> String {
        let mut path = String::new();
        let mut node = Node::Item(self.doc.as_item());
        'descend: loop {
            for (seg, key_span, child) in node.children() {
                if contains(&key_span, offset)
                    || contains(&child.span(), offset)
                    || encloses(child, offset)
                {
                    path.push_str(&seg.to_string());
                    node = child;
                    continue 'descend;
                }
            }
            break;
        }
        path.trim_start_matches('.').to_owned()
    }
}

/// Whether some descendant of `node` (e.g. a key inside a `[[view]]` table,
/// whose header span does not cover its body) contains `offset`.
pub(super) fn encloses(node: Node<'_>, offset: usize) -> bool {
    node.children().into_iter().any(|(_, key_span, child)| {
        contains(&key_span, offset) || contains(&child.span(), offset) || encloses(child, offset)
    })
}
