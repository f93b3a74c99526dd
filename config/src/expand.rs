//! `${VAR}` and `${VAR:-default}` expansion of the raw file text, before YAML parsing, so line
//! numbers of errors stay those of the file.
//!
//! - `${VAR}`: the value of `VAR`; an error if `VAR` is not set (set but empty gives "").
//! - `${VAR:-default}`: the value of `VAR` if set and not empty, else `default`, which may itself
//!   contain references (`${A:-${B:-x}}`); it is only expanded when it is used.
//! - `$$` is a literal `$`; a `$` not followed by `{` or `$` is kept as it is, and so is `${1}`
//!   (regex groups in relabel rules: `$1`, `${1}`; a named group needs `$${name}`).
//! - Comments (`#` at the start of a line or after a space, outside quotes) are left alone, so a
//!   commented-out `${VAR}` needs no variable.
//!
//! Values are inserted as they are, not rescanned for `$`.

use std::fmt;

use crate::locate::comment_start;

/// Why the text could not be expanded, and where (1-based line and column of the `$`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ExpandError {}

/// Expands every reference outside comments with `lookup`.
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    expand_env_mapped(text, lookup).map(|(expanded, _)| expanded)
}

/// As [`expand_env`], with where each line of the expanded text came from in `text`.
pub fn expand_env_mapped(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(String, LineMap), ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut map = LineMap { starts: Vec::new(), expanded_lines: 1, file_lines: 1 };
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let code_end = comment_start(line).unwrap_or(line.len());
        let expanded = expand_str(&line[..code_end], &lookup).map_err(|(offset, message)| ExpandError {
            line: index + 1,
            column: line[..offset].chars().count() + 1,
            message,
        })?;
        map.starts.push((map.expanded_lines, map.file_lines));
        let start = out.len();
        out.push_str(&expanded);
        out.push_str(&line[code_end..]);
        map.expanded_lines += line_breaks(&out[start..]);
        map.file_lines += line_breaks(line);
    }
    Ok((out, map))
}

/// Where the lines of an expanded text come from in the file (1-based, lines broken at LF, CR
/// and CRLF as YAML breaks them). A variable whose value has several lines makes the expanded
/// text longer than the file, and an error the YAML parser finds there must still name a line
/// of the file: the one holding the reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineMap {
    /// The first expanded line of each line of the file, and that file line.
    starts: Vec<(usize, usize)>,
    expanded_lines: usize,
    file_lines: usize,
}

impl LineMap {
    /// The file line of expanded line `line`; a line past the end (a parser reports the end of a
    /// text with no final newline one line further) stays as far past the file's end.
    pub fn file_line(&self, line: usize) -> usize {
        if line > self.expanded_lines {
            return self.file_lines + (line - self.expanded_lines);
        }
        match self.starts.partition_point(|&(expanded, _)| expanded <= line) {
            0 => line,
            i => {
                let (expanded, file) = self.starts[i - 1];
                // Within one file line that itself holds several (a lone CR), count along as far
                // as the file has them.
                let next = self.starts.get(i).map_or(self.file_lines, |&(_, f)| f.saturating_sub(1)).max(file);
                (file + (line - expanded)).min(next)
            }
        }
    }
}

/// Line breaks in `s`: LF, CR, and CRLF counted once.
fn line_breaks(s: &str) -> usize {
    let bytes = s.as_bytes();
    bytes.iter().enumerate().filter(|&(i, &b)| b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))).count()
}

/// Expands one stretch of text; an error carries the byte offset of the offending `$`.
fn expand_str(s: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(found) = s[i..].find('$') {
        let dollar = i + found;
        out.push_str(&s[i..dollar]);
        let after = &s[dollar + 1..];
        if after.starts_with('$') {
            out.push('$');
            i = dollar + 2;
        } else if after.starts_with('{') {
            let body_start = dollar + 2;
            let body_len = matching_brace(&s[body_start..])
                .ok_or_else(|| (dollar, "unterminated \"${\" (missing \"}\")".to_string()))?;
            let body = &s[body_start..body_start + body_len];
            let (name, default) = match body.find(":-") {
                Some(p) => (&body[..p], Some(&body[p + 2..])),
                None => (body, None),
            };
            if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
                // A regex group in a relabel rule (`${1}`), never a variable.
                out.push_str(&s[dollar..body_start + body_len + 1]);
                i = body_start + body_len + 1;
                continue;
            }
            if !is_variable_name(name) {
                return Err((
                    dollar,
                    format!("invalid reference \"${{{body}}}\": expected ${{NAME}} or ${{NAME:-default}}"),
                ));
            }
            match (lookup(name), default) {
                (Some(v), None) => out.push_str(&v),
                (Some(v), Some(_)) if !v.is_empty() => out.push_str(&v),
                (_, Some(d)) => {
                    let d = expand_str(d, lookup).map_err(|(off, m)| (off + body_start + name.len() + 2, m))?;
                    out.push_str(&d);
                }
                (None, None) => return Err((dollar, format!("environment variable {name} is not set"))),
            }
            i = body_start + body_len + 1;
        } else {
            out.push('$');
            i = dollar + 1;
        }
    }
    out.push_str(&s[i..]);
    Ok(out)
}

