//! `conv_transpose2d` and `upsample`, as the checker lowers them (a `conv2d_grad_input` and an
//! `avgpool_grad` in the forward graph), trained: every forward and backward value of the JIT
//! against the interpreter, unoptimized and optimized, and the same bits on one and two
//! threads; over strides 1 to 3, paddings, output paddings, non-square and MNIST-sized maps.

use super::*;

/// The training graph of run `M` of a file whose model `M` is `x: input |> body |> flatten`,
/// `out` elements per sample, with an mse loss against a label of as many.
fn image_model(input: [usize; 3], body: &str, out: usize) -> Graph {
    let zeros = |n: usize| format!("[[{}]]", vec!["0"; n].join(", "));
    let [c, h, w] = input;
    let src = format!(
        "model M(x: [{c}, {h}, {w}]) -> [{out}] {{ return x |> {body} |> flatten }}
         data d {{ train: inline(x: {}, y: {}) }}
         train M on d {{ loss: mse(output, label) optimizer: sgd(lr: 0.1) }}",
        zeros(c * h * w),
        zeros(out)
    );
    let file = nnc::syntax::parse(&src).unwrap_or_else(|d| panic!("{d:?}"));
    let p = nnc::check::check(&file)
        .unwrap_or_else(|d| panic!("{}", nnc::diag::Report::new("t.nn", &src, d).render(false)));
    p.run("M").unwrap().graph.clone()
}

/// Mostly background, as MNIST's images, or a relu's output: a transposed convolution of such
/// an input (and its weight gradient) may take the compacted, sparse path.
const SPARSE: Gen = Gen::Sparse {
    bg: 0.0,
    density: 0.15,
};
const DENSE: Gen = Gen::U(-1.0, 1.0);

/// The models: (input, body, output elements per sample, how the input is drawn).
const DECODERS: &[([usize; 3], &str, usize, Gen)] = &[
    // Stride 2 with output_padding, a non-square map: 7×5 -> 14×10.
    (
        [3, 7, 5],
        "conv_transpose2d(4, kernel: 3, stride: 2, padding: 1, output_padding: 1) |> relu",
        4 * 14 * 10,
        DENSE,
    ),
    // Stride 3, output_padding 2: 6×4 -> 19×13.
    (
        [5, 6, 4],
        "conv_transpose2d(2, kernel: 4, stride: 3, padding: 1, output_padding: 2)",
        2 * 19 * 13,
        DENSE,
    ),
    // Padding as large as the kernel (windows of the convolution it transposes that lie
    // wholly in the padding): 3×3 -> 6×6.
    (
        [2, 3, 3],
        "conv_transpose2d(2, kernel: 2, stride: 3, padding: 2, output_padding: 2)",
        2 * 6 * 6,
        DENSE,
    ),
    // Stride 1 with 16 input channels (the 3×3 input-gradient kernel Winograd takes, or on a
    // mostly zero input the sparse one), the `(in, out)` form: 9×9 kept.
    (
        [16, 9, 9],
        "conv_transpose2d(16, 8, kernel: 3, padding: 1) |> relu",
        8 * 9 * 9,
        DENSE,
    ),
    (
        [16, 9, 9],
        "conv_transpose2d(16, 8, kernel: 3, padding: 1) |> relu",
        8 * 9 * 9,
        SPARSE,
    ),
    // Upsampling, then a convolution that reads it.
    (
        [2, 5, 7],
        "upsample(2) |> conv2d(3, kernel: 3, padding: 1) |> relu",
        3 * 10 * 14,
        DENSE,
    ),
    (
        [3, 4, 3],
        "upsample(scale_factor: 3) |> sigmoid",
        3 * 12 * 9,
        DENSE,
    ),
    // Large maps: 32×32 -> 64×64 by a 4×4 kernel of stride 2 (PyTorch's DCGAN step), and an
    // upsampling of 40×40.
    (
        [8, 32, 32],
        "conv_transpose2d(8, kernel: 4, stride: 2, padding: 1) |> relu",
        8 * 64 * 64,
        DENSE,
    ),
    ([4, 40, 40], "upsample(2) |> tanh", 4 * 80 * 80, DENSE),
    // The convolutional autoencoder of spec §5, on MNIST's 28×28.
    (
        [1, 28, 28],
        "conv2d(16, kernel: 3, stride: 2, padding: 1) |> relu
         |> conv2d(32, kernel: 3, stride: 2, padding: 1) |> relu
         |> conv_transpose2d(16, kernel: 3, stride: 2, padding: 1, output_padding: 1) |> relu
         |> conv_transpose2d(1, kernel: 3, stride: 2, padding: 1, output_padding: 1) |> sigmoid",
        28 * 28,
        SPARSE,
    ),
];

#[test]
fn transposed_convolutions_and_upsampling_train_as_the_interpreter_does() {
    image_models_train_as_the_interpreter_does(DECODERS, 700);
}

/// Each of `models` (input, body, output elements per sample, how the input is drawn), as
/// [`image_model`] builds it, trained: every forward and backward value of the JIT against the
/// interpreter at batches 1, 3 and 8, unoptimized and optimized, and the same bits on one and
/// two threads. `seed` draws the values.
pub(super) fn image_models_train_as_the_interpreter_does(
    models: &[([usize; 3], &str, usize, Gen)],
    seed: u64,
) {
    for &(input, body, out, x) in models {
        let g = image_model(input, body, out);
        let t = nnc::autodiff::grad(&g).unwrap();
        let folded = nnc::opt::optimize(&t, 1).unwrap();
        let gens = [x, Gen::U(0.0, 1.0)];
        for (level, mut t) in [(0, t.clone()), (1, folded)] {
            expose_all(&mut t);
            for batch in [1, 3, 8] {
                compare(&t, &gens, batch, seed + batch as u64, TOL);
            }
            let d = draw(&t, &gens, 5, &mut Rng(seed));
            let one = bits(&run_with(&t, &d, 5, 1));
            assert!(
                one == bits(&run_with(&t, &d, 5, 2)),
                "{body} (--opt {level}): 2 threads changed the bits"
            );
        }
    }
}

/// A bias and relu after a transposed convolution fuse into one pass over its output (a
/// `fused` chain: the epilogue fusion takes only forward convolutions and products).
#[test]
fn a_transposed_convolution_s_bias_and_relu_fuse_into_one_pass() {
    let (input, body, out, _) = DECODERS[0];
    let t = nnc::autodiff::grad(&image_model(input, body, out)).unwrap();
    let g = nnc::opt::optimize(&t, 1).unwrap();
    let convt = g
        .nodes
        .iter()
        .position(|n| matches!(n.op, Op::Conv2dGradInput(_)))
        .unwrap();
    let readers: Vec<&Op> = g
        .nodes
        .iter()
        .filter(|n| n.inputs.first() == Some(&ValueId(convt as u32)))
        .map(|n| &n.op)
        .collect();
    let chain = Op::Fused(Chain {
        bias: Some(1),
        acts: vec![UnaryOp::Relu],
    });
    assert_eq!(readers, [&chain]);
}
