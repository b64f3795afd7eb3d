//! Bad data and checkpoint files through the CLI: each is a user error (exit 1) that names the
//! file and says what is wrong, rendered under the data source of the `.nn` file; never a panic
//! or a partial result.

use super::common::*;
use nnc::runtime::checkpoint::{save, Saved};
use std::io::Write;

/// An IDX file: magic (0x0000 08 ndim), big-endian dims, payload.
fn idx(ndim: u8, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, ndim];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(payload);
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

const IMAGES_NN: &str = r#"
model M(image: [1, 2, 2]) -> [3] {
    return image |> flatten |> dense(3)
}
data d {
    train: idx("images.idx", "labels.idx")
    normalize: x / 255
}
train M on d {
    loss: cross_entropy(output, label)
    optimizer: sgd(lr: 0.1)
    batch: 2
    steps: 2
}
"#;

const CSV_NN: &str = r#"
model M(x: [2]) -> [1] {
    return x |> dense(1)
}
data d {
    train: csv("rows.csv", label: -1)
}
train M on d {
    loss: mse(output, label)
    optimizer: sgd(lr: 0.1)
    batch: 2
    steps: 2
}
"#;

const TEXT_NN: &str = r#"
model M(ids: i32[8]) -> [8, 4] {
    return ids |> embedding(4, 8) |> rnn(16) |> dense(4)
}
data d {
    train: text("corpus.txt", seq: 8)
}
train M on d {
    loss: cross_entropy(output, label)
    optimizer: adam(lr: 0.01)
    batch: 1
    steps: 1
}
"#;

/// Trains `nn` with `files` beside it; expects exit 1 and every part in stderr, which it returns.
fn refused(test: &str, nn: &str, files: &[(&str, Vec<u8>)], parts: &[&str]) -> String {
    let s = Scratch::new(test);
    let file = s.write("m.nn", nn);
    for (name, bytes) in files {
        s.write(name, bytes);
    }
    let out = nnc()
        .arg("train")
        .arg(&file)
        .arg("--quiet")
        .output()
        .unwrap();
    assert_code(&out, 1);
    let err = stderr(&out);
    for p in parts {
        assert!(err.contains(p), "{test}: no `{p}` in\n{err}");
    }
    err
}

/// Where data paths are looked for is said only when a file is missing: a file that was found
/// but is wrong inside is not fixed by looking elsewhere.
fn no_data_dir_help(err: &str) {
    assert!(!err.contains("--data-dir"), "{err}");
}

#[test]
fn bad_idx_files_are_named_with_what_is_wrong() {
    let labels = idx(1, &[4], &[0, 1, 2, 0]);
    let images = idx(3, &[4, 2, 2], &[7; 16]);
    refused(
        "idx-truncated",
        IMAGES_NN,
        &[
            ("images.idx", images[..20].to_vec()),
            ("labels.idx", labels.clone()),
        ],
        &[
            "images.idx",
            "truncated",
            "while loading the training split",
        ],
    );
    let mut wrong_magic = images.clone();
    wrong_magic[2] = 0x0d;
    refused(
        "idx-magic",
        IMAGES_NN,
        &[("images.idx", wrong_magic), ("labels.idx", labels.clone())],
        &["images.idx", "wrong magic number 0x00000d03"],
    );
    let err = refused(
        "idx-count",
        IMAGES_NN,
        &[
            ("images.idx", images.clone()),
            ("labels.idx", idx(1, &[3], &[0, 1, 2])),
        ],
        &["4 images", "3 labels"],
    );
    no_data_dir_help(&err);
    let mut bad_gz = gz(&images);
    let n = bad_gz.len();
    bad_gz.truncate(n / 2);
    let err = refused(
        "idx-gzip",
        &IMAGES_NN.replace("images.idx", "images.idx.gz"),
        &[("images.idx.gz", bad_gz), ("labels.idx", labels.clone())],
        &["images.idx.gz", "corrupt gzip stream"],
    );
    no_data_dir_help(&err);
    refused(
        "idx-missing",
        IMAGES_NN,
        &[("labels.idx", labels)],
        &["images.idx", "--data-dir"],
    );
}

