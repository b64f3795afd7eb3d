//! Text sources for character models: the vocabulary is the sorted set of characters of the whole
//! file; the ids are cut into non-overlapping windows of `seq` (stride `seq`), each labelled with
//! the ids one position later (the next character at every position).

use super::{csv::utf8, file, Column, DataError, RawSplit, Values};
use std::path::{Path, PathBuf};

/// A text file as character ids and its vocabulary.
pub struct Text {
    pub path: PathBuf,
    pub ids: Vec<i32>,
    pub vocab: Vec<char>,
}

/// Reads a text file and builds its vocabulary. A file larger than the memory `available`
/// allows ([`file::max_file_bytes`]) is refused.
pub fn read(written: &str, dir: &Path, available: Option<u64>) -> Result<Text, DataError> {
    let (path, bytes) = file::read(written, dir, available)?;
    from_bytes(path, bytes)
}

/// A text file already read (`path` names it in errors) as ids and vocabulary.
pub fn from_bytes(path: PathBuf, bytes: Vec<u8>) -> Result<Text, DataError> {
    let text = utf8(&path, bytes)?;
    if text.is_empty() {
        return Err(DataError::EmptyText { path });
    }
    let mut vocab: Vec<char> = text.chars().collect();
    vocab.sort_unstable();
    vocab.dedup();
    // Collected from every character: without this, 4 bytes per character of the text would
    // stay reserved for as long as the vocabulary is kept (the whole training).
    vocab.shrink_to_fit();
    let ids = encode(&path, &text, &vocab)?;
    Ok(Text { path, ids, vocab })
}

/// `text` as ids into `vocab`; a character outside it is an error naming it.
pub fn encode(path: &Path, text: &str, vocab: &[char]) -> Result<Vec<i32>, DataError> {
    text.chars()
        .map(|c| {
            vocab
                .binary_search(&c)
                .map(|i| i as i32)
                .map_err(|_| DataError::Format {
                    path: path.to_path_buf(),
                    msg: format!("character {c:?} is not in the vocabulary of the training text"),
                })
        })
        .collect()
}

/// Windows of `seq` ids and their next-id labels, at stride `seq`. `path` names the file in errors.
pub fn windows(path: &Path, ids: &[i32], seq: usize) -> Result<RawSplit, DataError> {
    if seq == 0 || ids.len() < seq + 1 {
        return Err(DataError::TextTooShort {
            path: path.to_path_buf(),
            chars: ids.len(),
            seq,
        });
    }
    let n = (ids.len() - 1) / seq;
    let mut x = Vec::with_capacity(n * seq);
    let mut y = Vec::with_capacity(n * seq);
    for w in 0..n {
        x.extend_from_slice(&ids[w * seq..(w + 1) * seq]);
        y.extend_from_slice(&ids[w * seq + 1..(w + 1) * seq + 1]);
    }
    Ok(RawSplit {
        x: Column {
            values: Values::I32(x),
            shape: vec![seq],
        },
        y: Column {
            values: Values::I32(y),
            shape: vec![seq],
        },
        len: n,
    })
}
