//! Snapshots of every example's training graphs after autodiff (what `nnc ir FILE --stage grad`
//! prints); of its inference and training graphs after the level-1 optimization pipeline (what
//! `nnc ir FILE --stage opt` prints and what the JIT compiles); of their fusion groups and
//! optimizer update points (`--stage fused`); and of their memory plans (`--stage plan`).

mod common;

use common::{program, EXAMPLES};
use nnc::ir::print::graph_to_string;

/// Every run's training graph with its backward pass, as autodiff derives it (before any
/// optimization): a change to a gradient rule shows here first.
#[test]
fn grad_snapshots() {
    for name in EXAMPLES {
        let p = program(name);
        let mut text = String::new();
        for r in &p.runs {
            text.push_str(&graph_to_string(&nnc::autodiff::grad(&r.graph).unwrap()));
            text.push('\n');
        }
        insta::assert_snapshot!(format!("grad_{name}"), text);
    }
}

#[test]
fn opt_snapshots() {
    for name in EXAMPLES {
        let p = program(name);
        let mut text = String::new();
        let mut groups = String::new();
        let models = p.models.iter().map(|m| m.graph.clone());
        let runs = p
            .runs
            .iter()
            .map(|r| nnc::autodiff::grad(&r.graph).unwrap());
        for g in models.chain(runs) {
            let opt = nnc::opt::optimize(&g, 1).unwrap();
            text.push_str(&graph_to_string(&opt));
            text.push('\n');
            groups.push_str(&nnc::opt::fuse::groups_to_string(&opt));
            if opt.output("loss").is_some() {
                groups.push_str(&nnc::opt::update_points::updates_to_string(&opt));
            }
        }
        insta::assert_snapshot!(format!("opt_{name}"), text);
        insta::assert_snapshot!(format!("fused_{name}"), groups);
    }
}

/// The memory plan of every example's optimized graphs (`nnc ir --stage plan`): inference at
/// batch 1, training at the run's batch.
#[test]
fn plan_snapshots() {
    use nnc::opt::memplan::{plan, plan_to_string};
    for name in EXAMPLES {
        let p = program(name);
        let mut text = String::new();
        for m in &p.models {
            let opt = nnc::opt::optimize(&m.graph, 1).unwrap();
            text.push_str(&plan_to_string(&opt, &plan(&opt), 1));
            text.push('\n');
        }
        for r in &p.runs {
            let opt = nnc::opt::optimize(&nnc::autodiff::grad(&r.graph).unwrap(), 1).unwrap();
            text.push_str(&plan_to_string(&opt, &plan(&opt), r.batch));
            text.push('\n');
        }
        insta::assert_snapshot!(format!("plan_{name}"), text);
    }
}