/// Length of the body of a `${` whose body starts `s`, up to its `}`, counting nested `${`.
fn matching_brace(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 1;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("a".into()),
            "EMPTY" => Some(String::new()),
            "DOLLAR" => Some("$B".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_as_documented() {
        let cases = [
            ("${A}", "a"),
            ("x${A}y${A}", "xaya"),
            ("${A:-x}", "a"),
            ("${UNSET:-x}", "x"),
            ("${UNSET:-}", ""),
            ("${EMPTY}", ""),
            ("${EMPTY:-x}", "x"),
            ("${UNSET:-${A}}", "a"),
            ("${UNSET:-${UNSET2:-deep}}", "deep"),
            ("${A:-${UNSET}}", "a"),
            ("${UNSET:-a:-b}", "a:-b"),
            ("$$", "$"),
            ("$${A}", "${A}"),
            ("cost: 5$", "cost: 5$"),
            ("$1 and ${1}", "$1 and ${1}"),
            ("${DOLLAR}", "$B"),
            ("a: b # ${UNSET} in a comment", "a: b # ${UNSET} in a comment"),
            ("# ${UNSET}\nb: ${A}\n", "# ${UNSET}\nb: a\n"),
            ("a: '#${A}'", "a: '#a'"),
        ];
        for (input, expected) in cases {
            assert_eq!(expand_env(input, env).as_deref(), Ok(expected), "{input}");
        }
    }

    #[test]
    fn lines_map_back_to_the_file() {
        let multi = |name: &str| (name == "M").then(|| "x\ny\nz".to_string());
        let (text, map) = expand_env_mapped("a: 1\nb: ${M}\nc: 3\nd: ${M}", multi).unwrap();
        assert_eq!(text, "a: 1\nb: x\ny\nz\nc: 3\nd: x\ny\nz");
        let file_lines: Vec<usize> = (1..=10).map(|l| map.file_line(l)).collect();
        assert_eq!(file_lines, [1, 2, 2, 2, 3, 4, 4, 4, 5, 6]);
        // A file line of its own with a lone CR keeps its two lines.
        let (_, map) = expand_env_mapped("a: 1\rb: 2\nc: 3\n", multi).unwrap();
        assert_eq!((1..=4).map(|l| map.file_line(l)).collect::<Vec<_>>(), [1, 2, 3, 4]);
    }

    #[test]
    fn errors_say_what_and_where() {
        let err = |line, column, message: &str| Err(ExpandError { line, column, message: message.to_string() });
        let cases = [
            ("a: ${UNSET}", err(1, 4, "environment variable UNSET is not set")),
            ("a: 1\nb: x${A}${UNSET:-${NOPE}}", err(2, 18, "environment variable NOPE is not set")),
            ("a: ${A", err(1, 4, "unterminated \"${\" (missing \"}\")")),
            ("a: ${UNSET:-${A}", err(1, 4, "unterminated \"${\" (missing \"}\")")),
            ("a: ${}", err(1, 4, "invalid reference \"${}\": expected ${NAME} or ${NAME:-default}")),
            ("a: ${A B}", err(1, 4, "invalid reference \"${A B}\": expected ${NAME} or ${NAME:-default}")),
            ("a: ${A:?x}", err(1, 4, "invalid reference \"${A:?x}\": expected ${NAME} or ${NAME:-default}")),
            ("a: ${1A}", err(1, 4, "invalid reference \"${1A}\": expected ${NAME} or ${NAME:-default}")),
        ];
        for (input, expected) in cases {
            assert_eq!(expand_env(input, env), expected, "{input}");
        }
    }
}