#[test]
fn bad_csv_and_text_files_say_where() {
    refused(
        "csv-ragged",
        CSV_NN,
        &[("rows.csv", b"1,2,3\n4,5\n".to_vec())],
        &["rows.csv:2", "2 columns, but line 1 has 3"],
    );
    let err = refused(
        "csv-number",
        CSV_NN,
        &[("rows.csv", b"1,2,3\n4,five,6\n".to_vec())],
        &["rows.csv:2", "five"],
    );
    no_data_dir_help(&err);
    refused(
        "text-empty",
        TEXT_NN,
        &[("corpus.txt", Vec::new())],
        &["corpus.txt", "empty"],
    );
    // A `normalize` that is NaN at a value the data holds (4 here), not only a loss that is.
    let nn = CSV_NN.replace("label: -1)", "label: -1)\n    normalize: (x - 4) / (x - 4)");
    refused(
        "csv-normalize-nan",
        &nn,
        &[("rows.csv", b"1,2,3\n4,5,6\n".to_vec())],
        &[
            "`normalize` turns the input value 4 into NaN",
            "while normalizing `d` for run `M`",
        ],
    );
}

#[test]
fn bad_checkpoints_name_the_tensor_and_what_was_expected() {
    let s = Scratch::new("bad-checkpoints");
    let xor = root().join("examples/xor.nn");
    let w = vec![0.5f32; 8];
    let cases: [(&str, Vec<Saved<'_>>, &[&str]); 3] = [
        ("none", vec![], &["none.safetensors", "dense1.weight"]),
        (
            "missing",
            vec![Saved {
                name: "dense1.weight".into(),
                dims: &[2, 4],
                data: &w,
            }],
            &["dense1.bias"],
        ),
        (
            "shape",
            vec![Saved {
                name: "dense1.weight".into(),
                dims: &[4, 2],
                data: &w,
            }],
            &["dense1.weight", "[4, 2]", "[2, 4]"],
        ),
    ];
    for (name, tensors, parts) in cases {
        let ck = s.path(&format!("{name}.safetensors"));
        save(&ck, &tensors, None).unwrap();
        let out = nnc()
            .arg("eval")
            .arg(&xor)
            .arg("--checkpoint")
            .arg(&ck)
            .output()
            .unwrap();
        assert_code(&out, 1);
        for p in parts {
            assert!(
                stderr(&out).contains(p),
                "{name}: no `{p}` in\n{}",
                stderr(&out)
            );
        }
    }
    // A truncated file (as a crash mid-write would leave, were writes not atomic).
    let good = s.path("good.safetensors");
    save(
        &good,
        &[Saved {
            name: "dense1.weight".into(),
            dims: &[2, 4],
            data: &w,
        }],
        None,
    )
    .unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = s.write("cut.safetensors", &bytes[..bytes.len() - 5]);
    let out = nnc()
        .arg("train")
        .arg(&xor)
        .args(["--quiet", "--steps", "1", "--init"])
        .arg(&cut)
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(stderr(&out).contains("cut.safetensors"), "{}", stderr(&out));
}

/// `nnc predict` reads its input with the readers of `train`'s data, so that what is wrong is
/// named as precisely: a wrong magic number, a label file given for images, a CSV that holds no
/// numbers. A CSV row one value longer than the model's input most likely still holds its label.
#[test]
fn bad_predict_inputs_say_what_is_wrong() {
    let s = Scratch::new("bad-predict-inputs");
    let nn = s.write("m.nn", IMAGES_NN);
    let images = idx(3, &[4, 2, 2], &[7; 16]);
    let labels = idx(1, &[4], &[0, 1, 2, 0]);
    s.write("images.idx", &images);
    s.write("labels.idx", &labels);
    let ck = s.path("m.safetensors");
    train_to(&nn, &ck);
    let predict = |name: &str, bytes: &[u8]| {
        let input = s.write(name, bytes);
        nnc()
            .arg("predict")
            .arg(&nn)
            .arg("--checkpoint")
            .arg(&ck)
            .arg("--input")
            .arg(&input)
            .output()
            .unwrap()
    };
    let out = nnc()
        .arg("predict")
        .arg(&nn)
        .arg("--checkpoint")
        .arg(&ck)
        .args(["--input", "missing.csv"])
        .current_dir(s.dir())
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("missing.csv: no such file"),
        "{}",
        stderr(&out)
    );
    let out = predict("good.idx.gz", &gz(&images));
    assert_code(&out, 0);
    assert!(stdout(&out).contains("sample 3: "), "{}", stdout(&out));
    let good = s.path("good.idx.gz");
    let out = run!(
        "predict",
        &nn,
        "--checkpoint",
        &ck,
        "--input",
        &good,
        "--index",
        "4"
    );
    assert_has(
        &user_error(&out),
        &["index 4 is out of range: it holds 4 samples (`--index` counts from 0)"],
    );

    let mut wrong_magic = images.clone();
    wrong_magic[2] = 0x12;
    let cases: [(&str, Vec<u8>, &[&str]); 5] = [
        (
            "magic.idx",
            wrong_magic,
            &[
                "magic.idx",
                "wrong magic number 0x00001203, expected 0x00000803",
            ],
        ),
        (
            "labels.idx.gz",
            gz(&labels),
            &[
                "labels.idx.gz",
                "wrong magic number 0x00000801 (IDX u8, 1 dim), expected 0x00000803",
            ],
        ),
        (
            "words.csv",
            b"x,y,z,w\n".to_vec(),
            &["words.csv:1:1", "expected a number, found `x`"],
        ),
        ("empty.csv", Vec::new(), &["empty.csv", "no data rows"]),
        (
            "labelled.csv",
            b"a,b,c,d,class\n1,2,3,4,0\n".to_vec(),
            &["5 values", "expects 4", "drop that column"],
        ),
    ];
    for (name, bytes, parts) in cases {
        let out = predict(name, &bytes);
        assert_code(&out, 1);
        for p in parts {
            assert!(
                stderr(&out).contains(p),
                "{name}: no `{p}` in\n{}",
                stderr(&out)
            );
        }
    }
}

