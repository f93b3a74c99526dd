//! Where a field is in the YAML text.
//!
//! serde_yaml reports the line of the enclosing mapping, not of the field, for errors raised by
//! our own types (durations, sizes), and validation errors have no position at all. So the loader
//! builds an [`Outline`] of the file: the line of every key and sequence item, found by a small
//! scan of block indentation and flow collections (`{a: 1}`, `[x, y]`). It only has to agree with
//! serde_yaml on files serde_yaml accepts; on anything stranger it gives up quietly and the error
//! falls back to serde_yaml's own position.

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// Splits `a.b[0].c` into segments. Keys containing `.` or `[` cannot be told apart; no key of
/// the config contract that is ever validated has one.
pub(crate) fn parse_path(path: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            if open > 0 {
                segments.push(Segment::Key(rest[..open].to_string()));
            }
            rest = &rest[open..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(close) = stripped.find(']') else { break };
                match stripped[..close].parse() {
                    Ok(i) => segments.push(Segment::Index(i)),
                    Err(_) => return segments,
                }
                rest = &stripped[close + 1..];
            }
        } else {
            segments.push(Segment::Key(rest.to_string()));
        }
    }
    segments
}

/// The keys and items of a YAML document with their 1-based lines and columns.
#[derive(Debug, Default)]
pub(crate) struct Outline {
    root: Option<Node>,
}

#[derive(Debug)]
enum Node {
    Map(Vec<Entry>),
    Seq(Vec<Entry>),
    Scalar,
}

/// A key of a mapping (`key` is `Some`) or an item of a sequence, positioned where it starts.
#[derive(Debug)]
struct Entry {
    key: Option<String>,
    line: usize,
    column: usize,
    value: Node,
}

/// How far [`Outline::line_of`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// The whole path is in the file, at this line.
    Exact(usize),
    /// Only a prefix of it is (the rest comes from defaults); the line of the deepest one.
    Prefix(usize),
    Nowhere,
}

impl Outline {
    pub(crate) fn new(text: &str) -> Outline {
        let lines = text.lines().enumerate().filter_map(|(i, l)| Line::new(i + 1, l)).collect();
        let mut parser = Parser { lines, pos: 0 };
        let root = match parser.peek() {
            Some(first) => {
                let column = first.column;
                Some(parser.node(column))
            }
            None => None,
        };
        Outline { root }
    }

    /// Whether the document has any content (not only comments and blank lines).
    pub(crate) fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    pub(crate) fn line_of(&self, path: &[Segment]) -> Found {
        let Some(mut node) = self.root.as_ref() else { return Found::Nowhere };
        let mut deepest = None;
        for segment in path {
            let entry = match (node, segment) {
                (Node::Map(entries), Segment::Key(k)) => entries.iter().rev().find(|e| e.key.as_deref() == Some(k)),
                (Node::Seq(items), Segment::Index(i)) => items.get(*i),
                _ => None,
            };
            match entry {
                Some(e) => {
                    deepest = Some(e.line);
                    node = &e.value;
                }
                None => return deepest.map_or(Found::Nowhere, Found::Prefix),
            }
        }
        deepest.map_or(Found::Nowhere, Found::Exact)
    }

    /// The path of the last key or item that starts on `line` at or before `column`, e.g. to name
    /// the field a `${VAR}` is in.
    pub(crate) fn path_at(&self, line: usize, column: usize) -> Option<String> {
        fn walk(node: &Node, prefix: &str, line: usize, column: usize, best: &mut Option<(usize, String)>) {
            let entries = match node {
                Node::Map(e) | Node::Seq(e) => e,
                Node::Scalar => return,
            };
            for (i, e) in entries.iter().enumerate() {
                let path = match &e.key {
                    Some(k) if prefix.is_empty() => k.clone(),
                    Some(k) => format!("{prefix}.{k}"),
                    None => format!("{prefix}[{i}]"),
                };
                if e.line == line && e.column <= column && best.as_ref().is_none_or(|(c, _)| e.column >= *c) {
                    *best = Some((e.column, path.clone()));
                }
                walk(&e.value, &path, line, column, best);
            }
        }
        let mut best = None;
        walk(self.root.as_ref()?, "", line, column, &mut best);
        best.map(|(_, p)| p)
    }
}

