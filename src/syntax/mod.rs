//! Stage 1: the `.nn` text to an AST ([`ast`]), with a pest grammar (`grammar/nn.pest`).
//!
//! [`parse`] never panics: over-deep nesting is refused before pest runs, pest's errors are turned
//! into [`Diag`]s that name what was expected in words and point at the offending token, and
//! common mistakes accepted by the grammar's error productions get a precise message and a fix.
//! After a syntax error the item holding it is set aside and the rest of the file parsed again,
//! so that the errors of several items come out together, in source order.

pub mod ast;
mod error;
mod expr;
pub mod frameworks;
mod hints;
mod lex;
mod parser;
mod print;
mod recover;

use crate::diag::Diag;

pub use print::print_ast;

/// Parses a whole `.nn` file. Syntax errors come back as diagnostics with code `nnc::syntax`.
pub fn parse(src: &str) -> Result<ast::File, Vec<Diag>> {
    // Needed for the literal tokens (`)`, `:`) named in "expected ..." messages.
    pest::set_error_detail(true);
    error::check_nesting(src)?;
    let mut text = src.to_string();
    let mut diags: Vec<Diag> = Vec::new();
    loop {
        match parser::parse_tree(&text) {
            Ok(pairs) => {
                let built = parser::build_file(pairs);
                if diags.is_empty() {
                    return built;
                }
                diags.extend(built.err().unwrap_or_default());
                break;
            }
            Err(e) => {
                let d = error::from_pest(&text, &e);
                let region = recover::item_around(&text, d.span.start);
                diags.push(d);
                match region {
                    Some(r) if diags.len() < recover::MAX_ERRORS => text = recover::blank(&text, r),
                    _ => break,
                }
            }
        }
    }
    diags.sort_by_key(|d| d.span.start);
    Err(diags)
}