/// `src` with element `k` of tensor `name` replaced by `value`, written to `dst` (step and
/// metadata kept, so that it still resumes).
fn with_value(src: &std::path::Path, dst: &std::path::Path, name: &str, k: usize, value: f32) {
    let mut ck = nnc::runtime::checkpoint::Checkpoint::load(src).unwrap();
    ck.tensors.get_mut(name).unwrap().data[k] = value;
    ck.save_to(dst).unwrap();
}

#[test]
fn non_finite_parameters_and_optimizer_state_are_refused_wherever_they_are_read() {
    let s = Scratch::new("bad-checkpoints-nan");
    let nn = s.write(
        "m.nn",
        r#"
model M(x: [2]) -> [1] { return x |> dense(4) |> tanh |> dense(1) }
data d { train: inline(x: [[0, 0], [0, 1], [1, 0], [1, 1]], y: [[0], [1], [1], [0]]) }
train R: M on d { loss: mse(output, label) optimizer: adam(lr: 0.01) batch: 4 steps: 3 }
"#,
    );
    let good = s.path("good.safetensors");
    train_to(&nn, &good);
    let nan = s.path("nan.safetensors");
    with_value(&good, &nan, "dense1.bias", 2, f32::NAN);
    let inf = s.path("inf.safetensors");
    with_value(&good, &inf, "__optim.dense1.weight.1", 7, f32::INFINITY);
    let written = s.path("out.safetensors");
    let run = |args: &[&std::ffi::OsStr]| {
        nnc()
            .args(args)
            .arg("--checkpoint")
            .arg(&nan)
            .output()
            .unwrap()
    };
    let nn = nn.as_os_str();
    let train = |extra: &[&std::ffi::OsStr]| {
        nnc()
            .arg("train")
            .arg(nn)
            .args(["--quiet", "--steps", "6"])
            .args(extra)
            .arg("--checkpoint")
            .arg(&written)
            .output()
            .unwrap()
    };
    for (what, out, parts) in [
        (
            "eval",
            run(&["eval".as_ref(), nn]),
            &["nan.safetensors", "`dense1.bias` holds NaN at index [2]"][..],
        ),
        (
            "--init",
            train(&["--init".as_ref(), nan.as_os_str()]),
            &["nan.safetensors", "`dense1.bias`", "NaN at index [2]"],
        ),
        (
            "--resume",
            train(&["--resume".as_ref(), nan.as_os_str()]),
            &["nan.safetensors", "`dense1.bias` holds NaN at index [2]"],
        ),
        // Adam's second moment of dense1.weight ([2, 4]): flat index 7 is [1, 3].
        (
            "--resume, optimizer state",
            train(&["--resume".as_ref(), inf.as_os_str()]),
            &["`__optim.dense1.weight.1` holds inf at index [1, 3]"],
        ),
    ] {
        assert_code(&out, 1);
        for p in parts {
            assert!(
                stderr(&out).contains(p),
                "{what}: no `{p}` in\n{}",
                stderr(&out)
            );
        }
        assert!(!written.exists(), "{what}: trained and saved");
    }
}

