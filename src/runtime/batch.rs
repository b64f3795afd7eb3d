//! Epoch order and batches: a Fisher–Yates shuffle per epoch from the run's seed (or the identity
//! with `shuffle: false`), batches of `batch` samples with the last partial batch dropped (as the
//! reference scripts do, so every training step sees the same shapes), and gathering samples
//! into contiguous buffers that are reused from step to step.

use super::data::{Column, Values};
use super::rng::Rng;
use crate::exec::Feed;
use std::sync::Mutex;

/// A reusable batch buffer for one column.
#[derive(Clone, Debug)]
pub enum Buf {
    F32(Vec<f32>),
    I32(Vec<i32>),
}

impl Buf {
    /// An empty buffer of the column's dtype with room for `samples` samples.
    pub fn for_column(col: &Column, samples: usize) -> Buf {
        let cap = samples * col.per_sample();
        match col.values {
            Values::F32(_) | Values::Bytes { .. } => Buf::F32(Vec::with_capacity(cap)),
            Values::I32(_) => Buf::I32(Vec::with_capacity(cap)),
        }
    }
    pub fn feed(&self) -> Feed<'_> {
        match self {
            Buf::F32(v) => Feed::F32(v),
            Buf::I32(v) => Feed::I32(v),
        }
    }
}

/// Values from which a batch of bytes is converted on two threads.
const PARALLEL_VALUES: usize = 16 * 1024;

/// Copies samples `idx` of `col` into `out` (cleared first; no allocation once it has grown).
pub fn gather(col: &Column, idx: &[usize], out: &mut Buf) {
    let k = col.per_sample();
    fn go<T: Copy>(src: &[T], k: usize, idx: &[usize], out: &mut Vec<T>) {
        out.clear();
        for &i in idx {
            out.extend_from_slice(&src[i * k..(i + 1) * k]);
        }
    }
    match (&col.values, out) {
        (Values::F32(v), Buf::F32(o)) => go(v, k, idx, o),
        (Values::I32(v), Buf::I32(o)) => go(v, k, idx, o),
        (Values::Bytes { bytes, table }, Buf::F32(o)) => {
            // Stored bytes (images) through their normalization table: the one gather that
            // costs (a table look-up per value, 50k for an MNIST batch of 64), so it is split
            // over the worker threads, which wait for the step anyway.
            o.resize(idx.len() * k, 0.0);
            let convert = |rows: &[usize], out: &mut [f32]| {
                for (&i, dst) in rows.iter().zip(out.chunks_exact_mut(k)) {
                    convert_row(&bytes[i * k..(i + 1) * k], table, dst);
                }
            };
            let rows_per_task = idx
                .len()
                .div_ceil(2)
                .max(PARALLEL_VALUES.div_ceil(k.max(1)));
            if k == 0 || rows_per_task >= idx.len() {
                return convert(idx, o);
            }
            let parts: Vec<Mutex<(&[usize], &mut [f32])>> = idx
                .chunks(rows_per_task)
                .zip(o.chunks_mut(rows_per_task * k))
                .map(Mutex::new)
                .collect();
            crate::codegen::workers::run(parts.len(), &|t| {
                let mut part = parts[t].lock().unwrap_or_else(|e| e.into_inner());
                let (rows, out) = &mut *part;
                convert(rows, out);
            });
        }
        (Values::F32(_) | Values::Bytes { .. }, o) => {
            *o = Buf::F32(Vec::new());
            gather(col, idx, o)
        }
        (Values::I32(_), o) => {
            *o = Buf::I32(Vec::new());
            gather(col, idx, o)
        }
    }
}

/// `dst[i] = table[src[i]]`. Sixteen zero bytes at a time (an image's background) are one
/// fill of `table[0]`: MNIST's images are 81% background, and a batch's conversion took a
/// sixth less time on its rows (one thread, rows already in cache).
fn convert_row(src: &[u8], table: &[f32; 256], dst: &mut [f32]) {
    let mut d16 = dst.chunks_exact_mut(16);
    let mut s16 = src.chunks_exact(16);
    for (d, s) in (&mut d16).zip(&mut s16) {
        if u128::from_ne_bytes(s.try_into().expect("16 bytes")) == 0 {
            d.fill(table[0]);
        } else {
            for (d, &b) in d.iter_mut().zip(s) {
                *d = table[b as usize];
            }
        }
    }
    for (d, &b) in d16.into_remainder().iter_mut().zip(s16.remainder()) {
        *d = table[b as usize];
    }
}

