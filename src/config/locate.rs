//! Reading a config file and locating a problem in it: the YAML parser's errors, and a key
//! path's line, found by walking the file's block structure.

use std::path::{Path, PathBuf};

use super::ConfigError;
use super::rules::{Problem, expected};

/// The 1-based line of a key path such as `uplinks[1].interface` in a YAML text.
///
/// It follows the block structure by indentation: each key is looked up among the keys of its
/// parent mapping, each index among the items of its parent list. When the path goes deeper than
/// the text (a default, an inline `[a, b]` list), the line of the deepest part found is returned;
/// `None` only when not even the first part is there.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    let entries = entries(text);
    let mut block: &[Entry<'_>] = &entries;
    let mut line = None;
    for segment in segments(key) {
        let found = match segment {
            Segment::Key(name) => find_key(block, name),
            Segment::Index(n) => find_item(block, n),
        };
        let Some((at, child)) = found else { break };
        line = Some(block[at].line);
        block = &block[child];
    }
    line
}

/// The key path of what stands at a 1-based line of a YAML text (the inverse of [`line_of`]), or
/// of the last entry before it when the line is blank; empty before the first key.
pub fn key_at(text: &str, line: usize) -> String {
    // (the column a frame's children are deeper than, the frame)
    let mut stack: Vec<(usize, Segment<'_>)> = Vec::new();
    for entry in entries(text).iter().take_while(|e| e.line <= line) {
        if entry.dash {
            let mut index = 0;
            while let Some(&(col, segment)) = stack.last() {
                match segment {
                    Segment::Index(n) if col == entry.indent => index = n + 1,
                    _ if col > entry.indent => {}
                    _ => break,
                }
                stack.pop();
            }
            stack.push((entry.indent, Segment::Index(index)));
        } else {
            while stack.last().is_some_and(|&(col, _)| col >= entry.col) {
                stack.pop();
            }
        }
        if let Some(name) = key_of(entry.text) {
            stack.push((entry.col, Segment::Key(name)));
        }
    }
    let mut key = String::new();
    for (_, segment) in stack {
        match segment {
            Segment::Key(name) if key.is_empty() => key.push_str(name),
            Segment::Key(name) => {
                key.push('.');
                key.push_str(name);
            }
            Segment::Index(n) => key.push_str(&format!("[{n}]")),
        }
    }
    key
}

/// A config file's path and text.
#[derive(Debug)]
pub(super) struct Document {
    pub(super) path: PathBuf,
    pub(super) text: String,
}

/// The largest config file read: far beyond any real one (a gateway's list of a thousand edges
/// is about 200 KB), and small enough that a wrong path (a device, a log) fails at once.
pub(super) const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl Document {
    /// Reads a config file: a regular file of at most [`MAX_CONFIG_BYTES`], in UTF-8, with or
    /// without a byte-order mark.
    pub(super) fn read(path: &Path) -> Result<Self, ConfigError> {
        let refuse = |message: String| ConfigError {
            file: path.into(),
            line: None,
            key: String::new(),
            message,
            more: Vec::new(),
        };
        // The type is checked before opening: opening a FIFO would wait for a writer.
        let meta = std::fs::metadata(path).map_err(|e| refuse(format!("cannot read the config file: {e}")))?;
        if !meta.is_file() {
            let what = if meta.is_dir() { "a directory" } else { "not a regular file (a device, FIFO or socket)" };
            return Err(refuse(format!("the config file is {what}: give the path of a YAML file")));
        }
        let too_big = |size: u64| {
            refuse(format!("the config file is {size} bytes, more than the {MAX_CONFIG_BYTES} a config may have"))
        };
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(too_big(meta.len()));
        }
        let mut bytes = Vec::new();
        let file = std::fs::File::open(path).map_err(|e| refuse(format!("cannot read the config file: {e}")))?;
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_CONFIG_BYTES + 1), &mut bytes)
            .map_err(|e| refuse(format!("cannot read the config file: {e}")))?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(too_big(bytes.len() as u64));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            refuse(format!("the config file is not UTF-8 text (byte {} is not)", e.utf8_error().valid_up_to()))
        })?;
        // An editor's byte-order mark: YAML allows it, and it is no part of the first key.
        let text = text.strip_prefix('\u{feff}').map(str::to_owned).unwrap_or(text);
        Ok(Self { path: path.into(), text })
    }

    /// A path in the config, relative to the config file's directory unless absolute.
    pub(super) fn resolve(&self, path: &Path) -> PathBuf {
        match self.path.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.into(),
        }
    }

    pub(super) fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        yaml_serde::from_str(&self.text).map_err(|error| self.yaml_error(&error))
    }

    pub(super) fn locate(&self, problem: Problem) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            line: line_of(&self.text, &problem.key),
            key: problem.key,
            message: problem.message,
            more: Vec::new(),
        }
    }

    /// Every problem, located, in the file's order: the first, with the others in `more`.
    pub(super) fn locate_all(&self, problems: Vec<Problem>) -> ConfigError {
        let mut located: Vec<ConfigError> = problems.into_iter().map(|p| self.locate(p)).collect();
        located.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        let mut first = if located.is_empty() {
            ConfigError {
                file: self.path.clone(),
                line: None,
                key: String::new(),
                message: "refused".into(),
                more: Vec::new(),
            }
        } else {
            located.remove(0)
        };
        first.more = located;
        first
    }

    /// The parser's error, with its key path split off and its own "at line N column M" marks
    /// dropped (the line goes in [`ConfigError::line`]).
    pub(super) fn yaml_error(&self, error: &yaml_serde::Error) -> ConfigError {
        let parser_line = error.location().map(|l| l.line());
        let text = strip_marks(&error.to_string());
        // Serde's errors read `path: message`, with `.` for the top level.
        let (path, message) = match text.split_once(": ") {
            Some((path, message)) if is_key_path(path) => (path.trim_start_matches('.'), message),
            _ => ("", text.as_str()),
        };
        let join = |field: &str| if path.is_empty() { field.to_owned() } else { format!("{path}.{field}") };
        let (key, message, line) = if let Some(field) = between(message, "unknown field `", "`") {
            (join(field), message.replacen("unknown field", "unknown key", 1), parser_line)
        } else if let Some(field) = between(message, "missing field `", "`") {
            // The parser points at the start of the mapping; the mapping's own key says more.
            let key = join(field);
            let line = line_of(&self.text, &key);
            (key, format!("missing; expected {}", expected(&join(field))), line)
        } else if let Some(field) = between(message, "duplicate field `", "`") {
            let key = join(field);
            let line = second_line_of(&self.text, &key).or(parser_line);
            (
                key,
                format!(
                    "given twice; expected each key once (the first is on line {})",
                    line_of(&self.text, &join(field)).unwrap_or(0)
                ),
                line,
            )
        } else if let Some((what, _)) = message.split_once(", expected ") {
            (path.to_owned(), format!("{what}; expected {}", expected(path)), parser_line)
        } else if path.is_empty() {
            let key = parser_line.map(|line| key_at(&self.text, line)).unwrap_or_default();
            (key, message.to_owned(), parser_line)
        } else {
            (path.to_owned(), message.to_owned(), parser_line)
        };
        ConfigError { file: self.path.clone(), line, key, message, more: Vec::new() }
    }
}

