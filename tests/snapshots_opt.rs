//! Snapshots of every example's training graphs after autodiff and the level-1 optimization
//! pipeline (what `nnc ir FILE --stage opt` prints and what the JIT compiles), of their fusion
//! groups and optimizer update points (`--stage fused`) and of their memory plans (`--stage plan`).

mod common;

use common::{program, EXAMPLES};
use nnc::ir::print::graph_to_string;

#[test]
fn opt_snapshots() {
    for name in EXAMPLES {
        let p = program(name);
        let mut text = String::new();
        let mut groups = String::new();
        for r in &p.runs {
            let grad = nnc::autodiff::grad(&r.graph).unwrap();
            let opt = nnc::opt::optimize(&grad, 1).unwrap();
            text.push_str(&graph_to_string(&opt));
            text.push('\n');
            groups.push_str(&nnc::opt::fuse::groups_to_string(&opt));
            groups.push_str(&nnc::opt::update_points::updates_to_string(&opt));
        }
        insta::assert_snapshot!(format!("opt_{name}"), text);
        insta::assert_snapshot!(format!("fused_{name}"), groups);
    }
}

/// The memory plan of every example's optimized training graphs (`nnc ir --stage plan`).
#[test]
fn plan_snapshots() {
    use nnc::opt::memplan::{plan, plan_to_string};
    for name in EXAMPLES {
        let p = program(name);
        let mut text = String::new();
        for r in &p.runs {
            let opt = nnc::opt::optimize(&nnc::autodiff::grad(&r.graph).unwrap(), 1).unwrap();
            text.push_str(&plan_to_string(&opt, &plan(&opt), r.batch));
            text.push('\n');
        }
        insta::assert_snapshot!(format!("plan_{name}"), text);
    }
}
