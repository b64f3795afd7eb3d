//! Recovery after a syntax error, so that one run reports the errors of several items.
//!
//! pest stops at the first error. We then blank out the item holding it (spaces in place of every
//! character but newlines, so that all byte offsets stay valid) and parse again, up to
//! [`MAX_ERRORS`] times. Items are delimited by `model`, `data` or `train` at the start of a line
//! and followed by a name, which is how every item starts in practice.

use super::ast::Span;
use super::lex::{self, Kind, Tok};

/// The most syntax errors reported for one file.
pub const MAX_ERRORS: usize = 10;

/// The byte range of the item to blank out after an error at byte `at`, or `None` when nothing
/// is left to blank (no progress is possible).
pub fn item_around(src: &str, at: usize) -> Option<Span> {
    let toks = lex::tokens(src);
    let starts: Vec<usize> = (0..toks.len())
        .filter(|&i| starts_item(src, &toks, i))
        .map(|i| toks[i].span.start)
        .collect();
    let end_of = |from: usize| {
        starts
            .iter()
            .copied()
            .find(|&s| s > from)
            .unwrap_or(src.len())
    };
    let region = match starts.iter().position(|&s| s == at) {
        // The error is at the start of an item: the item before it is the unfinished one.
        Some(k) => Span::new(if k == 0 { 0 } else { starts[k - 1] }, at),
        None => {
            let start = starts.iter().copied().rfind(|&s| s <= at).unwrap_or(0);
            Span::new(start, end_of(at))
        }
    };
    let has_tokens = toks
        .iter()
        .any(|t| t.span.start >= region.start && t.span.start < region.end);
    has_tokens.then_some(region)
}

fn starts_item(src: &str, toks: &[Tok], i: usize) -> bool {
    let t = toks[i];
    let line_start = src[..t.span.start].rfind('\n').map_or(0, |n| n + 1);
    matches!(lex::text(src, t), "model" | "data" | "train")
        && src[line_start..t.span.start].trim().is_empty()
        && toks.get(i + 1).is_some_and(|n| n.kind == Kind::Word)
}

/// `src` with the bytes of `region` replaced by spaces, newlines kept.
pub fn blank(src: &str, region: Span) -> String {
    let mut out = String::with_capacity(src.len());
    out.push_str(&src[..region.start]);
    for c in src[region.start..region.end].chars() {
        if c == '\n' {
            out.push('\n');
        } else {
            // Keep the byte length of every character so that later offsets are unchanged.
            out.extend(std::iter::repeat_n(' ', c.len_utf8()));
        }
    }
    out.push_str(&src[region.end..]);
    out
}
