//! Fixes for common syntax mistakes, judged from the offending token and its neighbours: which
//! bracket to close or remove, `=` for `:`, habits from other languages (`let`, `=>`, `**`, `;`).

use super::ast::Span;
use super::lex::{self, Kind, Tok, KEYWORDS};

const PIPE_HINT: &str = "a pipeline is written `|>`: `x |> relu`";

/// A fix when brackets are unbalanced at `tok`: a closer with no opener, a closer of the wrong
/// kind, or a token that can only mean the innermost open bracket was never closed (a closer of
/// an outer bracket, the next item, or an unexpected token on a later line).
pub fn bracket_fix(
    src: &str,
    toks: &[Tok],
    tok: Tok,
    expected: &[String],
) -> Option<(Option<(Span, String)>, String)> {
    let text = lex::text(src, tok);
    let stack = open_brackets(src, toks, tok.span.start);
    let still_open = |o: &Tok| {
        (
            o.span,
            format!("the `{}` opened here is still open", lex::text(src, *o)),
        )
    };
    let top = stack.last();
    if let Some(c) = text
        .chars()
        .next()
        .filter(|_| matches!(text, ")" | "]" | "}"))
    {
        let Some(top) = top else {
            return Some((
                None,
                format!("this `{text}` has no matching opening bracket"),
            ));
        };
        if closer(src, *top) == c {
            return None;
        }
        if stack.iter().any(|o| closer(src, *o) == c) {
            return Some((
                Some(still_open(top)),
                format!("add the missing `{}`", closer(src, *top)),
            ));
        }
        return Some((
            None,
            format!("remove this `{text}`: it closes no open bracket"),
        ));
    }
    let top = top?;
    let close = closer(src, *top);
    let prev_line_end = toks
        .iter()
        .rev()
        .find(|t| t.span.end <= tok.span.start)
        .map_or(0, |p| p.span.end);
    let new_line = src[prev_line_end..tok.span.start].contains('\n');
    let item_start = (KEYWORDS[..3].contains(&text) && new_line) || text == "{";
    if expected.contains(&format!("`{close}`"))
        && (item_start || (new_line && tok.kind != Kind::Punct))
    {
        return Some((Some(still_open(top)), format!("add the missing `{close}`")));
    }
    None
}

