//! Hints for a path that names a recurrent layer's tensor as PyTorch names it
//! (`lstm1.weight_hh_l0`), with layer 0's index (`lstm1.w_hh_l0`), or one stacked layer as a
//! whole (`lstm1.l1`). Layer 0 keeps a single layer's names and layer k ≥ 1 appends `_l{k}` to
//! each, so the closest spelling is often the wrong layer, and no prefix covers one stacked
//! layer alone.

use crate::ir::Graph;

/// The hint for `path`, which matches no parameter of `g`, when it reaches into a recurrent
/// layer of `g` (one with a `w_hh`) in one of the ways above.
pub fn hint(g: &Graph, path: &str) -> Option<String> {
    let (layer, last) = path.rsplit_once('.')?;
    let tensors: Vec<&str> = g
        .params
        .iter()
        .filter_map(|p| p.path.strip_prefix(layer)?.strip_prefix('.'))
        .filter(|t| !t.contains('.'))
        .collect();
    if !tensors.contains(&"w_hh") {
        return None;
    }
    let layers = 1 + tensors
        .iter()
        .filter(|t| t.starts_with("w_hh_l") && !t.ends_with("_reverse"))
        .count();
    let (stem, reverse) = match last.strip_suffix("_reverse") {
        Some(s) => (s, "_reverse"),
        None => (last, ""),
    };
    let out_of_range = || match layers - 1 {
        0 => format!("`{layer}` is a single layer: its tensors have no `_l{{k}}`"),
        last => format!(
            "`{layer}` stacks {layers} layers, 0 to {last}: layer {last}'s tensors end in \
             `_l{last}`"
        ),
    };
    // `lstm1.l1`, `lstm1.layer1`: a stacked layer as a whole.
    if let Some(k) = ["layer_", "layer", "l"]
        .iter()
        .find_map(|p| stem.strip_prefix(p)?.parse::<usize>().ok())
    {
        if k >= layers {
            return Some(out_of_range());
        }
        let of_layer: Vec<String> = tensors
            .iter()
            .filter(|t| layer_of(t) == k)
            .map(|t| format!("`{layer}.{t}`"))
            .collect();
        return Some(format!(
            "no path covers one stacked layer alone: layer {k} of `{layer}` is {}; name each",
            of_layer.join(", ")
        ));
    }
    let (name, k) = stem.rsplit_once("_l")?;
    let k: usize = k.parse().ok()?;
    // PyTorch's names, of nnc's tensor in the same role; `w_xh_l0` as written.
    let nnc_name = match name {
        "weight_ih" => "w_xh",
        "weight_hh" => "w_hh",
        // A GRU keeps both biases, as PyTorch; an rnn and an lstm sum them into one.
        "bias_ih" if tensors.contains(&"bias_xh") => "bias_xh",
        "bias_hh" if tensors.contains(&"bias_hh") => "bias_hh",
        "bias_ih" | "bias_hh" => "bias",
        n => *tensors.iter().find(|t| **t == n)?,
    };
    if k >= layers {
        return Some(out_of_range());
    }
    let suffix = if k == 0 {
        String::new()
    } else {
        format!("_l{k}")
    };
    let nnc = format!("{layer}.{nnc_name}{suffix}{reverse}");
    Some(match name {
        "weight_ih" | "weight_hh" => format!("PyTorch's `{last}` is nnc's `{nnc}`, transposed"),
        "bias_ih" | "bias_hh" if nnc_name == "bias" => format!(
            "PyTorch's `bias_ih_l{k}{reverse}` and `bias_hh_l{k}{reverse}` sum to nnc's one `{nnc}`"
        ),
        "bias_ih" | "bias_hh" => format!("PyTorch's `{last}` is nnc's `{nnc}`"),
        _ => format!("layer 0 keeps a single layer's names, without `_l0`: `{nnc}`"),
    })
}

/// The stacked layer a recurrent tensor's name belongs to: k for `w_hh_l{k}` (or
/// `w_hh_l{k}_reverse`), 0 for a name without `_l{k}`.
fn layer_of(tensor: &str) -> usize {
    let stem = tensor.strip_suffix("_reverse").unwrap_or(tensor);
    stem.rsplit_once("_l")
        .and_then(|(_, k)| k.parse().ok())
        .unwrap_or(0)
}
