//! Data loading: IDX (raw and gzipped), CSV, text and inline sources; splits; conforming to the
//! model's input types; and every error case, on small files written to a temporary folder.

mod common;

use flate2::write::GzEncoder;
use nnc::ir::{DataSpec, ScalarExpr, Source, Type};
use nnc::runtime::data::{
    load, load_eval, max_file_bytes, read_file, DataError, Dataset, Expect, Values,
};
use nnc::syntax::ast::{BinOp, Span};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A fresh temporary folder per test.
fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nnc-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn idx_bytes(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(payload);
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn spec(
    train: Source,
    test: Option<Source>,
    split: f64,
    normalize: Option<ScalarExpr>,
) -> DataSpec {
    DataSpec {
        name: "d".into(),
        train,
        train_span: Span::default(),
        test: test.map(|t| (t, Span::default())),
        split,
        normalize: normalize.map(|n| (n, Span::default())),
        span: Span::default(),
    }
}

/// The error of loading CSV file `path` of `dir` (features only, no test split).
fn csv_error(dir: &Path, path: &str, header: bool) -> DataError {
    let src = Source::Csv {
        path: path.into(),
        label_column: -1,
        header,
    };
    load(&spec(src, None, 1.0, None), dir, &Expect::default()).unwrap_err()
}

/// The error of loading text file `path` of `dir` in windows of `seq` characters.
fn text_error(dir: &Path, path: &str, seq: usize) -> DataError {
    let src = Source::Text {
        path: path.into(),
        seq,
    };
    load(&spec(src, None, 1.0, None), dir, &Expect::default()).unwrap_err()
}

fn idx_src(images: &str, labels: &str) -> Source {
    Source::Idx {
        images: images.into(),
        labels: labels.into(),
    }
}

/// x / 255
fn div255() -> ScalarExpr {
    ScalarExpr::Bin(
        BinOp::Div,
        Box::new(ScalarExpr::X),
        Box::new(ScalarExpr::Num(255.0)),
    )
}

/// Three 2×2 images with pixel values 0..12 and labels 7, 8, 9.
fn write_small_idx(dir: &Path, gzipped: bool) {
    let img = idx_bytes(
        0x803,
        &[3, 2, 2],
        &(0u8..12).map(|v| v * 20).collect::<Vec<_>>(),
    );
    let lab = idx_bytes(0x801, &[3], &[7, 8, 9]);
    let (img, lab) = if gzipped {
        (gz(&img), gz(&lab))
    } else {
        (img, lab)
    };
    std::fs::write(dir.join("img"), img).unwrap();
    std::fs::write(dir.join("lab"), lab).unwrap();
}

/// The f32 values of a column (byte columns through their table).
fn f32s(v: &Values) -> Vec<f32> {
    match v {
        Values::F32(x) => x.clone(),
        Values::Bytes { bytes, table } => bytes.iter().map(|&b| table[b as usize]).collect(),
        Values::I32(_) => panic!("expected f32"),
    }
}

fn i32s(v: &Values) -> &[i32] {
    match v {
        Values::I32(x) => x,
        _ => panic!("expected i32"),
    }
}

fn load_ok(s: &DataSpec, dir: &Path, e: Expect) -> Dataset {
    load(s, dir, &e).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn idx_raw_and_gzipped_round_trip_with_normalize() {
    for gzipped in [false, true] {
        let dir = tmp(&format!("idx{gzipped}"));
        write_small_idx(&dir, gzipped);
        let s = spec(idx_src("img", "lab"), None, 1.0, Some(div255()));
        let ds = load_ok(&s, &dir, Expect::default());
        assert_eq!(ds.train.len, 3);
        assert!(ds.test.is_none());
        assert_eq!(ds.train.x.shape, vec![2, 2]);
        let want: Vec<f32> = (0..12).map(|v| ((v * 20) as f64 / 255.0) as f32).collect();
        assert_eq!(f32s(&ds.train.x.values), &want[..]);
        assert_eq!(i32s(&ds.train.y.values), &[7, 8, 9]);
    }
}

#[test]
fn samples_reshape_to_the_model_input_and_labels_convert() {
    let dir = tmp("reshape");
    write_small_idx(&dir, false);
    let s = spec(idx_src("img", "lab"), None, 1.0, None);
    // 2×2 images into a [4] input; class ids one-hot into f32[10].
    let ds = load_ok(
        &s,
        &dir,
        Expect {
            x: Some(Type::f32(true, [4])),
            y: Some(Type::f32(true, [10])),
        },
    );
    assert_eq!(ds.train.x.shape, vec![4]);
    let y = f32s(&ds.train.y.values);
    assert_eq!(y.len(), 30);
    assert_eq!(y[7], 1.0);
    assert_eq!(y[10 + 8], 1.0);
    assert_eq!(y.iter().sum::<f32>(), 3.0);
    // 4 elements do not fit a [5] input.
    let e = load(
        &s,
        &dir,
        &Expect {
            x: Some(Type::f32(true, [5])),
            y: None,
        },
    )
    .unwrap_err();
    assert!(matches!(e, DataError::Shape { .. }), "{e}");
    assert!(e.to_string().contains("[5]"), "{e}");
}

#[test]
fn split_holds_out_the_end_when_there_is_no_test_source() {
    let x: Vec<Vec<f64>> = (0..10).map(|i| vec![i as f64]).collect();
    let y: Vec<Vec<f64>> = (0..10).map(|i| vec![(i % 2) as f64]).collect();
    let s = spec(Source::Inline { x, y }, None, 0.7, None);
    let ds = load_ok(
        &s,
        Path::new("."),
        Expect {
            x: None,
            y: Some(Type::i32(true, [])),
        },
    );
    assert_eq!(ds.train.len, 7);
    let t = ds.test.unwrap();
    assert_eq!(t.len, 3);
    assert_eq!(f32s(&t.x.values), &[7.0, 8.0, 9.0]);
    assert_eq!(i32s(&t.y.values), &[1, 0, 1]);
}

/// One inline sample and `split: 0.9`: the split holds it out, and the refusal says so and how
/// to keep it (it said only "the train split is empty").
#[test]
fn a_split_that_keeps_no_sample_says_so() {
    let s = spec(
        Source::Inline {
            x: vec![vec![0.0, 1.0]],
            y: vec![vec![1.0]],
        },
        None,
        0.9,
        None,
    );
    let e = load(&s, Path::new("."), &Expect::default()).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::SplitKeepsNone {
                samples: 1,
                held: 1,
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    for part in [
        "`split: 0.9` keeps none of its 1 samples",
        "remove `split` to train on every sample",
    ] {
        assert!(msg.contains(part), "no `{part}` in {msg}");
    }
}

#[test]
fn inline_errors_ragged_rows_and_non_integer_class_ids() {
    let s = spec(
        Source::Inline {
            x: vec![vec![0.0, 1.0], vec![1.0]],
            y: vec![vec![0.0], vec![1.0]],
        },
        None,
        1.0,
        None,
    );
    let e = load(&s, Path::new("."), &Expect::default()).unwrap_err();
    assert!(e.to_string().contains("row 2 has 1 values"), "{e}");
    let s = spec(
        Source::Inline {
            x: vec![vec![0.0]],
            y: vec![vec![0.5]],
        },
        None,
        1.0,
        None,
    );
    let e = load(
        &s,
        Path::new("."),
        &Expect {
            x: None,
            y: Some(Type::i32(true, [])),
        },
    )
    .unwrap_err();
    assert!(
        matches!(e, DataError::Value { .. }) && e.to_string().contains("0.5"),
        "{e}"
    );
}

#[test]
fn idx_truncated_payload_header_and_gzip_stream() {
    let dir = tmp("trunc");
    std::fs::write(dir.join("lab"), idx_bytes(0x801, &[3], &[1, 2, 3])).unwrap();
    std::fs::write(dir.join("img"), idx_bytes(0x803, &[3, 2, 2], &[0; 11])).unwrap();
    let e = load(
        &spec(idx_src("img", "lab"), None, 1.0, None),
        &dir,
        &Expect::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            DataError::Truncated {
                expected: 12,
                found: 11,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("img") && e.to_string().contains("truncated"),
        "{e}"
    );

    std::fs::write(dir.join("img"), &idx_bytes(0x803, &[3, 2, 2], &[])[..9]).unwrap();
    let e = load(
        &spec(idx_src("img", "lab"), None, 1.0, None),
        &dir,
        &Expect::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            DataError::Truncated {
                expected: 16,
                found: 9,
                ..
            }
        ),
        "{e}"
    );

    let full = gz(&idx_bytes(0x803, &[3, 2, 2], &[0; 12]));
    std::fs::write(dir.join("img"), &full[..full.len() / 2]).unwrap();
    let e = load(
        &spec(idx_src("img", "lab"), None, 1.0, None),
        &dir,
        &Expect::default(),
    )
    .unwrap_err();
    assert!(matches!(e, DataError::Gzip { .. }), "{e}");
}

/// A gzip bomb: a small file whose header declares two 2×2 images and which inflates to
/// megabytes of zeros after them. It is refused for its trailing bytes, and only the declared
/// payload plus one byte is decompressed: past that, a stream that would fail to inflate (a
/// second gzip member that is garbage) is never reached.
#[test]
fn idx_gzip_bomb_is_refused_without_inflating_the_rest() {
    let dir = tmp("bomb");
    std::fs::write(dir.join("lab"), idx_bytes(0x801, &[2], &[1, 2])).unwrap();
    let mut bomb = idx_bytes(0x803, &[2, 2, 2], &[0; 8]);
    bomb.resize(bomb.len() + (8 << 20), 0);
    let compressed = gz(&bomb);
    assert!(compressed.len() < 64 << 10, "{}", compressed.len());
    let mut with_garbage = compressed.clone();
    with_garbage.extend_from_slice(b"\x1f\x8b not a gzip member");
    for file in [compressed, with_garbage] {
        std::fs::write(dir.join("img.gz"), file).unwrap();
        let e = load(
            &spec(idx_src("img.gz", "lab"), None, 1.0, None),
            &dir,
            &Expect::default(),
        )
        .unwrap_err();
        assert!(matches!(e, DataError::Format { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("img.gz") && msg.contains("trailing bytes after the payload"),
            "{msg}"
        );
    }
}

/// Files read whole (CSV, text, PGM) hold at most [`max_file_bytes`] of the memory available, given
/// here as 1 MiB so that the limit is small. A gzip bomb is refused once one byte past the limit
/// is inflated (the garbage member after it is never reached); a plain file past it from its
/// size; a file at the limit reads as it is, gzipped or not.
#[test]
fn whole_files_past_the_memory_limit_are_refused() {
    let dir = tmp("whole");
    let available = Some(1 << 20);
    let limit = max_file_bytes(available);
    assert_eq!(limit, 64 << 10);
    let read = |name: &str| read_file(name, &dir, available);

    let mut bomb = gz(&vec![b'0'; 8 << 20]);
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    bomb.extend_from_slice(b"\x1f\x8b not a gzip member");
    std::fs::write(dir.join("bomb.csv.gz"), bomb).unwrap();
    // Whether `e` refuses a file at the limit, with its size where known before reading it.
    let refused = |e: &DataError, size: Option<u64>| match e {
        DataError::TooLarge {
            size: s, limit: l, ..
        } => *s == size && *l == limit,
        _ => false,
    };
    let e = read("bomb.csv.gz").unwrap_err();
    assert!(refused(&e, None), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("bomb.csv.gz: holds more than 64.0 KiB once inflated")
            && msg.contains("with 1.00 MiB of memory available")
            && msg.contains("use a smaller file"),
        "{msg}"
    );

    let at_limit: Vec<u8> = (0..limit as usize)
        .map(|i| b"0123456789,\n"[i % 12])
        .collect();
    let mut past = at_limit.clone();
    past.push(b'\n');
    for (name, bytes) in [("at.gz", gz(&at_limit)), ("at.txt", at_limit.clone())] {
        std::fs::write(dir.join(name), bytes).unwrap();
        assert_eq!(read(name).unwrap().1, at_limit, "{name}");
    }
    std::fs::write(dir.join("past.gz"), gz(&past)).unwrap();
    let e = read("past.gz").unwrap_err();
    assert!(refused(&e, None), "{e:?}");
    // Refused from its size: reading stops one byte past the limit, so only the file's
    // metadata can give its size.
    std::fs::write(dir.join("past.txt"), &past).unwrap();
    let e = read("past.txt").unwrap_err();
    assert!(refused(&e, Some(limit + 1)), "{e:?}");
    std::fs::write(dir.join("big.txt"), at_limit.repeat(3)).unwrap();
    let msg = read("big.txt").unwrap_err().to_string();
    assert!(
        msg.contains("big.txt: holds 192 KiB, more than the 64.0 KiB a CSV, text or PGM file may"),
        "{msg}"
    );
}

#[test]
fn idx_wrong_magic_and_count_mismatch() {
    let dir = tmp("magic");
    std::fs::write(dir.join("img"), idx_bytes(0x801, &[3], &[0; 3])).unwrap();
    std::fs::write(dir.join("lab"), idx_bytes(0x801, &[3], &[1, 2, 3])).unwrap();
    let e = load(
        &spec(idx_src("img", "lab"), None, 1.0, None),
        &dir,
        &Expect::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            DataError::Magic {
                expected: 0x803,
                found: 0x801,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("0x00000803"), "{e}");

    std::fs::write(dir.join("img"), idx_bytes(0x803, &[2, 1, 1], &[0; 2])).unwrap();
    let e = load(
        &spec(idx_src("img", "lab"), None, 1.0, None),
        &dir,
        &Expect::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            DataError::CountMismatch {
                images: 2,
                labels: 3,
                ..
            }
        ),
        "{e}"
    );
}

/// What `nnc eval` measures: a `test` source, loaded alone (the train files need not be there),
/// else what `split` holds out of train, else train itself; an empty test source is an error
/// rather than a silent switch to the train files.
#[test]
fn eval_loads_a_test_source_alone() {
    let dir = tmp("eval");
    write_small_idx(&dir, false);
    let s = spec(
        idx_src("gone-img", "gone-lab"),
        Some(idx_src("img", "lab")),
        1.0,
        Some(div255()),
    );
    let (t, name) = load_eval(&s, &dir, &Expect::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((t.len, name), (3, "test"));
    assert_eq!(f32s(&t.x.values)[1], (20.0 / 255.0) as f32);
    assert_eq!(i32s(&t.y.values), &[7, 8, 9]);
    let e = load(&s, &dir, &Expect::default()).unwrap_err();
    assert!(matches!(e, DataError::NotFound { .. }), "{e}");

    let held_out = spec(idx_src("img", "lab"), None, 0.5, None);
    let (t, name) = load_eval(&held_out, &dir, &Expect::default()).unwrap();
    assert_eq!((t.len, name), (2, "test"));
    assert_eq!(i32s(&t.y.values), &[8, 9]);
    let whole = spec(idx_src("img", "lab"), None, 1.0, None);
    let (t, name) = load_eval(&whole, &dir, &Expect::default()).unwrap();
    assert_eq!((t.len, name), (3, "train"));

    std::fs::write(dir.join("img0"), idx_bytes(0x803, &[0, 2, 2], &[])).unwrap();
    std::fs::write(dir.join("lab0"), idx_bytes(0x801, &[0], &[])).unwrap();
    let empty = spec(
        idx_src("img", "lab"),
        Some(idx_src("img0", "lab0")),
        1.0,
        None,
    );
    let e = load_eval(&empty, &dir, &Expect::default()).unwrap_err();
    assert!(matches!(e, DataError::Empty { split: "test", .. }), "{e}");
}

#[test]
fn missing_file_names_the_path_and_the_data_dir() {
    let dir = tmp("missing");
    let e = load(
        &spec(idx_src("nope.gz", "lab"), None, 1.0, None),
        &dir,
        &Expect::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::NotFound { .. }), "{msg}");
    assert!(
        msg.contains("nope.gz") && msg.contains(&dir.display().to_string()),
        "{msg}"
    );
}

#[test]
fn csv_with_header_and_label_column_from_the_end() {
    let dir = tmp("csv");
    std::fs::write(
        dir.join("a.csv"),
        "f1,f2,class\n0.5, 1.5, 2\n-1,2e1,0\r\n\n3,4,1\n",
    )
    .unwrap();
    let s = spec(
        Source::Csv {
            path: "a.csv".into(),
            label_column: -1,
            header: true,
        },
        None,
        1.0,
        None,
    );
    let ds = load_ok(
        &s,
        &dir,
        Expect {
            x: None,
            y: Some(Type::i32(true, [])),
        },
    );
    assert_eq!(ds.train.len, 3);
    assert_eq!(f32s(&ds.train.x.values), &[0.5, 1.5, -1.0, 20.0, 3.0, 4.0]);
    assert_eq!(i32s(&ds.train.y.values), &[2, 0, 1]);
    // Label column 0: the rest are features.
    let s = spec(
        Source::Csv {
            path: "a.csv".into(),
            label_column: 0,
            header: true,
        },
        None,
        1.0,
        None,
    );
    let ds = load_ok(&s, &dir, Expect::default());
    assert_eq!(f32s(&ds.train.y.values), &[0.5, -1.0, 3.0]);
    assert_eq!(f32s(&ds.train.x.values), &[1.5, 2.0, 20.0, 0.0, 4.0, 1.0]);
}

#[test]
fn csv_ragged_rows_and_non_numbers_name_line_and_column() {
    let dir = tmp("csvbad");
    std::fs::write(dir.join("r.csv"), "1,2,3\n4,5\n").unwrap();
    let e = csv_error(&dir, "r.csv", false);
    assert!(matches!(e, DataError::Csv { line: 2, .. }), "{e}");
    assert!(e.to_string().contains("r.csv:2:"), "{e}");
    std::fs::write(dir.join("n.csv"), "h1,h2\n1,2\n3,x\n").unwrap();
    let e = csv_error(&dir, "n.csv", true);
    assert!(
        matches!(
            e,
            DataError::Csv {
                line: 3,
                column: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("`x`"), "{e}");
    // Without `header: true` the header itself is not a number.
    let e = csv_error(&dir, "n.csv", false);
    assert!(
        matches!(
            e,
            DataError::Csv {
                line: 1,
                column: 1,
                ..
            }
        ),
        "{e}"
    );
}

/// A header read as numbers (no `header: true`) is named as one when none of its fields is a
/// number and the rest of the file is numbers; a first line that is wrong in another way is not.
#[test]
fn csv_header_without_header_true_says_to_add_it() {
    let dir = tmp("csvhead");
    std::fs::write(dir.join("h.csv"), "a,b,label\n1,2,0\n3,4,1\n").unwrap();
    let e = csv_error(&dir, "h.csv", false);
    assert!(matches!(e, DataError::Csv { line: 1, .. }), "{e}");
    assert!(e.to_string().contains("add `header: true`"), "{e}");
    std::fs::write(dir.join("x.csv"), "1,x,0\n3,4,y\n").unwrap();
    let e = csv_error(&dir, "x.csv", false);
    assert!(!e.to_string().contains("header"), "{e}");
    // A first data row with one bad value, the rest of the file good: a typo, not a header.
    std::fs::write(dir.join("t.csv"), "1,2,x\n3,4,1\n5,6,0\n").unwrap();
    let e = csv_error(&dir, "t.csv", false);
    assert!(!e.to_string().contains("header"), "{e}");
}

/// A CSV file saved by a spreadsheet starts with a UTF-8 byte order mark: it loads as without
/// one, where its first field was refused as `\u{feff}1`, shown as `1`, "not a number".
#[test]
fn csv_with_a_byte_order_mark_loads() {
    let dir = tmp("csvbom");
    std::fs::write(dir.join("b.csv"), "\u{feff}1,2,0\n3,4,1\n").unwrap();
    let src = Source::Csv {
        path: "b.csv".into(),
        label_column: -1,
        header: false,
    };
    let ds = load_ok(&spec(src, None, 1.0, None), &dir, Expect::default());
    assert_eq!(f32s(&ds.train.x.values), &[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(i32s(&ds.train.y.values), &[0, 1]);
}

/// Lines ended by a bare carriage return (classic Mac OS) load as lines: the whole file was one
/// line, refused as "expected a number, found `23`" (`2\r3`, the return not shown). A NUL in a
/// field is shown escaped rather than as nothing.
#[test]
fn csv_with_bare_carriage_returns_loads() {
    let dir = tmp("csvcr");
    std::fs::write(dir.join("m.csv"), "1,2,0\r3,4,1\r").unwrap();
    std::fs::write(dir.join("w.csv"), "1,2,0\r\n3,4,1\r\n").unwrap();
    for name in ["m.csv", "w.csv"] {
        let src = Source::Csv {
            path: name.into(),
            label_column: -1,
            header: false,
        };
        let ds = load_ok(&spec(src, None, 1.0, None), &dir, Expect::default());
        assert_eq!(f32s(&ds.train.x.values), &[1.0, 2.0, 3.0, 4.0], "{name}");
        assert_eq!(i32s(&ds.train.y.values), &[0, 1], "{name}");
    }
    std::fs::write(dir.join("z.csv"), "1,2,0\n\0\0,4,1\n").unwrap();
    let e = csv_error(&dir, "z.csv", false);
    assert!(e.to_string().contains("found `\\0\\0`"), "{e}");
}

/// A file whose columns are separated by semicolons, tabs or spaces (a European spreadsheet's
/// export, `numpy.savetxt`'s default) is refused saying so: it said only "expected a number,
/// found `1;2;0`". A field that is simply not a number gets no such hint.
#[test]
fn csv_with_other_separators_says_so() {
    let dir = tmp("csvsep");
    for (name, text, sep) in [
        ("semi.csv", "1;2;0\n3;4;1\n", "semicolons"),
        ("tab.csv", "1\t2\t0\n3\t4\t1\n", "tabs"),
        ("space.csv", "1.5 2 0\n3 4 1\n", "spaces"),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
        let e = csv_error(&dir, name, false).to_string();
        assert!(
            e.contains(&format!("the columns look separated by {sep}"))
                && e.contains("separated by commas"),
            "{name}: {e}"
        );
    }
    std::fs::write(dir.join("word.csv"), "1,2,0\n3,a b,1\n").unwrap();
    let e = csv_error(&dir, "word.csv", false).to_string();
    assert!(!e.contains("separated"), "{e}");
}

/// Integer labels are read exactly, not through f32 (where 16,777,217 is 16,777,216); a label
/// column holding a fraction is f32, and f32 for a model that regresses.
#[test]
fn csv_integer_labels_are_exact() {
    let dir = tmp("csvlabels");
    let csv = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).unwrap();
        Source::Csv {
            path: name.into(),
            label_column: 0,
            header: false,
        }
    };
    let ids = csv("ids.csv", "16777217,1\n-2147483648,2\n2147483647,3\n");
    let ds = load_ok(&spec(ids.clone(), None, 1.0, None), &dir, Expect::default());
    assert_eq!(i32s(&ds.train.y.values), &[16_777_217, i32::MIN, i32::MAX]);
    let as_targets = Expect {
        x: None,
        y: Some(Type::f32(true, [])),
    };
    let ds = load_ok(&spec(ids, None, 1.0, None), &dir, as_targets);
    assert_eq!(
        f32s(&ds.train.y.values),
        &[16_777_216.0, -2_147_483_648.0, 2_147_483_648.0]
    );
    let halves = csv("halves.csv", "0.5,1\n2,2\n");
    let ds = load_ok(&spec(halves, None, 1.0, None), &dir, Expect::default());
    assert_eq!(f32s(&ds.train.y.values), &[0.5, 2.0]);
    let beyond = csv("beyond.csv", "2147483648,1\n0,2\n");
    let ds = load_ok(&spec(beyond, None, 1.0, None), &dir, Expect::default());
    assert_eq!(f32s(&ds.train.y.values), &[2_147_483_648.0, 0.0]);
}

/// Found by the `readers` fuzz target: 6e148 is a finite f64 but loaded as f32 infinity.
#[test]
fn csv_numbers_beyond_f32_name_line_and_column() {
    let dir = tmp("csvbig");
    std::fs::write(dir.join("b.csv"), "1,2\n3,6e148\n").unwrap();
    let e = csv_error(&dir, "b.csv", false);
    assert!(
        matches!(
            e,
            DataError::Csv {
                line: 2,
                column: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("`6e148` is outside the range of f32"),
        "{e}"
    );
}

#[test]
fn text_vocabulary_windows_and_split() {
    let dir = tmp("text");
    // 21 characters; vocabulary [' ', 'a', 'b', 'c'].
    std::fs::write(dir.join("t.txt"), "abc abc abc abc abc a").unwrap();
    let s = spec(
        Source::Text {
            path: "t.txt".into(),
            seq: 4,
        },
        None,
        1.0,
        None,
    );
    let ds = load_ok(&s, &dir, Expect::default());
    assert_eq!(ds.vocab.as_deref(), Some(&[' ', 'a', 'b', 'c'][..]));
    assert_eq!(ds.train.len, 5, "(21 − 1) / 4 windows");
    let x = i32s(&ds.train.x.values);
    let y = i32s(&ds.train.y.values);
    assert_eq!(&x[..8], &[1, 2, 3, 0, 1, 2, 3, 0]);
    assert_eq!(&y[..4], &[2, 3, 0, 1]);
    for w in 0..5 {
        assert_eq!(
            &x[w * 4 + 1..w * 4 + 4],
            &y[w * 4..w * 4 + 3],
            "labels are the inputs one later"
        );
    }
    // split 0.5: the first 10 characters train (2 windows), the last 11 test (2 windows).
    let s = spec(
        Source::Text {
            path: "t.txt".into(),
            seq: 4,
        },
        None,
        0.5,
        None,
    );
    let ds = load_ok(&s, &dir, Expect::default());
    assert_eq!(ds.train.len, 2);
    let t = ds.test.unwrap();
    assert_eq!(t.len, 2);
    // Character 10 is 'c': the test windows start there.
    assert_eq!(i32s(&t.x.values), &[3, 0, 1, 2, 3, 0, 1, 2]);
}

#[test]
fn empty_and_too_short_text() {
    let dir = tmp("empty");
    std::fs::write(dir.join("e.txt"), "").unwrap();
    let e = text_error(&dir, "e.txt", 4);
    assert!(
        matches!(e, DataError::EmptyText { .. }) && e.to_string().contains("e.txt"),
        "{e}"
    );
    std::fs::write(dir.join("s.txt"), "abcd").unwrap();
    let e = text_error(&dir, "s.txt", 4);
    assert!(
        matches!(
            e,
            DataError::TextTooShort {
                chars: 4,
                seq: 4,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn real_mnist_headers_when_present() {
    let Some(dir) = common::shared_data("mnist") else {
        return;
    };
    let dir = dir.as_path();
    let s = spec(
        idx_src("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        Some(idx_src(
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        )),
        1.0,
        Some(div255()),
    );
    let ds = load_ok(
        &s,
        dir,
        Expect {
            x: Some(Type::f32(true, [784])),
            y: Some(Type::i32(true, [])),
        },
    );
    assert_eq!(ds.train.len, 60000);
    assert_eq!(ds.test.as_ref().unwrap().len, 10000);
    let y = i32s(&ds.train.y.values);
    assert!(y.iter().all(|&c| (0..10).contains(&c)));
    for c in 0..10 {
        assert!(y.iter().filter(|&&v| v == c).count() > 5000, "class {c}");
    }
    let x = f32s(&ds.train.x.values);
    assert_eq!(x.len(), 60000 * 784);
    assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
}

/// A `.nn` file named without a folder (`nnc train net.nn`) has the empty path as its data dir;
/// the message names it `.` (it printed "(data dir )").
#[test]
fn missing_file_in_the_current_folder_names_it_dot() {
    let e = load(
        &spec(idx_src("nnc-no-such-file.gz", "lab"), None, 1.0, None),
        Path::new(""),
        &Expect::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::NotFound { .. }), "{msg}");
    assert!(msg.ends_with("(data dir .)"), "{msg}");
}