/// A fix for common mistakes, judged from the offending token and its neighbours.
pub fn hint(src: &str, toks: &[Tok], tok: Tok, expected: &[String]) -> Option<String> {
    let text = lex::text(src, tok);
    let idx = toks.iter().position(|t| *t == tok)?;
    let prev = idx.checked_sub(1).map(|i| toks[i]);
    let prev_text = prev.map_or("", |p| lex::text(src, p));
    let expects = |w: &str| expected.iter().any(|e| e == w);
    match text {
        "." if prev.is_some_and(|p| p.kind == Kind::Number) => {
            return Some(format!("write a digit after the point: `{prev_text}.0`"));
        }
        "." if src[tok.span.end..].starts_with(|c: char| c.is_ascii_digit()) => {
            return Some("write a digit before the point: `0.5`".into());
        }
        ";" => {
            return Some(
                "no `;` is needed: newlines (or commas) separate statements and settings".into(),
            )
        }
        "'" => return Some("strings are written with double quotes: \"...\"".into()),
        "=" if src[tok.span.end..].starts_with('>') => return Some(PIPE_HINT.into()),
        "|" | ">" => return Some(PIPE_HINT.into()),
        "->" if !expects("`->`") => return Some(PIPE_HINT.into()),
        "*" if prev_text == "*" && prev.is_some_and(|p| p.span.end == tok.span.start) => {
            return Some("there is no power operator: multiply, `x * x`".into());
        }
        "=" if prev.is_some_and(|p| p.kind == Kind::Word) && in_call_or_map(src, toks, tok) => {
            return Some(format!(
                "named arguments and entries use `:`: write `{prev_text}: ...`"
            ));
        }
        "," if in_parenthesized(src, toks, tok) => {
            // `betas: (0.9, 0.999)`, as PyTorch writes a tuple.
            return Some(
                "parentheses group one expression; a tuple is written as a list: `[a, b]`".into(),
            );
        }
        // `image: (1, 28, 28)`, as PyTorch prints a shape.
        "(" if expects("`[`") && matches!(prev_text, ":" | "->") => {
            return Some("shapes are written in square brackets: `[1, 28, 28]`".into());
        }
        "+" | "-" | "*" | "/" if pipe_before(src, toks, idx) => {
            return Some(format!(
                "`|>` binds loosest: put the pipeline in parentheses, `(x |> f) {text} y`"
            ));
        }
        _ => {}
    }
    // `freeze: encoder, head` followed by the next setting: after the comma, `head` reads as
    // a setting key, and the setting after it as the missing `:`.
    if expects("`:`")
        && idx >= 2
        && prev.is_some_and(|p| p.kind == Kind::Word)
        && lex::text(src, toks[idx - 2]) == ","
    {
        let p = prev.unwrap();
        let next_is_key = toks
            .get(idx + 1)
            .is_some_and(|n| matches!(lex::text(src, *n), ":" | "="));
        // A dotted path (`freeze: encoder, head.dense1`) cannot be a key, whatever follows.
        let dotted = text == "." && p.span.end == tok.span.start;
        let item = if dotted {
            let mut end = idx;
            while end + 1 < toks.len()
                && lex::text(src, toks[end]) == "."
                && toks[end + 1].kind == Kind::Word
                && toks[end].span.end == toks[end + 1].span.start
            {
                end += 2;
            }
            &src[p.span.start..toks[end - 1].span.end]
        } else {
            prev_text
        };
        // Only `freeze` takes a list of paths (written without brackets, as a Python habit);
        // after another setting (`batch: 64, steps`) the mistake is a value left out.
        let colon = (1..idx - 2)
            .rev()
            .find(|&j| lex::text(src, toks[j]) == ":")
            .filter(|&j| j + 1 < idx - 2 && lex::text(src, toks[j - 1]) == "freeze");
        if let Some(j) = colon {
            if dotted || (src[p.span.end..tok.span.start].contains('\n') && next_is_key) {
                let (first, last) = (toks[j + 1].span.start, toks[idx - 3].span.end);
                return Some(format!(
                    "after the `,`, `{item}` reads as a new setting; several paths are written \
                     as a list: `freeze: [{}, {item}]`",
                    &src[first..last]
                ));
            }
        }
    }
    // `batch: 64, steps 300`: a key and its value on one line, the `:` left out.
    if expects("`:`") && tok.kind != Kind::Punct {
        if let Some(p) = prev.filter(|p| p.kind == Kind::Word) {
            let starts_setting = idx < 2
                || matches!(lex::text(src, toks[idx - 2]), "," | "{")
                || src[toks[idx - 2].span.end..p.span.start].contains('\n');
            let line_end = src[tok.span.start..]
                .find('\n')
                .map_or(src.len(), |n| tok.span.start + n);
            let rest = src[tok.span.start..line_end].trim_end();
            let rest = rest.strip_suffix(',').unwrap_or(rest).trim_end();
            let same_line = !src[p.span.end..tok.span.start].contains('\n');
            if starts_setting && same_line {
                let value = if rest.contains(',') || rest.contains('}') || rest.len() > 40 {
                    "..."
                } else {
                    rest
                };
                return Some(format!(
                    "a setting is written `key: value`: write `{prev_text}: {value}`"
                ));
            }
        }
    }
    if tok.kind == Kind::Word && KEYWORDS.contains(&text) && expects("a name") {
        return Some(format!("`{text}` is a keyword; choose another name"));
    }
    if prev.is_some_and(|p| p.kind == (Kind::Str { closed: true }) && p.span.end == tok.span.start)
    {
        // `"a.gz, "b.gz"`: the first string swallowed the comma and ended at the wrong quote.
        return Some(format!(
            "the string {prev_text} ends right before this: is a `\"` missing or extra?"
        ));
    }
    let same_line = prev.is_some_and(|p| !src[p.span.end..tok.span.start].contains('\n'));
    if tok.kind != Kind::Punct
        && same_line
        && expects("`,`")
        && (prev_text == ")" || prev_text == "]" || prev.is_some_and(|p| p.kind != Kind::Punct))
    {
        return Some("separate items with `,`".into());
    }
    None
}

/// Whether a `|>` occurs among the tokens before `idx`, back to the start of the statement.
fn pipe_before(src: &str, toks: &[Tok], idx: usize) -> bool {
    for t in toks[..idx].iter().rev() {
        match lex::text(src, *t) {
            "|>" => return true,
            "=" | ":" | "(" | "{" | "[" | "," | "return" => return false,
            _ => {}
        }
    }
    false
}

/// The brackets still open before byte `pos`, outermost first.
pub fn open_brackets(src: &str, toks: &[Tok], pos: usize) -> Vec<Tok> {
    let mut stack: Vec<Tok> = Vec::new();
    for t in toks.iter().take_while(|t| t.span.start < pos) {
        match lex::text(src, *t) {
            "(" | "[" | "{" => stack.push(*t),
            ")" | "]" | "}" => {
                stack.pop();
            }
            _ => {}
        }
    }
    stack
}

/// Whether `tok` is inside call parentheses or a map (not directly in an item's body).
fn in_call_or_map(src: &str, toks: &[Tok], tok: Tok) -> bool {
    let stack = open_brackets(src, toks, tok.span.start);
    stack.len() >= 2 || stack.last().is_some_and(|t| lex::text(src, *t) == "(")
}

/// Whether the innermost bracket open at `tok` is a `(` that groups an expression, not one
/// that opens a call's arguments (a `(` right after a name).
fn in_parenthesized(src: &str, toks: &[Tok], tok: Tok) -> bool {
    let Some(open) = open_brackets(src, toks, tok.span.start).pop() else {
        return false;
    };
    if lex::text(src, open) != "(" {
        return false;
    }
    let before = toks.iter().rev().find(|t| t.span.end <= open.span.start);
    !before.is_some_and(|b| b.kind == Kind::Word && !KEYWORDS.contains(&lex::text(src, *b)))
}

/// The closing character of an opening bracket token.
pub fn closer(src: &str, open: Tok) -> char {
    match lex::text(src, open) {
        "(" => ')',
        "[" => ']',
        _ => '}',
    }
}