/// `src` with every element of the tensors `names` set to `value`, written to `dst`.
fn filled(src: &std::path::Path, dst: &std::path::Path, names: &[&str], value: f32) {
    let mut ck = nnc::runtime::checkpoint::Checkpoint::load(src).unwrap();
    for name in names {
        ck.tensors.get_mut(*name).unwrap().data.fill(value);
    }
    ck.save_to(dst).unwrap();
}

/// Finite parameters whose outputs overflow: `predict` and `sample` say so, naming the sample
/// and the class, rather than rank a softmax of infinities (an infinite logit came out at 0%
/// behind two classes at 50%) or draw from NaN weights (always the last character).
#[test]
fn outputs_that_are_not_finite_are_not_ranked_or_drawn() {
    let s = Scratch::new("bad-checkpoints-overflow");
    let nn = s.write(
        "c.nn",
        r#"
model M(x: [2]) -> [3] { return x |> dense(3) }
data d { train: inline(x: [[1, 1], [1, 2], [2, 1]], y: [[0], [1], [2]]) }
train M on d { loss: cross_entropy(output, label) optimizer: sgd(0.1) batch: 3 steps: 2 }
"#,
    );
    let good = s.path("good.safetensors");
    train_to(&nn, &good);
    let big = s.path("big.safetensors");
    filled(&good, &big, &["dense1.weight"], 3e38);
    let input = s.write("in.csv", "0.5,0.5\n1,1\n");
    let out = nnc()
        .arg("predict")
        .arg(&nn)
        .arg("--checkpoint")
        .arg(&big)
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    assert_has(
        &user_error(&out),
        &["output for sample 1 is inf for class 0", "not finite"],
    );

    let nn = s.write(
        "t.nn",
        r#"
model C(t: i32[4]) -> [4, 3] { return t |> embedding(3, 4) |> dense(3) }
data text { train: text("t.txt", seq: 4) }
train C on text { loss: cross_entropy(output, label) optimizer: sgd(0.1) batch: 2 steps: 2 }
"#,
    );
    s.write("t.txt", "abcabcabcabcabcabcabcabcabcabc");
    let good = s.path("text.safetensors");
    train_to(&nn, &good);
    filled(&good, &big, &["embedding1.weight", "dense1.weight"], 3e38);
    let out = nnc()
        .arg("sample")
        .arg(&nn)
        .arg("--checkpoint")
        .arg(&big)
        .args(["--prompt", "ab", "--length", "3"])
        .output()
        .unwrap();
    assert_has(
        &user_error(&out),
        &[
            "output for character 2 is inf for character id 0",
            "not finite",
        ],
    );
}

/// A folder given as the checkpoint to read (`eval`, `predict`, `sample`, `--resume`) was
/// "cannot read checkpoint d: Is a directory (os error 21)"; it names the checkpoints in it.
#[test]
fn a_folder_given_as_a_checkpoint_to_read_names_the_files_in_it() {
    let s = Scratch::new("checkpoint-folder");
    let nn = s.write(
        "m.nn",
        "model M(x: [2]) -> [1] { return x |> dense(1) }\n\
         data d { train: inline(x: [[0, 0], [1, 1]], y: [[0], [1]]) }\n\
         train M on d { loss: mse(output, label) optimizer: sgd(lr: 0.1) steps: 1 }\n",
    );
    let dir = s.path("runs");
    std::fs::create_dir(&dir).unwrap();
    let input = s.write("in.csv", "0,1\n");
    let err = user_error(&run!("eval", &nn, "--checkpoint", &dir));
    assert_has(
        &err,
        &["runs is a folder, not a file: give the path of a checkpoint file"],
    );
    let ck = dir.join("m.st");
    succeeded(&run!("train", &nn, "--quiet", "--checkpoint", &ck));
    for out in [
        run!("eval", &nn, "--checkpoint", &dir),
        run!("predict", &nn, "--checkpoint", &dir, "--input", &input),
        run!("train", &nn, "--resume", &dir),
    ] {
        assert_has(
            &user_error(&out),
            &[
                "runs is a folder, not a file: give the checkpoint file in it",
                "m.st",
            ],
        );
    }
}