/// A line with content: indentation and comment removed.
#[derive(Debug, Clone)]
struct Line<'a> {
    number: usize,
    /// 1-based column of `text`.
    column: usize,
    text: &'a str,
}

impl<'a> Line<'a> {
    fn new(number: usize, raw: &'a str) -> Option<Line<'a>> {
        let code = &raw[..comment_start(raw).unwrap_or(raw.len())];
        let indent = code.len() - code.trim_start_matches(' ').len();
        let text = code[indent..].trim_end();
        if text.is_empty() || text == "---" || text == "..." || text.starts_with('%') {
            return None;
        }
        Some(Line { number, column: indent + 1, text })
    }

    /// Drops the first `n` bytes (and the spaces after them), moving the column along.
    fn advance(&mut self, n: usize) {
        let rest = &self.text[n..];
        let trimmed = rest.trim_start();
        self.column += n + (rest.len() - trimmed.len());
        self.text = trimmed;
    }
}

/// Byte offset of the `#` that starts a comment in `line`, if any: at the start or after
/// whitespace, outside quoted scalars.
pub(crate) fn comment_start(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let at_boundary = i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'[' | b'{' | b',');
        match quote {
            Some(b'"') if b == b'\\' => i += 1,
            Some(b'\'') if b == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if (b == b'"' || b == b'\'') && at_boundary => quote = Some(b),
            None if b == b'#' && (i == 0 || matches!(bytes[i - 1], b' ' | b'\t')) => return Some(i),
            None => {}
        }
        i += 1;
    }
    None
}

struct Parser<'a> {
    lines: Vec<Line<'a>>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Line<'a>> {
        self.lines.get(self.pos)
    }

    /// Skips lines indented deeper than `column` that no node claimed (continuations of plain or
    /// block scalars).
    fn skip_deeper_than(&mut self, column: usize) {
        while self.peek().is_some_and(|l| l.column > column) {
            self.pos += 1;
        }
    }

    /// The node starting at the current line, which is indented at `column`.
    fn node(&mut self, column: usize) -> Node {
        let Some(line) = self.peek() else { return Node::Scalar };
        if is_item(line.text) {
            self.sequence(column)
        } else if key_of(line.text).is_some() {
            self.mapping(column)
        } else if line.text.starts_with(['{', '[']) {
            self.flow()
        } else {
            self.pos += 1;
            Node::Scalar
        }
    }

    fn mapping(&mut self, column: usize) -> Node {
        let mut entries = Vec::new();
        while let Some(line) = self.peek() {
            if line.column != column || is_item(line.text) {
                break;
            }
            let Some((key, rest_at)) = key_of(line.text) else {
                self.pos += 1;
                continue;
            };
            let (number, key_column) = (line.number, line.column);
            let mut rest = line.clone();
            rest.advance(rest_at);
            skip_properties(&mut rest);
            let value = if rest.text.is_empty() {
                self.pos += 1;
                match self.peek() {
                    Some(next) if next.column > column || (next.column == column && is_item(next.text)) => {
                        let c = next.column;
                        self.node(c)
                    }
                    _ => Node::Scalar,
                }
            } else if rest.text.starts_with(['{', '[']) {
                self.lines[self.pos] = rest;
                self.flow()
            } else {
                self.pos += 1;
                Node::Scalar
            };
            self.skip_deeper_than(column);
            entries.push(Entry { key: Some(key), line: number, column: key_column, value });
        }
        Node::Map(entries)
    }

    fn sequence(&mut self, column: usize) -> Node {
        let mut items = Vec::new();
        while let Some(line) = self.peek() {
            if line.column != column || !is_item(line.text) {
                break;
            }
            let (number, item_column) = (line.number, line.column);
            let mut rest = line.clone();
            rest.advance(1);
            skip_properties(&mut rest);
            let value = if rest.text.is_empty() {
                self.pos += 1;
                match self.peek() {
                    Some(next) if next.column > column => {
                        let c = next.column;
                        self.node(c)
                    }
                    _ => Node::Scalar,
                }
            } else {
                let c = rest.column;
                self.lines[self.pos] = rest;
                self.node(c)
            };
            self.skip_deeper_than(column);
            items.push(Entry { key: None, line: number, column: item_column, value });
        }
        Node::Seq(items)
    }

    /// A flow collection starting at the current line; it may run over several lines. The line
    /// it ends on is consumed whole.
    fn flow(&mut self) -> Node {
        let mut cursor = FlowCursor { lines: &self.lines, line: self.pos, offset: 0 };
        let node = cursor.node().unwrap_or(Node::Scalar);
        self.pos = cursor.line.max(self.pos) + 1;
        node
    }
}

