//! Configuration errors that say where: the file, the line, the dotted key (or the flag).

use std::fmt;
use std::path::PathBuf;

/// Where configuration text came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `config/turnpike.toml` as compiled into the binary.
    Embedded,
    /// A file named on the command line or in `TURNPIKE_CONFIG`.
    File(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Embedded => f.write_str("<embedded default>"),
            Origin::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Why the configuration was refused. Displays as `FILE:LINE: KEY: reason`, e.g.
/// `turnpike.toml:42: relay.port_min: 60000 is greater than relay.port_max (50000)`.
/// Values of passwords and secrets never appear in `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (a path or `<embedded default>`), or `command line` for a flag.
    pub origin: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// Dotted key (`relay.port_min`, `listen.udp[1]`), or the flag (`--realm`); empty when
    /// the whole file is at fault (cannot be read, not TOML).
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Where each key of a TOML text is written, so that errors can name a key for a byte
/// offset (toml's spans) and a line for a key (our validation).
///
/// This is a line scanner, not a TOML parser: it understands `[table]`, `[[array]]` and
/// `key = value` lines with bare (possibly dotted) keys, which is what the documented
/// format uses. Anything fancier (quoted keys, inline tables) just gives a less precise
/// key or no line, never a wrong acceptance: toml itself has already judged the text.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyIndex {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Dotted key; for a table header, the table's name.
    key: String,
    /// Byte offset of the start of its line.
    offset: usize,
    /// 1-based line number.
    line: usize,
}

impl KeyIndex {
    pub(crate) fn scan(text: &str) -> KeyIndex {
        let mut entries = Vec::new();
        let mut table = String::new();
        let mut offset = 0;
        for (n, raw_line) in text.split_inclusive('\n').enumerate() {
            let line = raw_line.trim();
            if let Some(header) = line.strip_prefix('[') {
                // `[relay]` or `[[relay]]`, maybe followed by a comment.
                let name = header.trim_start_matches('[');
                if let Some(end) = name.find(']') {
                    table = name.get(..end).unwrap_or_default().replace(' ', "");
                    entries.push(Entry {
                        key: table.clone(),
                        offset,
                        line: n + 1,
                    });
                }
            } else if let Some((key, _)) = line.split_once('=') {
                let key = key.trim();
                let bare = |c: char| c.is_ascii_alphanumeric() || "_-. ".contains(c);
                if !key.is_empty() && key.chars().all(bare) {
                    let key = key.replace(' ', "");
                    let dotted = if table.is_empty() {
                        key
                    } else {
                        format!("{table}.{key}")
                    };
                    entries.push(Entry {
                        key: dotted,
                        offset,
                        line: n + 1,
                    });
                }
            }
            offset += raw_line.len();
        }
        KeyIndex { entries }
    }

    /// The key whose value (or header) contains byte `offset`: the last key written at or
    /// before it. Multi-line arrays work because their elements follow their key.
    pub(crate) fn key_at(&self, offset: usize) -> Option<&str> {
        self.entries
            .iter()
            .take_while(|e| e.offset <= offset)
            .last()
            .map(|e| e.key.as_str())
    }

    /// The key set on 1-based `line`, if that line is a `key = ...` line.
    pub(crate) fn key_on_line(&self, line: usize) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.line == line)
            .map(|e| e.key.as_str())
    }

    /// The line where `key` (`relay.port_min`, or `listen.udp[1]` → `listen.udp`) is set.
    pub(crate) fn line_of(&self, key: &str) -> Option<usize> {
        let base = key.split('[').next().unwrap_or(key);
        self.entries.iter().find(|e| e.key == base).map(|e| e.line)
    }
}

/// 1-based line number of byte `offset` in `text`.
pub(crate) fn line_at(text: &str, offset: usize) -> usize {
    let before = text.get(..offset).unwrap_or(text);
    before.bytes().filter(|&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str =
        "top = 1\n[relay]\n# comment\nport_min = 5\nlist = [\n  \"a\",\n  3,\n]\n[[x.y]]\nz=1\n";

    #[test]
    fn finds_key_for_offsets_inside_values_and_headers() {
        let index = KeyIndex::scan(TEXT);
        let at = |needle: &str| index.key_at(TEXT.find(needle).unwrap()).map(str::to_string);
        assert_eq!(at("1\n").as_deref(), Some("top"));
        assert_eq!(at("relay]").as_deref(), Some("relay"));
        assert_eq!(at("5").as_deref(), Some("relay.port_min"));
        assert_eq!(at("3,").as_deref(), Some("relay.list"));
        assert_eq!(at("z=").as_deref(), Some("x.y.z"));
    }

    #[test]
    fn finds_line_of_key_and_of_offset() {
        let index = KeyIndex::scan(TEXT);
        assert_eq!(index.line_of("relay.port_min"), Some(4));
        assert_eq!(index.line_of("relay.list[1]"), Some(5));
        assert_eq!(index.line_of("relay.nope"), None);
        assert_eq!(line_at(TEXT, TEXT.find("3,").unwrap()), 7);
    }
}