/// Asks the caches for samples `idx` of `col` ahead of their [`gather`]. Issued for the next
/// batch once this one is gathered, the samples, scattered over the data set, arrive while
/// the step runs: gathering 128 random MNIST images on one thread took 35 instead of 81 µs
/// with 4 MB of other traffic in between (the gather of the autoencoder's step, two
/// threads, 60 → 43 µs with the zero runs of [`convert_row`]).
pub fn prefetch(col: &Column, idx: &[usize]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        let (base, row) = match &col.values {
            Values::F32(v) => (v.as_ptr() as *const i8, 4 * col.per_sample()),
            Values::I32(v) => (v.as_ptr() as *const i8, 4 * col.per_sample()),
            Values::Bytes { bytes, .. } => (bytes.as_ptr() as *const i8, col.per_sample()),
        };
        for &i in idx {
            // Every 64-byte line the sample touches, from the one holding its first byte.
            let first = base.wrapping_add(i * row);
            let skew = first as usize % 64;
            for line in (0..row + skew).step_by(64) {
                // SAFETY: a prefetch reads nothing and never faults, whatever the address.
                unsafe { _mm_prefetch::<_MM_HINT_T1>(first.wrapping_sub(skew).wrapping_add(line)) };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (col, idx);
}

/// The order of samples within each epoch and its cut into batches.
#[derive(Clone, Debug)]
pub struct Epochs {
    order: Vec<usize>,
    batch: usize,
    shuffle: bool,
    rng: Rng,
}

impl Epochs {
    /// `n` samples in batches of `batch` (clamped to `n`, so a tiny data set still gives one
    /// batch per epoch). The shuffle stream depends only on `seed`.
    pub fn new(n: usize, batch: usize, shuffle: bool, seed: u64) -> Epochs {
        Epochs {
            order: (0..n).collect(),
            batch: batch.clamp(1, n.max(1)),
            shuffle,
            rng: Rng::for_name(seed, "shuffle"),
        }
    }
    /// The batch size actually used.
    pub fn batch_size(&self) -> usize {
        self.batch
    }
    /// Full batches per epoch (the remainder is dropped).
    pub fn batches_per_epoch(&self) -> usize {
        self.order.len() / self.batch
    }
    /// Reshuffles for the next epoch (the first call gives the first epoch's order).
    pub fn next_epoch(&mut self) {
        if self.shuffle {
            self.rng.shuffle(&mut self.order);
        }
    }
    /// Skips `epochs` epochs: the next [`Epochs::next_epoch`] gives the order of epoch `epochs`
    /// (0-based), exactly as if the skipped ones had been trained (their shuffles are replayed).
    pub fn skip(&mut self, epochs: u64) {
        for _ in 0..epochs {
            self.next_epoch();
        }
    }
    /// Sample indices of batch `i` of the current epoch.
    pub fn batch(&self, i: usize) -> &[usize] {
        &self.order[i * self.batch..(i + 1) * self.batch]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_drop_last_and_cover_each_sample_once() {
        let mut e = Epochs::new(10, 3, true, 1);
        e.next_epoch();
        assert_eq!(e.batches_per_epoch(), 3);
        let mut seen: Vec<usize> = (0..3).flat_map(|i| e.batch(i).to_vec()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9);
        let first: Vec<usize> = e.batch(0).to_vec();
        e.next_epoch();
        let mut again = Epochs::new(10, 3, true, 1);
        again.next_epoch();
        assert_eq!(again.batch(0), &first[..]);
        assert_eq!(Epochs::new(2, 32, true, 0).batches_per_epoch(), 1);
        let mut skipped = Epochs::new(10, 3, true, 1);
        skipped.skip(1);
        skipped.next_epoch();
        assert_eq!(skipped.batch(2), e.batch(2));
    }

    #[test]
    fn no_shuffle_is_identity_and_gather_copies_rows() {
        let mut e = Epochs::new(4, 2, false, 9);
        e.next_epoch();
        assert_eq!(e.batch(1), &[2, 3]);
        let col = Column {
            values: Values::I32((0..8).collect()),
            shape: vec![2],
        };
        let mut b = Buf::for_column(&col, 2);
        gather(&col, &[3, 0], &mut b);
        match b {
            Buf::I32(v) => assert_eq!(v, vec![6, 7, 0, 1]),
            Buf::F32(_) => panic!("dtype"),
        }
    }

    /// Bytes go through their table, row by row in the batch's order, whether the batch is
    /// converted on one thread (3 rows) or split between two (64 rows of 784, uneven: 33),
    /// and whether sixteen of them are all 0 (a fill), some or none.
    #[test]
    fn gather_converts_bytes_through_their_table() {
        let k = 784;
        let n = 100;
        let bytes: Vec<u8> = (0..n * k)
            .map(|i| if i % 100 < 60 { 0 } else { (i * 7 % 251) as u8 })
            .collect();
        let table: Box<[f32; 256]> = Box::new(std::array::from_fn(|b| b as f32 / 255.0 - 0.5));
        let col = Column {
            values: Values::Bytes {
                bytes: bytes.clone(),
                table: table.clone(),
            },
            shape: vec![28, 28],
        };
        for idx in [vec![5, 0, 99], (0..64).rev().collect(), (0..33).collect()] {
            let mut b = Buf::for_column(&col, idx.len());
            prefetch(&col, &idx);
            gather(&col, &idx, &mut b);
            let want: Vec<f32> = idx
                .iter()
                .flat_map(|&i| bytes[i * k..(i + 1) * k].iter().map(|&v| table[v as usize]))
                .collect();
            match &b {
                Buf::F32(v) => assert!(v == &want, "{} rows", idx.len()),
                Buf::I32(_) => panic!("dtype"),
            }
            // Reused for a smaller batch: only its rows.
            gather(&col, &idx[..1], &mut b);
            match b {
                Buf::F32(v) => assert_eq!(v, want[..k]),
                Buf::I32(_) => panic!("dtype"),
            }
        }
    }
}