/// `- item` or a lone `-`.
fn is_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// Anchors (`&a`) and tags (`!!str`) before a value do not change where it is.
fn skip_properties(line: &mut Line<'_>) {
    while line.text.starts_with(['&', '!']) {
        let end = line.text.find(' ').unwrap_or(line.text.len());
        line.advance(end);
    }
}

/// If `text` starts with `key:` (followed by a space or the end), the key and the offset after
/// the colon.
fn key_of(text: &str) -> Option<(String, usize)> {
    let (key, after_key) = if text.starts_with(['"', '\'']) {
        let (key, len) = quoted(text)?;
        let spaces = text[len..].len() - text[len..].trim_start().len();
        (key, len + spaces)
    } else {
        if text.starts_with(['{', '[', '#', '&', '*', '!', '|', '>', '%', '@', '`', '?']) || is_item(text) {
            return None;
        }
        let colon = text.match_indices(':').map(|(i, _)| i).find(|&i| colon_ends_key(text, i))?;
        (text[..colon].trim_end().to_string(), colon)
    };
    if !text[after_key..].starts_with(':') || !colon_ends_key(text, after_key) {
        return None;
    }
    Some((key, after_key + 1))
}

fn colon_ends_key(text: &str, colon: usize) -> bool {
    text.as_bytes().get(colon) == Some(&b':') && matches!(text.as_bytes().get(colon + 1), None | Some(b' ' | b'\t'))
}

/// A quoted scalar at the start of `text`: its value and its length with the quotes.
fn quoted(text: &str) -> Option<(String, usize)> {
    let q = text.chars().next()?;
    let mut value = String::new();
    let mut chars = text.char_indices().skip(1).peekable();
    while let Some((i, c)) = chars.next() {
        if q == '"' && c == '\\' {
            if let Some((_, escaped)) = chars.next() {
                value.push(escaped);
            }
        } else if c == q {
            if q == '\'' && chars.peek().map(|&(_, c)| c) == Some('\'') {
                chars.next();
                value.push('\'');
            } else {
                return Some((value, i + 1));
            }
        } else {
            value.push(c);
        }
    }
    None
}

/// Reads flow collections character by character across lines.
struct FlowCursor<'l, 'a> {
    lines: &'l [Line<'a>],
    line: usize,
    offset: usize,
}

impl FlowCursor<'_, '_> {
    /// The next character that is not a space, moving to following lines as needed.
    fn peek(&mut self) -> Option<char> {
        loop {
            let text = self.lines.get(self.line)?.text;
            match text[self.offset..].chars().find(|c| !c.is_whitespace()) {
                Some(c) => {
                    self.offset = text.len() - text[self.offset..].trim_start().len();
                    return Some(c);
                }
                None if self.line + 1 < self.lines.len() => {
                    self.line += 1;
                    self.offset = 0;
                }
                None => return None,
            }
        }
    }

    fn position(&self) -> (usize, usize) {
        let l = &self.lines[self.line];
        (l.number, l.column + l.text[..self.offset].chars().count())
    }

    fn bump(&mut self, c: char) {
        self.offset += c.len_utf8();
    }

    fn node(&mut self) -> Option<Node> {
        match self.peek()? {
            '{' => self.collection('}', true),
            '[' => self.collection(']', false),
            _ => {
                self.scalar();
                Some(Node::Scalar)
            }
        }
    }

    fn collection(&mut self, close: char, is_map: bool) -> Option<Node> {
        self.bump(if is_map { '{' } else { '[' });
        let mut entries = Vec::new();
        loop {
            let c = self.peek()?;
            if c == close {
                self.bump(c);
                break;
            }
            let (line, column) = self.position();
            let entry = if is_map {
                let key = self.scalar();
                let value = if self.peek() == Some(':') {
                    self.bump(':');
                    match self.peek()? {
                        ',' | '}' => Node::Scalar,
                        _ => self.node()?,
                    }
                } else {
                    Node::Scalar
                };
                Entry { key: Some(key), line, column, value }
            } else {
                let value = self.node()?;
                // `[a: b]` is a one-pair mapping; its value is skipped.
                if self.peek() == Some(':') {
                    self.bump(':');
                    self.node()?;
                }
                Entry { key: None, line, column, value }
            };
            entries.push(entry);
            match self.peek()? {
                ',' => self.bump(','),
                c if c == close => {}
                _ => return None,
            }
        }
        Some(if is_map { Node::Map(entries) } else { Node::Seq(entries) })
    }

