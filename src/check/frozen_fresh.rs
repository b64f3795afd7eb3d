//! A warning for a run that freezes parameters its `init:` run does not have: they start from
//! their initializers and, frozen, stay there: random weights the run never trains. A stacked
//! or bidirectional layer grown from a smaller one (`init: one_layer` with
//! `freeze: lstm1`) is the likely way to write it.

use super::names::plural;
use super::runs::Earlier;
use crate::diag::Diag;
use crate::ir::{InitFrom, RunSpec};
use crate::syntax::ast::Train;
use std::collections::HashMap;

/// The warning for run `r` (of block `t`), under its `freeze:`, when its `init:` names an
/// earlier run (in `earlier`, checked cleanly) that lacks some of the parameters it freezes.
pub fn warning(t: &Train, r: &RunSpec, earlier: &HashMap<String, Earlier>) -> Option<Diag> {
    let Some(InitFrom::Run(from)) = &r.init else {
        return None;
    };
    let source = earlier.get(from)?.params.as_ref()?;
    let fresh: Vec<&str> = r
        .graph
        .params
        .iter()
        .filter(|p| p.frozen && !p.is_buffer() && !p.path.starts_with("teacher."))
        .filter(|p| !source.iter().any(|(path, _)| *path == p.path))
        .map(|p| p.path.as_str())
        .collect();
    if fresh.is_empty() {
        return None;
    }
    let freeze = t.settings.iter().find(|s| s.key.name == "freeze")?;
    let shown: Vec<String> = fresh.iter().take(6).map(|p| format!("`{p}`")).collect();
    let more = match fresh.len().saturating_sub(shown.len()) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    Some(
        Diag::new(
            "nnc::train",
            format!(
                "`freeze` keeps {} at {} random initialization: run `{from}` has no {}{more}",
                plural(fresh.len(), "parameter"),
                if fresh.len() == 1 { "its" } else { "their" },
                shown.join(", ")
            ),
            freeze.value.span,
            "frozen before they have trained",
        )
        .help(format!(
            "freeze only what run `{from}` trained (`nnc check` lists what it hands over), or \
             let these train"
        ))
        .warning(),
    )
}
