//! Dropping a `Jit` frees its machine code: compiling the same graph again and again (as a fuzzer
//! or a long-lived host does) keeps the resident memory flat. Found while fuzzing `jit_vs_interp`,
//! whose memory grew by ~20 KB a run. Alone in its test binary, so that no other test's
//! allocations move the resident size it measures.

use nnc::codegen::{Jit, JitOptions};
use nnc::ir::{Graph, Init, Op, Param, Type, UnaryOp};

/// The process's resident set size in KB (Linux).
fn rss_kb() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
#[cfg(target_os = "linux")]
fn compiling_and_dropping_does_not_grow_memory() {
    let mut g = Graph::new("m", false);
    let x = g.input("x", Type::f32(true, vec![8]));
    let w = g.add_param(Param {
        path: "w".into(),
        dims: vec![8, 4],
        init: Init::Zeros,
        frozen: false,
    });
    let y = g
        .push(
            Op::MatMul {
                ta: false,
                tb: false,
            },
            vec![x, w],
            "",
        )
        .unwrap();
    let y = g.push(Op::Unary(UnaryOp::Tanh), vec![y], "").unwrap();
    g.set_output("output", y);
    let compile = || drop(Jit::compile(&g, &JitOptions::default()).unwrap());
    // Warm up: the shared kernel library, allocator pools.
    for _ in 0..100 {
        compile();
    }
    let before = rss_kb();
    for _ in 0..500 {
        compile();
    }
    let grown = rss_kb().saturating_sub(before);
    // Leaking even one 4 KB page per graph would be 2000 KB.
    assert!(
        grown < 500,
        "resident memory grew by {grown} KB over 500 compilations"
    );
}
