//! Parses CSV of ID mappings: the `POST /idmap` body (`source_id,target_id`) and the
//! `source_id,target_id,error` output of `translate`.
//!
//! Only parsing: the whole text is checked before `IdStore` writes anything, so a bad line
//! imports nothing. Must not panic on any input (it comes from a client).

use super::{ImportError, MAX_ID_BYTES};

/// Why a CSV line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CsvProblem {
    #[error("expected 2 fields (source_id,target_id) or 3 (source_id,target_id,error), found {0}")]
    FieldCount(usize),
    #[error("source_id is empty")]
    EmptySource,
    #[error("target_id is empty")]
    EmptyTarget,
    #[error("an ID is longer than {MAX_ID_BYTES} bytes")]
    TooLong,
    #[error("an ID may only hold printable ASCII other than quotes, commas and spaces")]
    BadCharacter,
    #[error("a quoted field is not closed")]
    UnterminatedQuote,
    #[error("text after the closing quote of a field")]
    TextAfterQuote,
}

struct Record {
    line: usize,
    fields: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CsvState {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the field's end, or the first of a doubled quote.
    QuoteInQuoted,
}

/// RFC 4180 records, each with the line it starts on. CR is dropped outside quotes.
fn csv_records(csv: &str) -> Result<Vec<Record>, ImportError> {
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut field = Vec::new();
    let mut state = CsvState::FieldStart;
    let mut line = 1;
    let mut record_line = 1;
    for &b in csv.as_bytes() {
        match (state, b) {
            (CsvState::Quoted, b'"') => state = CsvState::QuoteInQuoted,
            (CsvState::Quoted, _) => {
                if b == b'\n' {
                    line += 1;
                }
                field.push(b);
            }
            (CsvState::QuoteInQuoted, b'"') => {
                field.push(b'"');
                state = CsvState::Quoted;
            }
            (CsvState::FieldStart, b'"') => state = CsvState::Quoted,
            (_, b',') => {
                fields.push(csv_field(std::mem::take(&mut field), line)?);
                state = CsvState::FieldStart;
            }
            (_, b'\n') => {
                fields.push(csv_field(std::mem::take(&mut field), line)?);
                records.push(Record {
                    line: record_line,
                    fields: std::mem::take(&mut fields),
                });
                line += 1;
                record_line = line;
                state = CsvState::FieldStart;
            }
            (_, b'\r') => {}
            (CsvState::QuoteInQuoted, _) => {
                return Err(ImportError::BadLine {
                    line,
                    problem: CsvProblem::TextAfterQuote,
                })
            }
            (CsvState::FieldStart | CsvState::Unquoted, _) => {
                field.push(b);
                state = CsvState::Unquoted;
            }
        }
    }
    if state == CsvState::Quoted {
        return Err(ImportError::BadLine {
            line: record_line,
            problem: CsvProblem::UnterminatedQuote,
        });
    }
    if !fields.is_empty() || !field.is_empty() {
        fields.push(csv_field(field, line)?);
        records.push(Record {
            line: record_line,
            fields,
        });
    }
    Ok(records)
}

fn csv_field(bytes: Vec<u8>, line: usize) -> Result<String, ImportError> {
    // Split only at ASCII bytes, so a field of a `&str` is UTF-8; refuse rather than trust it.
    String::from_utf8(bytes).map_err(|_| ImportError::BadLine {
        line,
        problem: CsvProblem::BadCharacter,
    })
}

pub(super) fn parse_mappings(csv: &str) -> Result<Vec<(String, String)>, ImportError> {
    let mut pairs = Vec::new();
    let mut first = true;
    for record in csv_records(csv)? {
        let fields: Vec<&str> = record.fields.iter().map(|f| f.trim()).collect();
        if fields.iter().all(|f| f.is_empty()) {
            continue;
        }
        let is_header = first
            && fields
                .first()
                .is_some_and(|f| f.eq_ignore_ascii_case("source_id"));
        first = false;
        if is_header {
            continue;
        }
        let bad = |problem| ImportError::BadLine {
            line: record.line,
            problem,
        };
        let (source, target) = match fields.as_slice() {
            [source, target] => {
                if target.is_empty() && !source.is_empty() {
                    return Err(bad(CsvProblem::EmptyTarget));
                }
                (*source, *target)
            }
            [source, target, error] => {
                if source.is_empty() {
                    return Err(bad(CsvProblem::EmptySource));
                }
                if !error.is_empty() || target.is_empty() {
                    continue;
                }
                (*source, *target)
            }
            other => return Err(bad(CsvProblem::FieldCount(other.len()))),
        };
        for id in [source, target] {
            check_csv_id(id).map_err(bad)?;
        }
        pairs.push((source.to_owned(), target.to_owned()));
    }
    Ok(pairs)
}

fn check_csv_id(id: &str) -> Result<(), CsvProblem> {
    if id.is_empty() {
        return Err(CsvProblem::EmptySource);
    }
    if id.len() > MAX_ID_BYTES {
        return Err(CsvProblem::TooLong);
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b',')
    {
        return Err(CsvProblem::BadCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_field_spanning_lines_keeps_later_line_numbers_right() {
        let (r, i) = ("AAMkADr=", "AAkALgi");
        let csv = format!("source_id,target_id,error\n{r},,\"two\nlines\"\n{r},{i},x,y\n");
        match parse_mappings(&csv) {
            Err(ImportError::BadLine { line, .. }) => assert_eq!(line, 4),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_header_row_is_only_skipped_at_the_top() {
        let pairs = parse_mappings("SOURCE_ID,TARGET_ID\nA1,B1\n").unwrap();
        assert_eq!(pairs, vec![("A1".to_string(), "B1".to_string())]);
        match parse_mappings("A1,B1\nsource_id,target_id x\n") {
            Err(ImportError::BadLine { line, problem }) => {
                assert_eq!((line, problem), (2, CsvProblem::BadCharacter));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn quoted_ids_and_doubled_quotes_are_read_as_rfc_4180_says() {
        let pairs = parse_mappings("\"A1\",\"B1\",\"\"\"\"\nA2,B2,\"\"\n").unwrap();
        assert_eq!(pairs, vec![("A2".to_string(), "B2".to_string())]);
        let pairs = parse_mappings("\"A1\",\"B1\"\r\n").unwrap();
        assert_eq!(pairs, vec![("A1".to_string(), "B1".to_string())]);
    }
}
