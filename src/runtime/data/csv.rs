//! CSV sources: one sample per row, every column a number; one column (index, negative from the
//! end) is the label, the others the input features. Ragged rows, non-numbers and numbers beyond
//! f32 are errors that name the line and column.

use super::{file, Column, DataError, RawSplit, Values};
use std::path::{Path, PathBuf};

/// Parses CSV text (already read) into rows of numbers; `path` only names the file in errors.
pub fn parse_rows(
    path: &Path,
    text: &str,
    header: bool,
) -> Result<Vec<(usize, Vec<f64>)>, DataError> {
    let err = |line, column, msg: String| DataError::Csv {
        path: path.to_path_buf(),
        line,
        column,
        msg,
    };
    // The byte order mark that spreadsheets put before UTF-8 text is not part of the first field
    // (it made `\u{feff}1` "not a number", shown as `1`).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = line_ends(text);
    let mut rows: Vec<(usize, Vec<f64>)> = Vec::new();
    let mut width = None;
    for (i, line) in text.lines().enumerate().skip(header as usize) {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut row = Vec::with_capacity(width.unwrap_or(8));
        for (c, field) in line.split(',').enumerate() {
            let f = field.trim();
            match f.parse::<f64>() {
                // Samples are f32: a value finite only as f64 would load as infinity.
                Ok(v) if (v as f32).is_finite() => row.push(v),
                Ok(v) if v.is_finite() => {
                    return Err(err(
                        line_no,
                        c + 1,
                        format!("`{f}` is outside the range of f32 (±3.4e38)"),
                    ))
                }
                _ => {
                    return Err(err(
                        line_no,
                        c + 1,
                        // Control characters shown as escapes (NUL bytes printed as nothing).
                        format!(
                            "expected a number, found `{}`{}",
                            f.escape_debug(),
                            separator_hint(f)
                        ),
                    ));
                }
            }
        }
        match width {
            None => width = Some(row.len()),
            Some(w) if w != row.len() => {
                let first = rows[0].0;
                return Err(err(
                    line_no,
                    row.len().min(w) + 1,
                    format!("{} columns, but line {first} has {w}", row.len()),
                ));
            }
            _ => {}
        }
        rows.push((line_no, row));
    }
    Ok(rows)
}

/// What to say of a field that is not a number but numbers separated otherwise than by commas
/// (`1;2;3`, tab- or space-separated columns, as spreadsheets and `numpy.savetxt` write them).
fn separator_hint(field: &str) -> String {
    for (sep, name) in [(';', "semicolons"), ('\t', "tabs"), (' ', "spaces")] {
        let parts: Vec<&str> = field.split(sep).filter(|p| !p.trim().is_empty()).collect();
        if parts.len() > 1 && parts.iter().all(|p| p.trim().parse::<f64>().is_ok()) {
            return format!(
                ": the columns look separated by {name}; a CSV source reads columns separated \
                 by commas"
            );
        }
    }
    String::new()
}

/// `text` with lines ended by a bare carriage return (classic Mac OS, some spreadsheet exports)
/// ended by `\n`: `str::lines` took a file of them for one line, whose fields ran together
/// (`2\r3` was "not a number", shown as `23`). Text without them is borrowed as it is.
fn line_ends(text: &str) -> std::borrow::Cow<'_, str> {
    let b = text.as_bytes();
    let bare = (0..b.len()).any(|i| b[i] == b'\r' && b.get(i + 1) != Some(&b'\n'));
    if bare {
        text.replace("\r\n", "\n").replace('\r', "\n").into()
    } else {
        text.into()
    }
}

/// Loads a CSV file: features as f32 `[columns − 1]`, the label column as `[]`: i32 when every
/// label is an integer that fits, else f32. A file
/// larger than the memory `available` allows ([`file::max_file_bytes`]) is refused.
pub fn load(
    written: &str,
    label_column: i64,
    header: bool,
    dir: &Path,
    available: Option<u64>,
) -> Result<RawSplit, DataError> {
    let (path, bytes) = file::read(written, dir, available)?;
    split_from_bytes(path, bytes, label_column, header)
}

/// A CSV file already read (`path` names it in errors) as a split, as [`load`] describes.
pub fn split_from_bytes(
    path: PathBuf,
    bytes: Vec<u8>,
    label_column: i64,
    header: bool,
) -> Result<RawSplit, DataError> {
    let text = utf8(&path, bytes)?;
    let text = line_ends(&text);
    let rows = match parse_rows(&path, &text, header) {
        // A first line of names (`a,b,c,label`) read as numbers: say that it is a header when no
        // field of it is a number and the rest of the file parses without it (`nnc predict`
        // skips such a line by itself). A first row with one bad value (`1,2,x`) is data.
        Err(DataError::Csv {
            path,
            line: 1,
            column,
            msg,
        }) if !header
            && text
                .lines()
                .next()
                .is_some_and(|l| l.split(',').all(|f| f.trim().parse::<f64>().is_err()))
            && parse_rows(&path, &text, true).is_ok_and(|r| !r.is_empty()) =>
        {
            return Err(DataError::Csv {
                path,
                line: 1,
                column,
                msg: format!("{msg}: the first line looks like a header; add `header: true` to the csv source"),
            });
        }
        r => r?,
    };
    let width = rows
        .first()
        .map(|r| r.1.len())
        .ok_or_else(|| DataError::Format {
            path: path.clone(),
            msg: "no data rows".into(),
        })?;
    let label = if label_column < 0 {
        width as i64 + label_column
    } else {
        label_column
    };
    if label < 0 || label >= width as i64 {
        return Err(DataError::Format {
            path,
            msg: format!("label column {label_column} is outside the {width} columns"),
        });
    }
    if width < 2 {
        return Err(DataError::Format {
            path,
            msg: "a row needs a label and at least one feature".into(),
        });
    }
    let label = label as usize;
    let mut x = Vec::with_capacity(rows.len() * (width - 1));
    let mut y = Vec::with_capacity(rows.len());
    for (_, row) in &rows {
        for (c, v) in row.iter().enumerate() {
            if c != label {
                x.push(*v as f32);
            }
        }
        y.push(row[label]);
    }
    // Integer labels are kept exact (as class ids above 2^24 would not be in f32); the model's
    // label type decides later what they become.
    let y = if y
        .iter()
        .all(|v| v.fract() == 0.0 && (i32::MIN as f64..=i32::MAX as f64).contains(v))
    {
        Values::I32(y.iter().map(|&v| v as i32).collect())
    } else {
        Values::F32(y.iter().map(|&v| v as f32).collect())
    };
    Ok(RawSplit {
        x: Column {
            values: Values::F32(x),
            shape: vec![width - 1],
        },
        y: Column {
            values: y,
            shape: vec![],
        },
        len: rows.len(),
    })
}

/// The file's bytes as UTF-8 text, or an error naming the first bad byte.
pub fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, DataError> {
    String::from_utf8(bytes).map_err(|e| DataError::Format {
        path: path.to_path_buf(),
        msg: format!(
            "not UTF-8 text (bad byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })
}
