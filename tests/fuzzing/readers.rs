//! The data and checkpoint readers on arbitrary bytes, shared by the property tests
//! (`tests/reader_fuzz.rs`) and the `readers` fuzz target (`fuzz/`). The first byte picks the
//! reader (and its settings), the rest is the file. Every reader must answer `Ok` or an error
//! that names the file, never panic; what it returns `Ok` must be self-consistent. Seed files,
//! one per reader, are in `fuzz/seeds/readers`.

use nnc::runtime::checkpoint::Checkpoint;
use nnc::runtime::data::{self, idx, DataError, Values};
use std::path::{Path, PathBuf};

/// The name every fuzzed file goes by; errors must mention it.
const NAME: &str = "fuzzed.bin";

/// Feeds `bytes` to the reader its first byte selects: whether it accepted the file. Panics if
/// an invariant fails.
pub fn check_bytes(bytes: &[u8]) -> bool {
    let Some((&sel, rest)) = bytes.split_first() else {
        return false;
    };
    let path = PathBuf::from(NAME);
    // Gzipped or not, as a data file would be read from disk.
    let file = match data::decompress(&path, rest.to_vec()) {
        Ok(b) => b,
        Err(e) => {
            named(&e.to_string());
            return false;
        }
    };
    match sel % 5 {
        0 => idx_images(&path, file),
        1 => idx_split(&path, file, sel),
        2 => csv(&path, file, sel),
        3 => text(&path, file, sel),
        _ => checkpoint(&path, rest),
    }
}

/// An error message must say which file it is about.
fn named(msg: &str) {
    assert!(msg.contains(NAME), "error does not name the file: {msg}");
}

/// The value, or `None` after checking that the error names the file.
fn data_result<T>(r: Result<T, DataError>) -> Option<T> {
    r.map_err(|e| named(&e.to_string())).ok()
}

fn idx_images(path: &Path, file: Vec<u8>) -> bool {
    let Some((values, count, dims)) = data_result(idx::images_from_bytes(path, file)) else {
        return false;
    };
    assert_eq!(values.len(), count * dims.iter().product::<usize>());
    true
}

/// The file cut in two at a place the selector picks: images, then labels.
fn idx_split(path: &Path, file: Vec<u8>, sel: u8) -> bool {
    let cut = (sel as usize / 5 * 16).min(file.len());
    let (images, labels) = file.split_at(cut);
    let split = data_result(idx::split_from_bytes(
        (path.to_path_buf(), images.to_vec()),
        (path.to_path_buf(), labels.to_vec()),
    ));
    let Some(s) = split else {
        return false;
    };
    assert_eq!(s.x.values.len(), s.len * s.x.per_sample());
    assert_eq!(s.y.values.len(), s.len);
    true
}

/// Header or not, label column first, last or out of range, from the selector.
fn csv(path: &Path, file: Vec<u8>, sel: u8) -> bool {
    let header = sel & 8 != 0;
    let label = [-1, 0, 1, 7][(sel as usize >> 4) & 3];
    let Some(s) = data_result(data::csv_from_bytes(path.into(), file, label, header)) else {
        return false;
    };
    assert_eq!(s.x.values.len(), s.len * s.x.per_sample());
    assert_eq!(s.y.values.len(), s.len);
    let finite = |v: &Values| match v {
        Values::F32(v) => v.iter().all(|x| x.is_finite()),
        Values::Bytes { table, .. } => table.iter().all(|x| x.is_finite()),
        Values::I32(_) => true,
    };
    assert!(
        finite(&s.x.values) && finite(&s.y.values),
        "a CSV value is not finite"
    );
    true
}

/// A text file, then its windows for a sequence length from the selector.
fn text(path: &Path, file: Vec<u8>, sel: u8) -> bool {
    let Some(t) = data_result(data::text_from_bytes(path.into(), file)) else {
        return false;
    };
    assert!(t.vocab.windows(2).all(|w| w[0] < w[1]), "vocab not sorted");
    assert!(t.ids.iter().all(|&i| (i as usize) < t.vocab.len()));
    let seq = sel as usize / 5;
    let Some(s) = data_result(data::text_windows(&t.path, &t.ids, seq)) else {
        return false;
    };
    // Window w is ids[w·seq..][..seq], its labels the same one position later.
    let window = |shift: usize| -> Vec<i32> {
        (0..s.len)
            .flat_map(|w| t.ids[w * seq + shift..(w + 1) * seq + shift].to_vec())
            .collect()
    };
    assert_eq!(s.x.values, Values::I32(window(0)));
    assert_eq!(s.y.values, Values::I32(window(1)));
    true
}

/// A safetensors checkpoint (never gunzipped), then a lookup of every tensor it holds.
fn checkpoint(path: &Path, bytes: &[u8]) -> bool {
    let ck = match Checkpoint::from_bytes(path, bytes) {
        Ok(ck) => ck,
        Err(e) => {
            named(&e.to_string());
            return false;
        }
    };
    for (name, t) in &ck.tensors {
        assert_eq!(t.data.len(), t.dims.iter().product::<usize>(), "{name}");
        // Refused at its own shape only for a value that is not finite, naming it.
        if let Err(e) = ck.get(name, &t.dims) {
            assert!(t.data.iter().any(|v| !v.is_finite()), "{name}: {e}");
            named(&e.to_string());
        }
        if let Err(e) = ck.get(name, &[t.data.len() + 1]) {
            named(&e.to_string());
        }
    }
    for name in ck.other.keys() {
        assert!(ck.get(name, &[1]).is_err());
    }
    true
}