pub(super) fn is_key_path(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "_-.[]?".contains(c))
}

pub(super) fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &text[text.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

/// Drops every " at line N column M" from a parser message.
pub(super) fn strip_marks(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(" at line ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " at line ".len()..];
        let digits = |s: &str| s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let line_len = digits(after);
        match after[line_len..].strip_prefix(" column ") {
            Some(column) if line_len > 0 && digits(column) > 0 => rest = &column[digits(column)..],
            _ => {
                out.push_str(" at line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One line of YAML block structure (blank lines, comments and `---` are left out).
#[derive(Debug)]
pub(super) struct Entry<'a> {
    /// 1-based.
    pub(super) line: usize,
    /// Spaces before the first character (the dash, for a list item).
    pub(super) indent: usize,
    /// Whether the line starts a list item (`- `).
    pub(super) dash: bool,
    /// The column the text starts at (after the dash).
    pub(super) col: usize,
    /// The text from `col`, e.g. `name: dsl`.
    pub(super) text: &'a str,
}

pub(super) fn entries(text: &str) -> Vec<Entry<'_>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let body = raw.trim_start_matches(' ');
        let indent = raw.len() - body.len();
        let body = body.trim_end();
        if body.is_empty() || body.starts_with('#') || body == "---" {
            continue;
        }
        let (dash, col, text) = match body.strip_prefix('-') {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => {
                let item = rest.trim_start_matches(' ');
                (true, indent + body.len() - item.len(), item)
            }
            _ => (false, indent, body),
        };
        out.push(Entry { line: i + 1, indent, dash, col, text });
    }
    out
}

/// The key a line sets, if it is `key:` or `key: value`.
pub(super) fn key_of(text: &str) -> Option<&str> {
    let (key, rest) = text.split_once(':')?;
    let key = key.trim().trim_matches('"').trim_matches('\'');
    (!key.is_empty() && (rest.is_empty() || rest.starts_with(' '))).then_some(key)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `uplinks[1].interface` as `uplinks`, `1`, `interface`.
pub(super) fn segments(key: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let mut pieces = part.split('[');
        if let Some(name) = pieces.next().filter(|n| !n.is_empty()) {
            out.push(Segment::Key(name));
        }
        out.extend(pieces.filter_map(|p| p.trim_end_matches(']').parse().ok()).map(Segment::Index));
    }
    out
}

/// The line of a key's second occurrence in its mapping (a key given twice).
pub(super) fn second_line_of(text: &str, key: &str) -> Option<usize> {
    let first = line_of(text, key)?;
    let leaf = segments(key).into_iter().rev().find_map(|s| match s {
        Segment::Key(name) => Some(name),
        Segment::Index(_) => None,
    })?;
    let entries = entries(text);
    let at = entries.iter().position(|e| e.line == first)?;
    let col = entries[at].col;
    entries[at + 1..]
        .iter()
        .take_while(|e| e.col >= col)
        .find(|e| e.col == col && key_of(e.text) == Some(leaf))
        .map(|e| e.line)
}

/// The entry of `name` among a mapping block's keys, and the range of its children.
pub(super) fn find_key(block: &[Entry<'_>], name: &str) -> Option<(usize, core::ops::Range<usize>)> {
    let base = block.iter().filter(|e| !e.text.is_empty()).map(|e| e.col).min()?;
    let at = block.iter().position(|e| e.col == base && key_of(e.text) == Some(name))?;
    let col = block[at].col;
    let end = (at + 1..block.len())
        .find(|&j| !(block[j].indent > col || (block[j].dash && block[j].indent == col)))
        .unwrap_or(block.len());
    Some((at, at + 1..end))
}

/// The entry of item `n` of a list block, and the range of the item (its first line included).
pub(super) fn find_item(block: &[Entry<'_>], n: usize) -> Option<(usize, core::ops::Range<usize>)> {
    let base = block.iter().filter(|e| e.dash).map(|e| e.indent).min()?;
    let at = block.iter().enumerate().filter(|(_, e)| e.dash && e.indent == base).nth(n)?.0;
    let end = (at + 1..block.len()).find(|&j| block[j].indent <= base).unwrap_or(block.len());
    Some((at, at..end))
}
