//! `maxpool` and `avgpool` with `padding:` (PyTorch's `MaxPool2d(3, stride=2, padding=1)`),
//! trained: every forward and backward value of the JIT against the interpreter, unoptimized
//! and optimized (where a pool after a convolution and relu fuses into it), and the same bits
//! on one and two threads; over windows of 2 to 5, strides 1 and 2, non-square maps, and inputs
//! mostly zero (ties with the padding, which a max pool never picks).

use super::transposed::image_models_train_as_the_interpreter_does;
use super::*;

const DENSE: Gen = Gen::U(-1.0, 1.0);
/// Mostly zeros, as a relu's output: windows whose only non-zero values are in the image.
const SPARSE: Gen = Gen::Sparse {
    bg: 0.0,
    density: 0.15,
};

/// The models: (input, body, output elements per sample, how the input is drawn).
const PADDED: &[([usize; 3], &str, usize, Gen)] = &[
    // ⌊(9 + 2 − 3)/2⌋ + 1 = 5.
    (
        [3, 9, 9],
        "maxpool(3, stride: 2, padding: 1)",
        3 * 5 * 5,
        DENSE,
    ),
    (
        [3, 9, 9],
        "maxpool(3, stride: 2, padding: 1)",
        3 * 5 * 5,
        SPARSE,
    ),
    // Non-square: 8×7 -> 4×4; the padding's zeros count in the divisor.
    (
        [2, 8, 7],
        "avgpool(3, stride: 2, padding: 1)",
        2 * 4 * 4,
        DENSE,
    ),
    // A 2×2 window of stride 2 with padding: not the unpadded pairs' kernel. 6×6 -> 4×4.
    ([2, 6, 6], "maxpool(2, padding: 1)", 2 * 4 * 4, DENSE),
    (
        [2, 6, 6],
        "avgpool(kernel: 2, padding: 1)",
        2 * 4 * 4,
        DENSE,
    ),
    // Stride 1 keeps the size.
    (
        [3, 7, 7],
        "avgpool(5, stride: 1, padding: 2)",
        3 * 7 * 7,
        DENSE,
    ),
    (
        [3, 7, 7],
        "maxpool(5, stride: 1, padding: 2) |> tanh",
        3 * 7 * 7,
        DENSE,
    ),
    // After a convolution and relu (a pool the optimizer may fuse into the convolution), on
    // MNIST's 28×28: 28 -> 14 -> 7.
    (
        [1, 28, 28],
        "conv2d(8, kernel: 3, padding: 1) |> relu |> maxpool(3, stride: 2, padding: 1)
         |> conv2d(16, kernel: 3, padding: 1) |> relu |> avgpool(3, stride: 2, padding: 1)",
        16 * 7 * 7,
        SPARSE,
    ),
];

#[test]
fn padded_pools_train_as_the_interpreter_does() {
    image_models_train_as_the_interpreter_does(PADDED, 900);
}
