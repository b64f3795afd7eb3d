//! What must hold for any text given to the front end, shared by the property tests
//! (`tests/parse_fuzz.rs`) and the `parse_check` fuzz target (`fuzz/`): parsing and checking
//! never panic; every diagnostic has a message, a label and spans inside the text on character
//! boundaries (so miette can render it, and does); an AST prints; a checked program's graphs
//! pass the IR verifier, and its training graphs differentiate.

use nnc::diag::{Diag, Report};
use nnc::ir::verify::verify;
use nnc::syntax::{parse, print_ast};

/// Runs `src` through parse and check; panics (naming what broke) if an invariant fails.
pub fn check_source(src: &str) {
    let file = match parse(src) {
        Ok(file) => file,
        Err(diags) => return check_diags(src, &diags),
    };
    let _ = print_ast(&file);
    let program = match nnc::check::check(&file) {
        Ok(p) => p,
        Err(diags) => return check_diags(src, &diags),
    };
    for m in &program.models {
        if let Err(e) = verify(&m.graph) {
            panic!("model {} lowers to an invalid graph: {e:?}", m.name);
        }
        let _ = nnc::check::model_stats(&m.graph);
    }
    for r in &program.runs {
        for g in [&r.graph, &r.eval_graph] {
            if let Err(e) = verify(g) {
                panic!(
                    "run {} lowers to an invalid graph {}: {e:?}",
                    r.name, g.name
                );
            }
        }
        if let Err(e) = nnc::autodiff::grad(&r.graph) {
            panic!("run {}: autodiff refused its training graph: {e}", r.name);
        }
    }
}

/// Every diagnostic is non-empty, points inside `src` on char boundaries, and renders.
fn check_diags(src: &str, diags: &[Diag]) {
    assert!(!diags.is_empty(), "an error without diagnostics");
    for d in diags {
        for s in std::iter::once(d.span).chain(d.related.iter().map(|r| r.0)) {
            assert!(
                s.start <= s.end && s.end <= src.len(),
                "{}: span {s:?} outside {} bytes",
                d.message,
                src.len()
            );
            assert!(
                src.is_char_boundary(s.start) && src.is_char_boundary(s.end),
                "{}: span {s:?} splits a char",
                d.message
            );
        }
        assert!(
            !d.message.is_empty() && !d.label.is_empty(),
            "a diagnostic without message or label: {d:?}"
        );
    }
    let _ = Report::new("fuzz.nn", src, diags.to_vec()).render(false);
}
