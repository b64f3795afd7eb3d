//! safetensors checkpoints: round trip, an independent read with the `safetensors` crate, the
//! error cases (missing tensor, wrong shape, wrong dtype, truncated file) and atomic writes.

use nnc::ir::{Init, Param};
use nnc::runtime::checkpoint::{optim_name, save, Checkpoint, CheckpointError, Saved};
use safetensors::tensor::{Dtype, SafeTensors};
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nnc-ckpt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn param(path: &str, dims: &[usize]) -> Param {
    Param {
        path: path.into(),
        dims: dims.to_vec(),
        init: Init::Zeros,
        frozen: false,
    }
}

/// Two parameters with distinct, non-trivial values (including a negative zero and a subnormal).
fn tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let w: Vec<f32> = (0..6)
        .map(|i| i as f32 * 0.37 - 1.0)
        .chain([-0.0, 1e-40])
        .collect();
    vec![
        ("dense1.weight".into(), vec![4, 2], w),
        ("dense1.bias".into(), vec![2], vec![0.25, -3.5]),
    ]
}

fn write(path: &std::path::Path, step: Option<u64>) {
    let t = tensors();
    let saved: Vec<Saved<'_>> = t
        .iter()
        .map(|(n, d, v)| Saved {
            name: n.clone(),
            dims: d,
            data: v,
        })
        .collect();
    save(path, &saved, step).unwrap();
}

