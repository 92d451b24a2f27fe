//! The `translate` command's CSV: rows appended and flushed per batch, and what an earlier
//! run already wrote (to skip those IDs and to replay their mappings into the store).
//!
//! Reads back only what it wrote; must not lose a row already on disk (the file is only
//! ever appended to).

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use super::{store_key_of, TranslateError};

pub(super) const HEADER: &str = "source_id,target_id,error";

/// The CSV being written, and what an earlier run already wrote to it.
pub(super) struct Output {
    sink: Box<dyn Write>,
    path: Option<PathBuf>,
    /// `source_id`s already in the output, plus those seen so far in this run's input.
    pub(super) done: HashSet<String>,
    /// (store key, target) of rows with a target in the existing output.
    pub(super) earlier_mappings: Vec<(String, String)>,
}

impl Output {
    pub(super) fn open(path: Option<PathBuf>) -> Result<Output, TranslateError> {
        let Some(path) = path else {
            let mut out = Output {
                sink: Box::new(std::io::stdout()),
                path: None,
                done: HashSet::new(),
                earlier_mappings: Vec::new(),
            };
            out.write_raw(&format!("{HEADER}\n"))?;
            return Ok(out);
        };
        let failed = |source| TranslateError::Output {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(failed)?;
        let mut existing = String::new();
        file.seek(SeekFrom::Start(0)).map_err(failed)?;
        file.read_to_string(&mut existing).map_err(failed)?;
        let mut done = HashSet::new();
        let mut earlier_mappings = Vec::new();
        for record in csv_records(&existing).into_iter().skip(1) {
            // A row cut short by a crash is not done; its ID is translated again.
            let [source, target, error] = record.as_slice() else {
                continue;
            };
            if source.is_empty() {
                continue;
            }
            if !target.is_empty() && error.is_empty() {
                earlier_mappings.push((store_key_of(source), target.clone()));
            }
            done.insert(source.clone());
        }
        let mut out = Output {
            sink: Box::new(file),
            path: Some(path),
            done,
            earlier_mappings,
        };
        if existing.is_empty() {
            out.write_raw(&format!("{HEADER}\n"))?;
        } else if !existing.ends_with('\n') {
            out.write_raw("\n")?;
        }
        Ok(out)
    }

    pub(super) fn write_rows(&mut self, rows: &[(&str, &str, &str)]) -> Result<(), TranslateError> {
        let mut text = String::new();
        for (source, target, error) in rows {
            text.push_str(&csv_field(source));
            text.push(',');
            text.push_str(&csv_field(target));
            text.push(',');
            text.push_str(&csv_field(error));
            text.push('\n');
        }
        self.write_raw(&text)
    }

    fn write_raw(&mut self, text: &str) -> Result<(), TranslateError> {
        let result = self
            .sink
            .write_all(text.as_bytes())
            .and_then(|()| self.sink.flush());
        result.map_err(|source| TranslateError::Output {
            path: self.path.clone().unwrap_or_else(|| PathBuf::from("-")),
            source,
        })
    }
}

/// RFC 4180: quoted when it holds a comma, quote, line break or edge space.
pub(super) fn csv_field(text: &str) -> String {
    let needs_quotes =
        text.contains([',', '"', '\r', '\n']) || text.starts_with(' ') || text.ends_with(' ');
    if needs_quotes {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// RFC 4180 records; lenient (a stray quote is kept as text), as it only reads back what
/// this command wrote. A last record without a line break is dropped: it may be cut short.
fn csv_records(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (false, '\n') => {
                fields.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut fields));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed_and_read_back() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
        let error = "Value cannot be null.\r\nParameter name: rawBytes";
        let text = format!("{HEADER}\nid1,,{}\nid2,T,\n", csv_field(error));
        let records = csv_records(&text);
        assert_eq!(records.len(), 3);
        assert_eq!(
            records[1],
            vec!["id1".to_string(), String::new(), error.to_string()]
        );
        assert_eq!(records[2], vec!["id2", "T", ""]);
    }

    #[test]
    fn a_last_line_without_a_break_is_not_a_record() {
        let records = csv_records("source_id,target_id,error\nid1,T,\nid2,T");
        assert_eq!(records.len(), 2);
    }
}
