//! Syntax errors: pest's failures turned into [`Diag`]s a person understands.
//!
//! pest reports the rules it tried at the furthest position it reached. We turn rule names into
//! words ("a name", "an expression", "`)`"), point at the offending token (or at the last token
//! when the file ends early), and add a fix where the mistake is a common one.

use super::ast::Span;
use super::hints::{bracket_fix, closer, hint, open_brackets};
use super::lex::{self, Kind, Tok, KEYWORDS, MAX_DEPTH};
use super::parser::Rule;
use crate::diag::Diag;
use pest::error::{Error, ErrorVariant, InputLocation};

const CODE: &str = "nnc::syntax";

/// Refuses brackets nested deeper than [`MAX_DEPTH`] before pest (which recurses) sees them.
pub fn check_nesting(src: &str) -> Result<(), Vec<Diag>> {
    let mut depth = 0usize;
    for t in lex::tokens(src) {
        match lex::text(src, t) {
            "(" | "[" | "{" => {
                depth += 1;
                if depth > MAX_DEPTH {
                    let d = Diag::new(
                        CODE,
                        format!("brackets are nested too deeply (more than {MAX_DEPTH} levels)"),
                        t.span,
                        "too deep",
                    )
                    .help("split the expression into several `name = ...` statements");
                    return Err(vec![d]);
                }
            }
            ")" | "]" | "}" => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Converts pest's error into one diagnostic.
pub fn from_pest(src: &str, e: &Error<Rule>) -> Diag {
    let toks = lex::tokens(src);
    let pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let rules = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        ErrorVariant::CustomError { message } => {
            // pest's own call or stack limit.
            let at = toks.iter().find(|t| t.span.end > pos).or(toks.last());
            let sp = at.map_or(Span::new(pos, pos), |t| t.span);
            return Diag::new(
                CODE,
                format!("the file is too complex to parse ({message})"),
                sp,
                "parsing stopped here",
            )
            .help("split long or deeply nested expressions into several statements");
        }
    };
    let (pos, expected) = expectation(e, pos, rules);
    let found = toks.iter().copied().find(|t| t.span.end > pos);

    // An unterminated string derails everything after it: report it first.
    let upto = found.map_or(usize::MAX, |f| f.span.start);
    if let Some(t) = toks
        .iter()
        .find(|t| t.kind == (Kind::Str { closed: false }) && t.span.start <= upto)
    {
        return Diag::new(
            CODE,
            "unterminated string",
            t.span,
            "this string is not closed",
        )
        .help("close it with `\"` on the same line");
    }

    // Inside a call on a dotted name (`nn.Linear(784, 10)`), whatever pest stumbled on; or at
    // its `(`, where a setting's value is a dotted path (`loss: nn.CrossEntropyLoss()`).
    let dotted = found.and_then(|t| {
        let at_open = &src[t.span.start..t.span.end] == "(";
        at_open
            .then(|| super::frameworks::dotted_before(src, &toks, t.span.start))
            .flatten()
            .or_else(|| super::frameworks::dotted_call(src, &toks, t.span.start))
            .or_else(|| super::frameworks::dotted_call_on_line(src, &toks, t.span.start))
    });
    if let Some(d) = dotted {
        return d;
    }
    let mut expected = expected;
    in_block_context(src, &toks, pos, &mut expected);
    let list = join_or(&expected);
    let Some(tok) = found else {
        // The file ended early: point at the last token.
        let sp = toks.last().map_or(Span::new(pos, pos), |t| t.span);
        let mut d = Diag::new(
            CODE,
            format!("unexpected end of file, expected {list}"),
            sp,
            format!("expected {list} after this"),
        );
        if let Some(open) = open_brackets(src, &toks, src.len()).last() {
            d = d
                .also(
                    open.span,
                    format!("this `{}` is never closed", lex::text(src, *open)),
                )
                .help(format!("add the missing `{}`", closer(src, *open)));
        }
        return d;
    };
    let what = describe(src, tok);
    let mut d = Diag::new(
        CODE,
        format!("expected {list}, found {what}"),
        tok.span,
        format!("unexpected {what}"),
    );
    if let Some((related, fix)) = bracket_fix(src, &toks, tok, &expected) {
        if let Some((sp, label)) = related {
            d = d.also(sp, label);
        }
        d = d.help(fix);
    } else if let Some(h) = hint(src, &toks, tok, &expected) {
        d = d.help(h);
    }
    d
}

/// Where the parse failed and what could have come there, in words. pest's rule positives name
/// rules; the literal tokens (`)`, `:`) come from its detailed parse attempts, which may reach
/// further than any rule (then only the literals are right).
fn expectation(e: &Error<Rule>, pos: usize, rules: Vec<Rule>) -> (usize, Vec<String>) {
    let attempts = e.parse_attempts();
    let mut literals: Vec<String> = attempts
        .as_ref()
        .map(|a| a.expected_tokens())
        .unwrap_or_default()
        .iter()
        .map(|t| t.to_string())
        .collect();
    let listed = |t: &String| is_listed_punct(t) || KEYWORDS.contains(&t.as_str());
    let max = attempts.as_ref().map_or(pos, |a| a.max_position);
    let (pos, rules) = if max > pos && literals.iter().any(listed) {
        literals.retain(listed);
        (max, Vec::new())
    } else {
        if max == pos {
            literals.retain(|t| is_listed_punct(t));
        } else {
            literals.clear();
        }
        (pos, rules)
    };
    let literals = literals.into_iter().map(|t| format!("`{t}`")).collect();
    (pos, expected_words(&rules, literals))
}

/// Directly inside a model body or a `data`/`train` block, says "a statement" or "a setting"
/// rather than the pieces that may start one.
fn in_block_context(src: &str, toks: &[Tok], pos: usize, expected: &mut Vec<String>) {
    let mut stack: Vec<usize> = Vec::new();
    let mut item = "";
    for (i, t) in toks
        .iter()
        .enumerate()
        .take_while(|(_, t)| t.span.start < pos)
    {
        match lex::text(src, *t) {
            "(" | "[" | "{" => stack.push(i),
            ")" | "]" | "}" => {
                stack.pop();
            }
            w @ ("model" | "data" | "train") if stack.is_empty() => item = w,
            _ => {}
        }
    }
    if stack.len() != 1 || lex::text(src, toks[stack[0]]) != "{" {
        return;
    }
    let has = |e: &Vec<String>, w: &str| e.iter().any(|x| x == w);
    let (trigger, word, drop): (&str, &str, &[&str]) = match item {
        "model" => (
            "`return`",
            "a statement",
            &["`return`", "an expression", "a name", "`,`", "a statement"],
        ),
        "data" | "train" => (
            "a name",
            "a setting `key: value`",
            &["a name", "`,`", "a setting `key: value`"],
        ),
        _ => return,
    };
    if has(expected, trigger) || has(expected, word) {
        expected.retain(|w| !drop.contains(&w.as_str()) && w != "`}`");
        // Closing the block is always possible where a statement or setting may start.
        expected.push("`}`".to_string());
        expected.push(word.to_string());
    }
}

/// Punctuation worth naming in "expected ..." (operators are covered by the rule names).
fn is_listed_punct(t: &str) -> bool {
    matches!(
        t,
        "(" | ")" | "[" | "]" | "{" | "}" | "," | ":" | "=" | "->"
    )
}

/// The words for what pest expected, most specific first, without duplicates. Operators that
/// could continue an expression are dropped when something else was also possible: they are
/// rarely the fix.
fn expected_words(rules: &[Rule], literals: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = literals;
    let mut words: Vec<&str> = rules.iter().filter_map(|r| rule_word(*r)).collect();
    if rules.contains(&Rule::file) {
        words.extend(["`model`", "`data`", "`train`"]);
    }
    if words.contains(&"an argument") {
        words.retain(|w| *w != "an expression");
    }
    if words.contains(&"an expression") || words.contains(&"an argument") {
        // These all start an expression.
        words.retain(|w| !matches!(*w, "a number" | "a string" | "a name"));
        out.retain(|w| !matches!(w.as_str(), "`(`" | "`[`" | "`{`"));
    }
    if words
        .iter()
        .any(|w| matches!(*w, "a statement" | "a setting `key: value`"))
    {
        // Statements and settings may be separated by an optional comma; it is never the fix.
        words.retain(|w| !matches!(*w, "an expression" | "a name" | "`return`"));
        out.retain(|w| !matches!(w.as_str(), "`,`" | "`(`" | "`[`" | "`{`"));
    }
    // "end of file" reads best last.
    words.sort_by_key(|w| *w == "end of file");
    for w in words {
        out.push(w.to_string());
    }
    let mut seen = Vec::new();
    out.retain(|w| {
        let new = !seen.contains(w);
        seen.push(w.clone());
        new
    });
    let is_op = |w: &String| matches!(w.as_str(), "an operator" | "`|>`" | "`as`" | "`.`");
    if out.iter().any(|w| !is_op(w)) {
        out.retain(|w| !is_op(w));
    }
    if out.is_empty() {
        out.push("something else".to_string());
    }
    out
}

fn rule_word(r: Rule) -> Option<&'static str> {
    use Rule::*;
    Some(match r {
        EOI => "end of file",
        model | kw_model => "`model`",
        data | kw_data => "`data`",
        train | kw_train => "`train`",
        kw_on => "`on`",
        kw_return => "`return`",
        return_stmt => "a statement",
        kw_as | alias => "`as`",
        let_stmt | bad_colon_stmt | bad_expr_stmt => "a statement",
        ident | word | path | run_name | dtype | arg_name | map_key => "a name",
        number => "a number",
        string | str_body => "a string",
        expr | sum | product | unary | neg | paren | list | map | call | every | kw_every => {
            "an expression"
        }
        pipe_op => "`|>`",
        add_op | mul_op => "an operator",
        stage => "a layer or model",
        input => "an input like `x: [784]`",
        type_expr => "a shape like `[784]`",
        setting | bad_eq_setting => "a setting `key: value`",
        entry => "an entry `key: value`",
        arg => "an argument",
        unit => "`epoch` or `step`",
        metrics => "a list of metrics",
        _ => return None,
    })
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
    }
}

fn describe(src: &str, t: Tok) -> String {
    let text = lex::text(src, t);
    match t.kind {
        Kind::Word if KEYWORDS.contains(&text) => format!("keyword `{text}`"),
        Kind::Word => format!("`{text}`"),
        Kind::Number => format!("number `{text}`"),
        Kind::Str { .. } => "a string".to_string(),
        Kind::Punct => format!("`{text}`"),
    }
}
