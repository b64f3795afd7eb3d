//! `concat`, its gradient `slice`, and `reverse` (the copy kernels) against the interpreter, on
//! vectors, sequences and images along every sample axis; then bidirectional recurrent layers,
//! as the checker lowers them, trained: every forward and backward value, on one and two
//! threads.

use super::*;

/// The training graph of run `M` of a file whose model `M` is `body` on an `x: [5, 3]`
/// sequence, flattened, with an mse loss against a label of its `5·out` features.
pub(super) fn sequence_model(body: &str, out: usize) -> Graph {
    let zeros = |n: usize| format!("[[{}]]", vec!["0"; n].join(", "));
    let src = format!(
        "model M(x: [5, 3]) -> [{}] {{ return x |> {body} |> flatten }}
         data d {{ train: inline(x: {}, y: {}) }}
         train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) }}",
        5 * out,
        zeros(15),
        zeros(5 * out)
    );
    let file = nnc::syntax::parse(&src).unwrap_or_else(|d| panic!("{d:?}"));
    let p = nnc::check::check(&file)
        .unwrap_or_else(|d| panic!("{}", nnc::diag::Report::new("t.nn", &src, d).render(false)));
    p.run("M").unwrap().graph.clone()
}

/// As [`sequence_model`], on `x: i32[5]`, ids of a vocabulary of 4 that `lookup` turns into a
/// sequence of vectors (`embedding(4, 3)`, `one_hot(4)`).
fn token_model(lookup: &str, body: &str, out: usize) -> Graph {
    let zeros = |n: usize| format!("[[{}]]", vec!["0"; n].join(", "));
    let src = format!(
        "model M(x: i32[5]) -> [{}] {{ return x |> {lookup} |> {body} |> flatten }}
         data d {{ train: inline(x: [[0, 1, 2, 3, 1]], y: {}) }}
         train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) }}",
        5 * out,
        zeros(5 * out)
    );
    let file = nnc::syntax::parse(&src).unwrap_or_else(|d| panic!("{d:?}"));
    let p = nnc::check::check(&file)
        .unwrap_or_else(|d| panic!("{}", nnc::diag::Report::new("t.nn", &src, d).render(false)));
    p.run("M").unwrap().graph.clone()
}

/// Shapes joined along a full-shape axis (the batch is axis 0): vectors, sequences, images,
/// two and three inputs, lengths on and off the 4-lane vectors.
const CONCATS: &[(&[&[usize]], usize)] = &[
    (&[&[3], &[5]], 1),
    (&[&[4], &[8], &[1]], 1),
    (&[&[2, 3], &[2, 6]], 2),
    (&[&[2, 3], &[5, 3]], 1),
    (&[&[3, 4, 5], &[1, 4, 5], &[2, 4, 5]], 1),
    (&[&[2, 3, 5], &[2, 1, 5]], 2),
    (&[&[2, 3, 5], &[2, 3, 7]], 3),
];

#[test]
fn concat_slice_and_reverse_match_the_interpreter() {
    let mut rng = Rng(77);
    let u = Gen::U(-1.0, 1.0);
    for &(shapes, axis) in CONCATS {
        let tys: Vec<Type> = shapes.iter().map(|s| f(true, s)).collect();
        for &batch in &BATCHES {
            let g = single("concat", Op::Concat { axis }, &tys, None);
            compare(&g, &vec![u; tys.len()], batch, rng.next(), TOL);
            // The gradient of each input: its slice of the whole.
            let whole = g.ty(g.output("out").unwrap()).clone();
            let mut start = 0;
            for t in &tys {
                let len = t.around(axis).1;
                let op = Op::Slice { axis, start, len };
                compare(
                    &single("slice", op, std::slice::from_ref(&whole), None),
                    &[u],
                    batch,
                    rng.next(),
                    TOL,
                );
                start += len;
            }
            for a in 1..=tys[0].dims.len() {
                let op = Op::Reverse { axis: a };
                compare(
                    &single("reverse", op, &tys[..1], None),
                    &[u],
                    batch,
                    rng.next(),
                    TOL,
                );
            }
        }
    }
}

/// The three recurrent layers with `bidirectional: true`, as written in a file.
pub(super) const BIDIRECTIONAL: [(&str, usize); 3] = [
    ("rnn(4, bidirectional: true)", 8),
    ("gru(3, bidirectional: true)", 6),
    ("lstm(5, bidirectional: true)", 10),
];

#[test]
fn bidirectional_layers_train_as_the_interpreter_does() {
    let u = Gen::U(-1.0, 1.0);
    for (body, out) in BIDIRECTIONAL {
        let g = sequence_model(body, out);
        assert!(g
            .nodes
            .iter()
            .any(|n| matches!(n.op, Op::Reverse { axis: 1 })));
        super::autodiff::check_trained(g, &[u, u]);
    }
}

#[test]
fn bidirectional_training_is_bit_identical_on_any_thread_count() {
    trains_alike_on_any_thread_count(&BIDIRECTIONAL);
}

/// Each of `layers` (as a file writes them, with their output's width) trained for a step on 1
/// thread and on 2, at batches 64 and 37: the same bits.
pub(super) fn trains_alike_on_any_thread_count(layers: &[(&str, usize)]) {
    let u = Gen::U(-1.0, 1.0);
    for &(body, out) in layers {
        let g = nnc::autodiff::grad(&sequence_model(body, out)).unwrap();
        for batch in [64, 37] {
            let a = run_once(&g, &[u, u], batch, 1);
            assert_eq!(
                a,
                run_once(&g, &[u, u], batch, 2),
                "{body}: threads 2, batch {batch}"
            );
        }
    }
}

/// A bidirectional layer on looked-up tokens: its reverse direction reads the look-up of the
/// reversed ids (so that, optimized, both directions' input projections are products of the
/// embedding table, `opt::embed_matmul`), and trains as the interpreter does, unoptimized and
/// optimized, with ids repeated and on every thread count's batches.
#[test]
fn bidirectional_layers_on_looked_up_tokens_train_as_the_interpreter_does() {
    for lookup in ["embedding(4, 3)", "one_hot(4)"] {
        for (body, out) in BIDIRECTIONAL {
            let g = token_model(lookup, body, out);
            let reversed: Vec<DType> = g
                .nodes
                .iter()
                .filter(|n| matches!(n.op, Op::Reverse { .. }))
                .map(|n| n.ty.dtype)
                .collect();
            // The ids, then the reverse direction's states back into time order.
            assert_eq!(reversed, [DType::I32, DType::F32], "{lookup} |> {body}");
            let t = nnc::autodiff::grad(&g).unwrap();
            let folded = nnc::opt::optimize(&t, 1).unwrap();
            if lookup.starts_with("embedding") {
                let tables: Vec<&Op> = folded
                    .nodes
                    .iter()
                    .filter(|n| n.op == Op::Embedding)
                    .map(|n| &folded.node(n.inputs[1]).op)
                    .collect();
                assert_eq!(tables.len(), 2, "{body}: a look-up per direction");
                assert!(
                    tables.iter().all(|op| !matches!(op, Op::Param(_))),
                    "{body}: a direction looks up the raw table: {tables:?}"
                );
            }
            for mut t in [t, folded] {
                expose_all(&mut t);
                for &batch in &BATCHES {
                    let gens = [Gen::Int(0, 4), Gen::U(-1.0, 1.0)];
                    compare(&t, &gens, batch, 600 + batch as u64, TOL);
                }
            }
        }
    }
}