#[test]
fn round_trip_through_our_reader_is_bit_exact() {
    let dir = tmp("rt");
    let p = dir.join("m.safetensors");
    let t = tensors();
    let mut saved: Vec<Saved<'_>> = t
        .iter()
        .map(|(n, d, v)| Saved {
            name: n.clone(),
            dims: d,
            data: v,
        })
        .collect();
    let state = vec![9.0f32, 8.0];
    saved.push(Saved {
        name: optim_name("dense1.bias", 0),
        dims: &t[1].1,
        data: &state,
    });
    save(&p, &saved, Some(123)).unwrap();
    let ck = Checkpoint::load(&p).unwrap();
    assert_eq!(ck.step, Some(123));
    for (n, d, v) in &t {
        let got = ck.get(n, d).unwrap();
        assert_eq!(
            got.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
    assert_eq!(ck.tensors["__optim.dense1.bias.0"].data, state);
    let ps = [param("dense1.bias", &[2]), param("dense1.weight", &[4, 2])];
    let vals = ck.params_for(&ps.iter().collect::<Vec<_>>(), "").unwrap();
    assert_eq!(vals[0], t[1].2);
}

#[test]
fn the_safetensors_crate_reads_what_we_write() {
    let dir = tmp("crate");
    let p = dir.join("m.safetensors");
    write(&p, Some(7));
    let bytes = std::fs::read(&p).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for (n, d, v) in tensors() {
        let view = st.tensor(&n).unwrap();
        assert_eq!(view.dtype(), Dtype::F32);
        assert_eq!(view.shape(), &d[..]);
        let got: Vec<f32> = view
            .data()
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(
            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
    let step = st.tensor("__step").unwrap();
    assert_eq!(step.dtype(), Dtype::I64);
    assert_eq!(i64::from_le_bytes(step.data().try_into().unwrap()), 7);
}

#[test]
fn missing_name_wrong_shape_and_wrong_dtype_name_the_tensor() {
    let dir = tmp("errs");
    let p = dir.join("m.safetensors");
    write(&p, Some(1));
    let ck = Checkpoint::load(&p).unwrap();
    let e = ck
        .params_for(&[&param("dense2.weight", &[2, 2])], "")
        .unwrap_err();
    assert!(
        matches!(e, CheckpointError::Missing { .. }) && e.to_string().contains("dense2.weight"),
        "{e}"
    );
    let e = ck
        .params_for(&[&param("dense1.bias", &[3])], "")
        .unwrap_err();
    assert!(matches!(e, CheckpointError::Shape { .. }), "{e}");
    assert!(
        e.to_string().contains("dense1.bias")
            && e.to_string().contains("[2]")
            && e.to_string().contains("[3]"),
        "{e}"
    );
    // A teacher reads the student's names under `teacher.`.
    assert!(ck
        .params_for(&[&param("teacher.dense1.bias", &[2])], "teacher.")
        .is_ok());
}

#[test]
fn a_non_finite_value_is_an_error_naming_the_tensor_and_its_first_bad_index() {
    let dir = tmp("nonfinite");
    let p = dir.join("n.safetensors");
    // dense1.weight is [4, 2]: flat index 3 is [1, 1]; the NaN after it is not the first.
    let mut w: Vec<f32> = (0..8).map(|i| i as f32).collect();
    w[3] = f32::NEG_INFINITY;
    w[5] = f32::NAN;
    let b = [0.5f32, 0.25];
    save(
        &p,
        &[
            Saved {
                name: "dense1.weight".into(),
                dims: &[4, 2],
                data: &w,
            },
            Saved {
                name: "dense1.bias".into(),
                dims: &[2],
                data: &b,
            },
        ],
        None,
    )
    .unwrap();
    let ck = Checkpoint::load(&p).unwrap();
    let e = ck.get("dense1.weight", &[4, 2]).unwrap_err();
    assert!(
        matches!(e, CheckpointError::NonFinite { .. })
            && e.to_string()
                .contains("`dense1.weight` holds -inf at index [1, 1]"),
        "{e}"
    );
    let e = nnc::runtime::checkpoint::load_params(
        &p,
        &[param("dense1.bias", &[2]), param("dense1.weight", &[4, 2])],
    )
    .unwrap_err();
    assert!(matches!(e, CheckpointError::NonFinite { .. }), "{e}");
    // The finite tensor beside it reads.
    assert!(ck.get("dense1.bias", &[2]).is_ok());
}

#[test]
fn an_i32_tensor_where_f32_is_expected_is_a_dtype_error() {
    let dir = tmp("dtype");
    let p = dir.join("i.safetensors");
    let data = [1u8, 0, 0, 0, 2, 0, 0, 0];
    let view = safetensors::tensor::TensorView::new(Dtype::I32, vec![2], &data).unwrap();
    std::fs::write(
        &p,
        safetensors::serialize([("dense1.bias", view)], None).unwrap(),
    )
    .unwrap();
    let e = Checkpoint::load(&p)
        .unwrap()
        .params_for(&[&param("dense1.bias", &[2])], "")
        .unwrap_err();
    assert!(
        matches!(e, CheckpointError::DType { .. }) && e.to_string().contains("I32"),
        "{e}"
    );
}

#[test]
fn a_negative_step_count_is_reported_as_written() {
    let dir = tmp("negstep");
    let p = dir.join("s.safetensors");
    let data = (-5i64).to_le_bytes();
    let view = safetensors::tensor::TensorView::new(Dtype::I64, vec![1], &data).unwrap();
    std::fs::write(
        &p,
        safetensors::serialize([("__step", view)], None).unwrap(),
    )
    .unwrap();
    let e = Checkpoint::load(&p).unwrap_err();
    assert!(
        matches!(e, CheckpointError::NegativeStep { step: -5, .. })
            && e.to_string().contains("`__step` is -5"),
        "{e}"
    );
}

#[test]
fn truncated_garbage_and_missing_files_are_errors() {
    let dir = tmp("trunc");
    let p = dir.join("m.safetensors");
    write(&p, None);
    let bytes = std::fs::read(&p).unwrap();
    for cut in [0, 4, 12, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = Checkpoint::load(&p).unwrap_err();
        assert!(
            matches!(e, CheckpointError::Corrupt { .. }),
            "cut at {cut}: {e}"
        );
    }
    std::fs::write(&p, b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
    assert!(matches!(
        Checkpoint::load(&p).unwrap_err(),
        CheckpointError::Corrupt { .. }
    ));
    let e = Checkpoint::load(&dir.join("none.safetensors")).unwrap_err();
    assert!(
        matches!(e, CheckpointError::NotFound { .. }) && e.to_string().contains("none.safetensors"),
        "{e}"
    );
    assert!(!e.to_string().contains("beside it"), "{e}");
    // Where `--checkpoint m.st` wrote one file a run, the error names them.
    for f in [
        "m.pretrain.st",
        "m.finetune.st",
        "m.st.tmp",
        "m.a.b.st",
        "other.st",
    ] {
        std::fs::write(dir.join(f), b"").unwrap();
    }
    let e = Checkpoint::load(&dir.join("m.st")).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("m.st not found; beside it: m.finetune.st, m.pretrain.st (one file a run, as `nnc train --checkpoint` writes them when it trains several runs)"),
        "{e}"
    );
}

#[test]
fn writes_are_atomic_and_leave_no_temporary_file() {
    let dir = tmp("atomic");
    let p = dir.join("m.safetensors");
    write(&p, Some(1));
    let before = std::fs::read(&p).unwrap();
    // A failed write (into a folder that does not exist) leaves nothing behind.
    let bad = dir.join("no/such/dir/m.safetensors");
    let t = tensors();
    let saved: Vec<Saved<'_>> = t
        .iter()
        .map(|(n, d, v)| Saved {
            name: n.clone(),
            dims: d,
            data: v,
        })
        .collect();
    assert!(matches!(
        save(&bad, &saved, None).unwrap_err(),
        CheckpointError::Write { .. }
    ));
    // Overwriting replaces the whole file, and only the final file remains.
    write(&p, Some(2));
    let entries: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, vec!["m.safetensors".to_string()]);
    let after = std::fs::read(&p).unwrap();
    assert_ne!(before, after);
    assert_eq!(Checkpoint::load(&p).unwrap().step, Some(2));
}

/// The path `--checkpoint` was given, back from the file it gave one run: with an extension,
/// without one, a stem holding dots; `None` for a file not named for that run.
#[test]
fn shared_path_inverts_per_run_path() {
    use nnc::runtime::checkpoint::{per_run_path, shared_path};
    use std::path::Path;
    for given in ["d.safetensors", "dir/ck", "v1.0.st"] {
        let given = Path::new(given);
        for run in ["small", "big"] {
            assert_eq!(
                shared_path(&per_run_path(given, run), run).as_deref(),
                Some(given),
                "{given:?} {run}"
            );
        }
    }
    assert_eq!(shared_path(Path::new("d.bigger.st"), "big"), None);
    assert_eq!(shared_path(Path::new("d.st"), "small"), None);
    assert_eq!(shared_path(Path::new("small"), "small"), None);
}

/// A missing tensor is named with those the checkpoint holds under the same layer, and when
/// those are PyTorch's names of a recurrent layer's tensors (a state dict converted as it is),
/// with what nnc calls them: it said only "has no tensor `lstm1.w_xh`".
#[test]
fn a_missing_tensor_names_what_its_layer_holds_and_pytorch_s_names() {
    let dir = tmp("torch-names");
    let p = dir.join("t.safetensors");
    const W: [f32; 8] = [0.5; 8];
    const B: [f32; 4] = [0.25; 4];
    let tensor = |name: &str, dims: &'static [usize], data: &'static [f32]| Saved {
        name: name.into(),
        dims,
        data,
    };
    save(
        &p,
        &[
            tensor("lstm1.weight_ih_l0", &[4, 2], &W),
            tensor("lstm1.bias_ih_l0", &[4], &B),
            tensor("dense1.bias", &[4], &B),
        ],
        None,
    )
    .unwrap();
    let ck = Checkpoint::load(&p).unwrap();
    let e = ck.get("lstm1.w_xh", &[2, 4]).unwrap_err().to_string();
    assert!(
        e.contains("beside it, it holds `lstm1.bias_ih_l0`, `lstm1.weight_ih_l0`; those are PyTorch's names: nnc's `w_xh` is `weight_ih_l0` transposed"),
        "{e}"
    );
    let e = ck.get("dense1.weight", &[2, 4]).unwrap_err().to_string();
    assert!(e.ends_with("beside it, it holds `dense1.bias`"), "{e}");
    let e = ck.get("head.weight", &[2, 4]).unwrap_err().to_string();
    assert!(e.ends_with("(expected f32 [2, 4])"), "{e}");
}
