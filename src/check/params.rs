//! Settings that name parameters by path: `freeze`, `lr_scale`, and the parameters an `init`
//! run hands over.

use super::consts;
use super::names::did_you_mean;
use crate::diag::Diag;
use crate::ir::Graph;
use crate::syntax::ast::{Expr, ExprKind, Span};

/// Whether parameter `path` lies under `prefix` (whole segments: `enc` is not under `encoder`).
pub fn under(path: &str, prefix: &str) -> bool {
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'.'))
}

/// Every prefix of every student parameter path, the whole path included (`encoder`,
/// `encoder.dense1`, `encoder.dense1.weight`, …), for suggestions.
fn prefixes(g: &Graph) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in g.params.iter().filter(|p| !p.path.starts_with("teacher.")) {
        let segs: Vec<&str> = p.path.split('.').collect();
        for n in 1..=segs.len() {
            let pre = segs[..n].join(".");
            if !out.contains(&pre) {
                out.push(pre);
            }
        }
    }
    out
}

/// Where a recurrent layer's tensors are ([`super::stack_paths`]), else "did you mean
/// `encoder`?", else the list of top-level layers with parameters.
pub fn suggest_path(g: &Graph, path: &str) -> String {
    let pre = prefixes(g);
    // `gelu(…) as g` or `maxpool(2) as pool`: a layer of that name, without parameters.
    if g.nodes.iter().any(|n| n.label == path) {
        return format!(
            "`{path}` is a layer without parameters (an activation, pooling, upsampling or \
             dropout): it has nothing to train, freeze or scale; the layers with parameters \
             are {}",
            top_layers(&pre)
        );
    }
    super::stack_paths::hint(g, path)
        .or_else(|| did_you_mean(path, pre.iter().map(String::as_str)))
        .unwrap_or_else(|| format!("the layers with parameters are {}", top_layers(&pre)))
}

/// The top-level names among the path prefixes `pre`, in backquotes: "`encoder`, `head`".
fn top_layers(pre: &[String]) -> String {
    let top: Vec<String> = (pre.iter())
        .filter(|p| !p.contains('.'))
        .map(|p| format!("`{p}`"))
        .collect();
    top.join(", ")
}

/// Reports a path that matches no parameter of `model`.
pub fn no_match(g: &Graph, model: &str, path: &str, span: Span, setting: &str) -> Diag {
    let help = suggest_path(g, path);
    Diag::new(
        "nnc::train",
        format!("`{setting}: {path}` matches no parameter of {model}"),
        span,
        "no such layer",
    )
    .help(help)
}

/// A path written as a name (`encoder.dense1`) or a string.
fn path_of(e: &Expr) -> Result<String, Diag> {
    match &e.kind {
        ExprKind::Path(p) => Ok(consts::join_path(p)),
        ExprKind::Str(s) => Ok(s.clone()),
        _ => Err(Diag::new(
            "nnc::train",
            format!("expected a parameter path, found {}", consts::describe(e)),
            e.span,
            "not a path",
        )
        .help("write a layer path such as `encoder` or `encoder.dense1`")),
    }
}

