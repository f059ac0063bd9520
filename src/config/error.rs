//! Control side: configuration errors that name the file, the line, the key and the fix.

use std::fmt;

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// The key, as a path: `route[0].backends[1]`, `runtime.workers`.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

/// Every problem found in one configuration, reported at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file the configuration came from (`<embedded default>` for the built-in one).
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "invalid configuration {}: {n} problem{}",
            self.file,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            match p.line {
                Some(line) => write!(f, "  {}:{line}: ", self.file)?,
                None => write!(f, "  {}: ", self.file)?,
            }
            writeln!(f, "{}: {}", p.key, p.message)?;
            writeln!(f, "      fix: {}", p.fix)?;
        }
        Ok(())
    }
}

/// Collects problems while validating; turns byte offsets into line numbers.
pub(crate) struct Problems<'a> {
    text: &'a str,
    list: Vec<Problem>,
    /// False for text ringway generated itself (a JSON body turned into TOML): its line
    /// numbers would mean nothing to whoever sent it.
    lines: bool,
}

impl<'a> Problems<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Problems {
            text,
            list: Vec::new(),
            lines: true,
        }
    }

    pub(crate) fn without_lines(text: &'a str) -> Self {
        Problems {
            lines: false,
            ..Problems::new(text)
        }
    }

    /// Records a problem at byte offset `at` (a `Spanned` start), if known.
    pub(crate) fn add(
        &mut self,
        at: Option<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let line = at
            .filter(|_| self.lines)
            .map(|offset| line_of(self.text, offset));
        self.list.push(Problem {
            line,
            key: key.into(),
            message: message.into(),
            fix: fix.into(),
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn into_error(self, file: &str) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            problems: self.list,
        }
    }
}

/// 1-based line number of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