    /// A plain or quoted scalar inside a flow collection; returns its value.
    fn scalar(&mut self) -> String {
        let Some(first) = self.peek() else { return String::new() };
        let text = self.lines[self.line].text;
        let rest = &text[self.offset..];
        if first == '"' || first == '\'' {
            if let Some((value, len)) = quoted(rest) {
                self.offset += len;
                return value;
            }
            self.offset = text.len();
            return rest.to_string();
        }
        let bytes = rest.as_bytes();
        let mut end = 0;
        while end < bytes.len() {
            match bytes[end] {
                b',' | b'[' | b']' | b'{' | b'}' => break,
                b':' if matches!(bytes.get(end + 1), None | Some(b' ' | b',' | b']' | b'}')) => break,
                _ => end += 1,
            }
        }
        self.offset += end;
        rest[..end].trim_end().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, path: &str) -> Found {
        Outline::new(text).line_of(&parse_path(path))
    }

    #[test]
    fn paths_split_into_keys_and_indices() {
        assert_eq!(
            parse_path("scrape.static_configs[0].relabel_configs[12].regex"),
            vec![
                Segment::Key("scrape".into()),
                Segment::Key("static_configs".into()),
                Segment::Index(0),
                Segment::Key("relabel_configs".into()),
                Segment::Index(12),
                Segment::Key("regex".into()),
            ]
        );
    }

    #[test]
    fn block_keys_and_items_have_their_lines() {
        let text = "\
# comment
cluster: a   # trailing
scrape:
  interval: 30s

  static_configs:
  - targets: ['a:1', \"b:2\"]
    labels:
      job: x
  -   targets:
        - c:3
      relabel_configs:
        - action: keep
          regex: '(.*'
exporters:
  loki:
    url: |
      http://x
      more
    batch: {max_items: 3,
            max_wait: 5 seconds}
";
        assert_eq!(line(text, "cluster"), Found::Exact(2));
        assert_eq!(line(text, "scrape.interval"), Found::Exact(4));
        assert_eq!(line(text, "scrape.static_configs[0]"), Found::Exact(7));
        assert_eq!(line(text, "scrape.static_configs[0].targets[1]"), Found::Exact(7));
        assert_eq!(line(text, "scrape.static_configs[0].labels.job"), Found::Exact(9));
        assert_eq!(line(text, "scrape.static_configs[1].targets[0]"), Found::Exact(11));
        assert_eq!(line(text, "scrape.static_configs[1].relabel_configs[0].regex"), Found::Exact(14));
        assert_eq!(line(text, "exporters.loki.batch.max_items"), Found::Exact(20));
        assert_eq!(line(text, "exporters.loki.batch.max_wait"), Found::Exact(21));
        assert_eq!(line(text, "exporters.loki.batch.max_bytes"), Found::Prefix(20));
        assert_eq!(line(text, "tenant"), Found::Nowhere);
    }

    #[test]
    fn sequence_at_the_indent_of_its_key() {
        let text = "a:\n- x\n- y: 1\n  z: 2\nb: 3\n";
        assert_eq!(line(text, "a[1].z"), Found::Exact(4));
        assert_eq!(line(text, "b"), Found::Exact(5));
    }

    #[test]
    fn comments_respect_quotes() {
        assert_eq!(comment_start("a: '#x' # c"), Some(8));
        assert_eq!(comment_start("a: b#c"), None);
        assert_eq!(comment_start("# c"), Some(0));
        assert_eq!(comment_start("a: \"it's\" #c"), Some(10));
        assert_eq!(comment_start("a: don't # c"), Some(9));
    }

    #[test]
    fn path_at_names_the_field_on_a_line() {
        let o = Outline::new("exporters:\n  mimir: {tenant: x, url: y}\n");
        assert_eq!(o.path_at(2, 25).as_deref(), Some("exporters.mimir.url"));
        assert_eq!(o.path_at(2, 12).as_deref(), Some("exporters.mimir.tenant"));
        assert_eq!(o.path_at(1, 1).as_deref(), Some("exporters"));
    }
}
