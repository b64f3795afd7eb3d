//! The IR's text form: stable (snapshot tests depend on it) and meant to be read.
//!
//! ```text
//! graph model ConvNet
//!   param conv1.weight f32[32,1,3,3] uniform(±0.333333)
//!   %0 = input "image" : f32[B,1,28,28]
//!   %1 = param conv1.weight : f32[32,1,3,3]
//!   %2 = conv2d k=3 s=1 p=1 %0, %1 : f32[B,32,28,28]  ; conv1
//!   output output = %2
//! ```

use super::{Graph, Op, ValueId};
use std::fmt::Write;

pub fn graph_to_string(g: &Graph) -> String {
    let mut s = String::new();
    let mode = if g.training { " (training)" } else { "" };
    let _ = writeln!(s, "graph {}{mode}", g.name);
    for p in &g.params {
        let dims: Vec<String> = p.dims.iter().map(|d| d.to_string()).collect();
        let frozen = match (p.is_buffer(), p.frozen) {
            (true, _) => " buffer",
            (false, true) => " frozen",
            (false, false) => "",
        };
        let _ = writeln!(
            s,
            "  param {} f32[{}] {}{frozen}",
            p.path,
            dims.join(","),
            p.init
        );
    }
    for v in g.values() {
        let _ = writeln!(s, "  {}", node_to_string(g, v));
    }
    for o in &g.outputs {
        let _ = writeln!(s, "  output {} = {}", o.name, o.value);
    }
    s
}

/// One node as `graph_to_string` prints it, without the indent: `%4 = relu %3 : f32[B,32]  ; conv1`
/// (for diagnostics that point at a node).
pub fn node_to_string(g: &Graph, v: ValueId) -> String {
    let n = &g.nodes[v.index()];
    let mut line = format!("{v} = {}{}", n.op.name(), n.op.attrs());
    if let Op::Param(p) = n.op {
        let _ = write!(
            line,
            " {}",
            g.params
                .get(p.index())
                .map(|p| p.path.as_str())
                .unwrap_or("?")
        );
    }
    let args: Vec<String> = n.inputs.iter().map(|v| v.to_string()).collect();
    if !args.is_empty() {
        let _ = write!(line, " {}", args.join(", "));
    }
    let _ = write!(line, " : {}", n.ty);
    if !n.label.is_empty() && !matches!(n.op, Op::Param(_) | Op::Input { .. }) {
        let _ = write!(line, "  ; {}", n.label);
    }
    line
}