/// `freeze: encoder` or `freeze: [encoder, dense1]`: marks the parameters frozen in `graphs`.
pub fn freeze(
    e: &Expr,
    model: &str,
    graphs: &mut [&mut Graph],
    diags: &mut Vec<Diag>,
) -> Vec<String> {
    let items: Vec<&Expr> = match &e.kind {
        ExprKind::List(items) => items.iter().collect(),
        _ => vec![e],
    };
    let mut out = Vec::new();
    for it in items {
        let path = match path_of(it) {
            Ok(p) => p,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        let g0 = &*graphs[0];
        if !g0
            .params
            .iter()
            .any(|p| !p.path.starts_with("teacher.") && under(&p.path, &path))
        {
            diags.push(no_match(g0, model, &path, it.span, "freeze"));
            continue;
        }
        for g in graphs.iter_mut() {
            for p in g
                .params
                .iter_mut()
                .filter(|p| !p.path.starts_with("teacher.") && under(&p.path, &path))
            {
                p.frozen = true;
            }
        }
        out.push(path);
    }
    let g0 = &*graphs[0];
    if !out.is_empty() && g0.params.iter().all(|p| p.frozen) {
        diags.push(
            Diag::new(
                "nnc::train",
                format!("`freeze` leaves nothing of {model} to train"),
                e.span,
                "freezes every parameter",
            )
            .help("freeze part of the model, e.g. `freeze: encoder`"),
        );
    }
    out
}

/// `lr_scale: { encoder: 0.1 }`, on `g` whose parameters `freeze` (the setting, when the run
/// has one) has frozen.
pub fn lr_scale(
    e: &Expr,
    model: &str,
    g: &Graph,
    freeze: Option<&Expr>,
    diags: &mut Vec<Diag>,
) -> Vec<(String, f64)> {
    let ExprKind::Map(entries) = &e.kind else {
        diags.push(
            Diag::new(
                "nnc::train",
                format!("lr_scale must be a map, found {}", consts::describe(e)),
                e.span,
                "expected { path: factor }",
            )
            .help("write e.g. `lr_scale: { encoder: 0.1 }`"),
        );
        return Vec::new();
    };
    let mut out: Vec<(String, f64)> = Vec::new();
    // Each key's span and value's, for the entries kept in `out`.
    let mut spans = Vec::new();
    for (i, (key, value)) in entries.iter().enumerate() {
        if let Some((first, _)) = entries[..i].iter().find(|(k, _)| k.name == key.name) {
            diags.push(
                Diag::new(
                    "nnc::arg",
                    format!("`{}` is given two lr multipliers", key.name),
                    key.span,
                    "given again here",
                )
                .also(first.span, "first given here")
                .help("keep one of the two"),
            );
            continue;
        }
        let factor = match consts::number(value) {
            Ok(v) if v >= 0.0 => v,
            Ok(v) => {
                diags.push(Diag::new(
                    "nnc::train",
                    format!("an lr multiplier cannot be negative, found {v}"),
                    value.span,
                    "must be ≥ 0",
                ));
                continue;
            }
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        if !g
            .params
            .iter()
            .any(|p| !p.path.starts_with("teacher.") && under(&p.path, &key.name))
        {
            diags.push(no_match(g, model, &key.name, key.span, "lr_scale"));
            continue;
        }
        out.push((key.name.clone(), factor));
        spans.push((key.span, value.span));
    }
    // As in training: the longest path that covers a parameter gives its multiplier.
    let governing = |path: &str| {
        out.iter()
            .enumerate()
            .filter(|(_, (p, _))| under(path, p))
            .max_by_key(|(_, (p, _))| p.len())
            .map(|(i, _)| i)
    };
    let scale = |path: &str| governing(path).map_or(1.0, |i| out[i].1);
    // A multiplier other than 0 for parameters that are all frozen contradicts `freeze`.
    for (i, (path, factor)) in out.iter().enumerate() {
        let governed: Vec<_> = g
            .params
            .iter()
            .filter(|p| !p.path.starts_with("teacher.") && governing(&p.path) == Some(i))
            .collect();
        if *factor == 0.0 || governed.is_empty() || !governed.iter().all(|p| p.frozen) {
            continue;
        }
        let (key, value) = spans[i];
        if governed.iter().all(|p| p.is_buffer()) {
            diags.push(
                Diag::new(
                    "nnc::train",
                    format!("`lr_scale` of `{path}` covers only running statistics"),
                    key.to(value),
                    "no parameter to scale",
                )
                .help(format!(
                    "a batch norm's running statistics are buffers that no optimizer trains, \
                     and one with `affine: false` has no weight or bias: remove `{path}` from \
                     `lr_scale`"
                )),
            );
            continue;
        }
        let mut d = Diag::new(
            "nnc::train",
            format!("`lr_scale` of `{path}` applies only to frozen parameters"),
            key.to(value),
            format!("a multiplier of {factor} for frozen parameters"),
        );
        if let Some(f) = freeze {
            d = d.also(f.span, "frozen here");
        }
        diags.push(d.help(format!(
            "a frozen parameter is not trained: remove `{path}` from `lr_scale`, or unfreeze \
             what it covers to train it at {factor} × lr"
        )));
    }
    let mut trained = g
        .params
        .iter()
        .filter(|p| !p.frozen && !p.path.starts_with("teacher."))
        .peekable();
    if trained.peek().is_some() && trained.all(|p| scale(&p.path) == 0.0) {
        diags.push(
            Diag::new(
                "nnc::train",
                format!("`lr_scale` leaves nothing of {model} to train"),
                e.span,
                "every trainable parameter's multiplier is 0",
            )
            .help("to keep part of the model as it is, freeze it, e.g. `freeze: encoder`"),
        );
    }
    out
}

/// Parameters present in both graphs under the same path must have the same shape for `init`.
pub fn init_compatible(
    g: &Graph,
    from: &[(String, Vec<usize>)],
    run: &str,
    span: Span,
) -> Result<(), Diag> {
    let mut shared = 0;
    for p in g.params.iter().filter(|p| !p.path.starts_with("teacher.")) {
        if let Some((_, dims)) = from.iter().find(|(path, _)| *path == p.path) {
            if *dims != p.dims {
                let show = |d: &[usize]| {
                    format!(
                        "[{}]",
                        d.iter()
                            .map(|x| x.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                return Err(Diag::new(
                    "nnc::train",
                    format!(
                        "cannot start from run `{run}`: `{}` is {} there but {} here",
                        p.path,
                        show(dims),
                        show(&p.dims)
                    ),
                    span,
                    "parameters are matched by path",
                )
                .help(
                    "give the differing layers different names with `as`, e.g. `dense(10) as head`",
                ));
            }
            shared += 1;
        }
    }
    if shared == 0 {
        return Err(Diag::new("nnc::train", format!("run `{run}` shares no parameter with this model"), span, "nothing to start from")
            .help("parameters are matched by path; use the same sub-model (e.g. `Encoder`) in both models"));
    }
    Ok(())
}
