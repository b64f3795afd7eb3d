//! `key: value` blocks (`data` and `train`): unknown and repeated keys are reported once, and
//! the values are looked up by key.

use super::names::did_you_mean;
use crate::diag::Diag;
use crate::syntax::ast::{Expr, Setting};

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
                let help = match did_you_mean(key, allowed.iter().copied()) {
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
