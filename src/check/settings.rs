//! `key: value` blocks (`data` and `train`): unknown and repeated keys are reported once, and
//! the values are looked up by key.

use super::names::did_you_mean;
use crate::diag::Diag;
use crate::syntax::ast::{Expr, Setting};

/// Where a setting of Keras or PyTorch (or of the other block) goes in nnc, for a key unknown
/// to `block`: listing the block's keys would not say.
fn elsewhere(key: &str, block: &str) -> Option<String> {
    let train = block == "a train block";
    Some(match key {
        "metrics" if train => "the metrics are those of `eval`, e.g. `eval: every 1 epoch [loss, accuracy]`".into(),
        "validation_split" | "val_split" => "the part held out for testing is set in the data block: `split: 0.9` trains on 90% and tests on the rest".into(),
        "lr" | "learning_rate" | "weight_decay" if train => {
            let arg = if key == "weight_decay" { key } else { "lr" };
            format!("`{key}` is an argument of the optimizer: `optimizer: sgd({arg}: …)` or `adam({arg}: …)`")
        }
        "momentum" if train => {
            format!("`{key}` is an argument of sgd and rmsprop: `optimizer: sgd(lr: 0.01, {key}: …)`")
        }
        "nesterov" if train => {
            format!("`{key}` is an argument of sgd: `optimizer: sgd(lr: 0.01, {key}: …)`")
        }
        "eps" if train => {
            format!("`{key}` is an argument of adam, adamw and rmsprop: `optimizer: adam(lr: 1e-3, {key}: …)`")
        }
        "betas" if train => {
            format!("`{key}` is an argument of adam and adamw: `optimizer: adam(lr: 1e-3, {key}: …)`")
        }
        "alpha" | "centered" if train => {
            format!("`{key}` is an argument of rmsprop: `optimizer: rmsprop(lr: 0.01, {key}: …)`")
        }
        // Keras's `clipnorm`, Hugging Face's `max_grad_norm`, PyTorch's `max_norm`.
        "clipnorm" | "max_grad_norm" | "max_norm" | "grad_clip" | "clip_grad" | "gradient_clip_val" if train => {
            "the gradients' total norm is clipped with `clip_grad_norm: 1.0` (as `torch.nn.utils.clip_grad_norm_`)".into()
        }
        // PyTorch's `clip_grad_value_` and Keras's `clipvalue` clamp each element: another rule.
        "clip_grad_value" | "clipvalue" | "clip_value" | "gradient_clip_value" if train => {
            "nnc clips the gradients' total norm (`clip_grad_norm: 1.0`, as `torch.nn.utils.clip_grad_norm_`), not each value (`clip_grad_value_`)".into()
        }
        // Keras' `EarlyStopping(monitor="val_loss", patience=3)` as keys of their own.
        "patience" | "early_stop" | "earlystopping" | "early_stopping_patience" | "monitor" | "min_delta" | "restore_best_weights" | "restore_best" if train => {
            "early stopping is one setting, the metric it watches called with its patience: `early_stopping: loss(patience: 3)`".into()
        }
        // Keras' `model.fit(callbacks=[EarlyStopping(...)])`.
        "callbacks" if train => {
            "nnc has no callbacks; early stopping is a setting of the run: `early_stopping: loss(patience: 3)` (Keras' `EarlyStopping(monitor=\"val_loss\", patience=3)`)".into()
        }
        "label_smoothing" if train => {
            "`label_smoothing` is an argument of cross_entropy: `loss: cross_entropy(output, label, label_smoothing: 0.1)`".into()
        }
        "batch_size" if !train => "the batch size is set in the train block: `batch: 64`".into(),
        "batch" | "shuffle" | "epochs" | "steps" | "seed" | "eval" | "early_stopping" if !train => {
            format!("`{key}` belongs in the train block")
        }
        "split" | "normalize" if train => format!("`{key}` belongs in the data block"),
        _ => return None,
    })
}

/// The settings of one block, validated against the keys it may contain.
pub struct Settings<'a> {
    items: Vec<&'a Setting>,
}

impl<'a> Settings<'a> {
    /// `block` names the block in messages ("a data block", "a train block").
    pub fn new(
        settings: &'a [Setting],
        allowed: &[&str],
        block: &str,
        diags: &mut Vec<Diag>,
    ) -> Settings<'a> {
        let mut items: Vec<&Setting> = Vec::new();
        for s in settings {
            let key = s.key.name.as_str();
            if !allowed.contains(&key) {
                let help = match elsewhere(key, block)
                    .or_else(|| did_you_mean(key, allowed.iter().copied()))
                {
                    Some(h) => h,
                    None => format!(
                        "{block} accepts {}",
                        allowed
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                diags.push(
                    Diag::new(
                        "nnc::arg",
                        format!("unknown setting `{key}` in {block}"),
                        s.key.span,
                        "unknown setting",
                    )
                    .help(help),
                );
                continue;
            }
            if let Some(first) = items.iter().find(|i| i.key.name == key) {
                diags.push(
                    Diag::new(
                        "nnc::arg",
                        format!("`{key}` is set twice"),
                        s.key.span,
                        "set again here",
                    )
                    .also(first.key.span, "first set here")
                    .help("keep one of the two"),
                );
                continue;
            }
            items.push(s);
        }
        Settings { items }
    }

    pub fn get(&self, key: &str) -> Option<&'a Expr> {
        self.setting(key).map(|s| &s.value)
    }

    pub fn setting(&self, key: &str) -> Option<&'a Setting> {
        self.items.iter().find(|s| s.key.name == key).copied()
    }
}