/// Images of as many pixels as the model's input but of another height and width (3×2 for a
/// `[1, 2, 3]` input) were re-cut into 2×3 images; `train` and `predict` refuse them. Images
/// of the right size load with or without the axis of 1, and a flat input takes any layout.
#[test]
fn images_of_another_layout_are_refused_not_recut() {
    let nn = IMAGES_NN.replace("[1, 2, 2]", "[1, 2, 3]");
    let labels = idx(1, &[2], &[0, 1]);
    let pixels: Vec<u8> = (0..12).map(|i| i * 10).collect();
    let tall = idx(3, &[2, 3, 2], &pixels);
    refused(
        "idx-layout",
        &nn,
        &[("images.idx", tall.clone()), ("labels.idx", labels.clone())],
        &[
            "inputs have [3, 2] per sample, but the model expects [1, 2, 3]: the same number of values, but in another layout",
        ],
    );
    let s = Scratch::new("idx-layout-ok");
    s.write("images.idx", idx(3, &[2, 2, 3], &pixels));
    s.write("labels.idx", &labels);
    s.write("tall.idx", &tall);
    let file = s.write("m.nn", &nn);
    let ck = s.path("m.st");
    succeeded(&run!("train", &file, "--quiet", "--checkpoint", &ck));
    let err = user_error(&run!(
        "predict",
        &file,
        "--checkpoint",
        &ck,
        "--input",
        s.path("tall.idx")
    ));
    assert_has(
        &err,
        &["a sample has shape [3, 2], but the model input image: f32[B,1,2,3] takes [1, 2, 3]"],
    );
    // An image of another size says its shape, not only how many values it holds.
    let mut pgm = b"P5\n3 3\n255\n".to_vec();
    pgm.extend([7u8; 9]);
    s.write("big.pgm", &pgm);
    let err = user_error(&run!(
        "predict",
        &file,
        "--checkpoint",
        &ck,
        "--input",
        s.path("big.pgm")
    ));
    assert_has(
        &err,
        &["a sample has 9 values (shape [3, 3]), but the model input image: f32[B,1,2,3] expects 6"],
    );
    succeeded(&run!(
        "predict",
        &file,
        "--checkpoint",
        &ck,
        "--input",
        s.path("images.idx")
    ));
    // A flat input: the tall images are vectors of 6.
    let flat = s.write("flat.nn", nn.replace("[1, 2, 3]", "[6]"));
    std::fs::write(s.path("images.idx"), &tall).unwrap();
    succeeded(&run!("train", &flat, "--quiet"));
}

/// A checkpoint of other layers (a dense autoencoder's, given to a convolutional one) loads
/// nothing: the error shows the names the file holds beside the model's, which tell why.
#[test]
fn a_checkpoint_of_other_layers_names_both_sides() {
    let s = Scratch::new("other-layers");
    let xor = root().join("examples/xor.nn");
    let w = vec![0.5f32; 8];
    let ck = s.path("dense_ae.safetensors");
    let tensor = |name: &str| Saved {
        name: name.into(),
        dims: &[2, 4],
        data: &w,
    };
    let held = [
        "encoder.dense1.weight",
        "encoder.dense2.weight",
        "decode1.weight",
        "decode2.weight",
    ];
    save(&ck, &held.map(tensor), None).unwrap();
    let out = nnc()
        .arg("train")
        .arg(&xor)
        .args(["--quiet", "--steps", "1", "--init"])
        .arg(&ck)
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert_has(
        &stderr(&out),
        &[
            "has none of the model's parameters: it holds `decode1.weight`, `decode2.weight`, \
             `encoder.dense1.weight` and 1 more, the model has `dense1.weight`, `dense1.bias`",
        ],
    );
}
