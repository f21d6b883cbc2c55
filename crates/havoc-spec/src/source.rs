//! Reading a spec file: the one place `havoc-spec` does I/O, so that every entry point gets the
//! same bounded read and the same positioned errors for a file that is too large or not UTF-8.
//!
//! [`decode`] is the pure half (bytes to text); [`read_file`] reads at most
//! [`MAX_DOCUMENT_BYTES`] + 1 bytes, whatever the file's size, and calls it.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::error::{SpecError, SpecErrors};
use crate::path::FieldPath;
use crate::yaml::{bytes_text, pos_at, Pos, MAX_DOCUMENT_BYTES};

/// Why a spec file could not be turned into text.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be opened or read.
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a spec's text (too large, not UTF-8): positioned problems,
    /// rendered like any other with [`SpecErrors::render`].
    #[error("{}", .0.render("<input>"))]
    Invalid(SpecErrors),
}

fn one(pos: Pos, message: String) -> SpecErrors {
    SpecErrors(vec![SpecError {
        path: FieldPath::root(),
        pos,
        message,
    }])
}

/// The text of a spec, or a positioned error: more than [`MAX_DOCUMENT_BYTES`], or not UTF-8
/// (reported at the line and column of the first invalid byte).
pub fn decode(bytes: Vec<u8>) -> Result<String, SpecErrors> {
    let len = bytes.len();
    if len > MAX_DOCUMENT_BYTES {
        // Position of the limit, counted on the valid prefix.
        let head = &bytes[..MAX_DOCUMENT_BYTES];
        let valid = match std::str::from_utf8(head) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default(),
        };
        return Err(one(
            pos_at(valid, valid.len()),
            format!(
                "the file is larger than the limit of {}: a Havoc spec is a few KiB",
                bytes_text(MAX_DOCUMENT_BYTES)
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let err = e.utf8_error();
        let bytes = e.as_bytes();
        let at = err.valid_up_to();
        let valid = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
        let bad: Vec<String> = bytes[at..]
            .iter()
            .take(err.error_len().unwrap_or(bytes.len() - at).clamp(1, 4))
            .map(|b| format!("0x{b:02X}"))
            .collect();
        one(
            pos_at(valid, valid.len()),
            format!(
                "the file is not UTF-8: byte {} at offset {at} is not valid UTF-8 text; save the file as UTF-8",
                bad.join(" ")
            ),
        )
    })
}

/// Reads a spec file, at most [`MAX_DOCUMENT_BYTES`] + 1 bytes of it, and decodes it.
pub fn read_file(path: &Path) -> Result<String, SourceError> {
    let io = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    decode(bytes).map_err(SourceError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_is_reported_at_its_line_and_column() {
        let e = decode(b"a: 1\nbb: \xFFx\n".to_vec()).expect_err("not utf-8");
        assert_eq!(e.0[0].pos, Pos { line: 2, col: 5 });
        assert!(
            e.0[0].message.contains("0xFF at offset 9"),
            "{}",
            e.0[0].message
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let e = decode("é: \u{1F600}".bytes().chain([0xC3]).collect()).expect_err("truncated");
        assert_eq!(e.0[0].pos, Pos { line: 1, col: 5 });
    }

    #[test]
    fn utf8_passes() {
        assert_eq!(decode(b"a: 1\n".to_vec()).expect("utf-8"), "a: 1\n");
    }
}
