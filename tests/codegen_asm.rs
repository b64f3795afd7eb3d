//! Properties of the machine code the JIT generates, read from `nnc ir --stage asm`'s text
//! (x86-64 only: the assertions name its instructions).

mod common;

use common::program;

/// The optimized training graph of an example's first run, as `nnc ir --stage asm` compiles it.
fn asm_of(example: &str) -> String {
    let p = program(example);
    let grad = nnc::autodiff::grad(&p.runs[0].graph).unwrap();
    let opt = nnc::opt::optimize(&grad, 1).unwrap();
    nnc::codegen::asm_text(&opt).unwrap()
}

/// The listing of the kernel titled `title` under the first node header containing `node`, up
/// to the next node header.
fn kernel<'a>(asm: &'a str, node: &str, title: &str) -> &'a str {
    let at = asm
        .find(node)
        .unwrap_or_else(|| panic!("no `{node}` in\n{asm}"));
    let body = &asm[at..];
    let start = body
        .find(title)
        .unwrap_or_else(|| panic!("no `{title}` after `{node}`"));
    let body = &body[start..];
    let end = body.find("\n; %").unwrap_or(body.len());
    &body[..end]
}

/// The autoencoder's loss epilogue (sigmoid, then the mean squared error's gradient) scales by
/// `1/N`: one u64→f32 conversion and one scalar division, in the kernel's first block, not one
/// per f32x4 in its loops (`Kb::materialize`: Cranelift's e-graph pass left them there).
#[cfg(target_arch = "x86_64")]
#[test]
fn a_loss_epilogue_computes_its_scale_once_before_its_loops() {
    let asm = asm_of("autoencoder_finetune");
    let epi = kernel(
        &asm,
        "mse_grad dl=1.0 → sigmoid_grad",
        "; epilogue per block of C",
    );
    let first_block = &epi[..epi.find("block1:").expect("a loop")];
    assert_eq!(epi.matches("u64_to_f32_seq").count(), 1, "{epi}");
    assert!(first_block.contains("u64_to_f32_seq"), "{epi}");
    let scalar_divisions = epi.matches("vdivss").count();
    let in_first = first_block.matches("vdivss").count();
    // The first block's `1/N`; the loops' one division each is the sigmoid's `1/(1 + e^−x)`
    // (`vdivps` in the f32x4 loop, `vdivss` in the scalar tail).
    assert_eq!((in_first, scalar_divisions), (1, 2), "{epi}");
}

/// The char-RNN's cross-entropy loss takes each row's max once, then sums `exp(x − max)` over
/// the row: the horizontal max of the f32x4 accumulator (three NaN-aware maxes of its lanes and
/// one with the scalar tail's) lies in no block that also computes an `exp` (the f32x4 loop's
/// `vfmadd213ps` or the scalar tail's `vfmadd213ss`). Cranelift's e-graph pass placed it in
/// both (`Kb::materialize` in the row reductions).
#[cfg(target_arch = "x86_64")]
#[test]
fn a_row_max_is_taken_once_per_row_not_in_the_exp_loop() {
    let asm = asm_of("char_rnn");
    let loss = kernel(&asm, "= cross_entropy %", "cross_entropy");
    let blocks: Vec<&str> = loss.split("\nblock").collect();
    let horizontal = |b: &str| b.matches("max seq").count() >= 4;
    let exp = |b: &str| b.contains("vfmadd213ps") || b.contains("vfmadd213ss");
    let with_max: Vec<&str> = blocks.iter().copied().filter(|b| horizontal(b)).collect();
    assert_eq!(with_max.len(), 1, "{loss}");
    assert!(!exp(with_max[0]), "{loss}");
    assert!(blocks.iter().any(|b| exp(b)), "{loss}");
}
