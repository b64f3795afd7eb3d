//! Small helpers for messages: "did you mean", snake_case instance names, shapes as people write them.

use crate::ir::{DType, Type};

/// Edit distance counting a swap of two neighbours as one edit (`rleu` → `relu`, `minst` →
/// `mnist`): the optimal-string-alignment variant of Damerau–Levenshtein.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The closest candidate to `name`, if it is close enough to be a plausible typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    let lower = name.to_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .filter_map(|c| {
            let cl = c.to_lowercase();
            let d = edit_distance(&lower, &cl);
            // `batch_size` for `batch`, `lr_scales` for `lr_scale`: a word around the right one.
            let extends = cl.len() >= 3
                && lower.len() >= 3
                && (lower.starts_with(&cl) || cl.starts_with(&lower));
            (d <= limit || extends).then_some((d, c))
        })
        // Ties go to the first name in alphabetical order, whatever order (a hash map's) the
        // candidates come in, so that a message does not change from one run to the next.
        .min_by_key(|&(d, c)| (d, c))
        .map(|(_, c)| c)
}

/// "did you mean `relu`?" when a candidate is close.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(name, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// `ConvNet` → `conv_net`, `Encoder` → `encoder`, `MLP2` → `mlp2`.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(*c);
        }
    }
    out
}

/// A per-sample shape as written in `.nn` files: `[64, 7, 7]`, `i32[64]`, `a class id`, `a scalar`.
pub fn show(t: &Type) -> String {
    if t.is_scalar() {
        return "a scalar".into();
    }
    if t.dims.is_empty() {
        return if t.dtype == DType::I32 {
            "a class id".into()
        } else {
            "one number".into()
        };
    }
    let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
    let prefix = if t.dtype == DType::I32 { "i32" } else { "" };
    format!("{prefix}[{}]", dims.join(", "))
}

/// `64×7×7`.
pub fn product(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    parts.join("×")
}

/// "1 input" / "3 inputs".
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tie_goes_to_the_same_name_in_any_order() {
        assert_eq!(closest("dense", ["tense", "dens"]), Some("dens"));
        assert_eq!(closest("dense", ["dens", "tense"]), Some("dens"));
    }

    #[test]
    fn distances_and_suggestions() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("rleu", "relu"), 1);
        assert_eq!(closest("minst", ["mnist", "cifar"]), Some("mnist"));
        assert_eq!(closest("dense2d", ["dense", "conv2d"]), Some("dense"));
        assert_eq!(closest("rleu", ["relu", "tanh"]), Some("relu"));
        assert_eq!(closest("banana", ["relu", "tanh"]), None);
        assert_eq!(
            closest("batch_size", ["batch", "seed", "steps"]),
            Some("batch")
        );
    }

    #[test]
    fn snake_names() {
        assert_eq!(snake_case("ConvNet"), "conv_net");
        assert_eq!(snake_case("Encoder"), "encoder");
        assert_eq!(snake_case("MLP"), "mlp");
        assert_eq!(snake_case("CNNTeacher"), "cnn_teacher");
        assert_eq!(snake_case("Net2"), "net2");
    }
}
