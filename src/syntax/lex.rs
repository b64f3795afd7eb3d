//! A small tokenizer over the raw text, independent of pest. It never fails; it serves to check
//! bracket nesting before parsing (so that pest's recursion stays shallow) and to describe the
//! token at which a syntax error occurred.

use super::ast::Span;

/// The deepest nesting of brackets, and of expressions, that the parser accepts.
pub const MAX_DEPTH: usize = 256;

/// Words that cannot name a model, input, binding, data source, run or alias.
pub const KEYWORDS: [&str; 8] = [
    "model", "data", "train", "on", "return", "as", "every", "from",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An identifier or keyword.
    Word,
    Number,
    /// A string literal; `closed` is false when the line ends before the closing quote.
    Str {
        closed: bool,
    },
    /// An operator or punctuation: `|>`, `->`, or one character.
    Punct,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tok {
    pub kind: Kind,
    pub span: Span,
}

/// The byte offset of the first character at or after `pos` that is not whitespace or comment.
pub fn skip_trivia(src: &str, mut pos: usize) -> usize {
    let b = src.as_bytes();
    while pos < b.len() {
        match b[pos] {
            b' ' | b'\t' | b'\r' | b'\n' => pos += 1,
            // A byte-order mark, as some editors write at the start of a file.
            0xEF if src[pos..].starts_with('\u{FEFF}') => pos += 3,
            b'#' => pos = line_end(src, pos),
            b'/' if b.get(pos + 1) == Some(&b'/') => pos = line_end(src, pos),
            _ => break,
        }
    }
    pos
}

fn line_end(src: &str, pos: usize) -> usize {
    src[pos..].find('\n').map_or(src.len(), |i| pos + i)
}

/// The token starting at or after `pos` (after whitespace and comments), if any.
pub fn token_at(src: &str, pos: usize) -> Option<Tok> {
    let start = skip_trivia(src, pos.min(src.len()));
    let rest = src.get(start..)?;
    let c = rest.chars().next()?;
    let (kind, len) = if c.is_ascii_alphabetic() || c == '_' {
        (
            Kind::Word,
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len()),
        )
    } else if c.is_ascii_digit() {
        (Kind::Number, number_len(rest))
    } else if c == '"' {
        string_len(rest)
    } else if rest.starts_with("|>") || rest.starts_with("->") {
        (Kind::Punct, 2)
    } else {
        (Kind::Punct, c.len_utf8())
    };
    Some(Tok {
        kind,
        span: Span::new(start, start + len),
    })
}

fn number_len(s: &str) -> usize {
    let b = s.as_bytes();
    let digits = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut i = digits(0);
    if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i = digits(i + 1);
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let j = if matches!(b.get(i + 1), Some(b'+' | b'-')) {
            i + 2
        } else {
            i + 1
        };
        if b.get(j).is_some_and(u8::is_ascii_digit) {
            i = digits(j);
        }
    }
    i
}

fn string_len(s: &str) -> (Kind, usize) {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            '\n' => return (Kind::Str { closed: false }, i),
            '"' if !escaped => return (Kind::Str { closed: true }, i + 1),
            '\\' => escaped = !escaped,
            _ => escaped = false,
        }
    }
    (Kind::Str { closed: false }, s.len())
}

/// All the tokens of the text, in order.
pub fn tokens(src: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(t) = token_at(src, pos) {
        pos = t.span.end;
        out.push(t);
    }
    out
}

/// The text of a token.
pub fn text(src: &str, t: Tok) -> &str {
    &src[t.span.start..t.span.end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(Kind, &str)> {
        tokens(src)
            .into_iter()
            .map(|t| (t.kind, text(src, t)))
            .collect()
    }

    #[test]
    fn tokens_skip_whitespace_and_both_comment_styles() {
        let src = "x |> dense(1e-4) // c\n# d\n-> \"a\\\"b\" 2.5E+3 1.x 1e é";
        let got = kinds(src);
        let want = [
            (Kind::Word, "x"),
            (Kind::Punct, "|>"),
            (Kind::Word, "dense"),
            (Kind::Punct, "("),
            (Kind::Number, "1e-4"),
            (Kind::Punct, ")"),
            (Kind::Punct, "->"),
            (Kind::Str { closed: true }, "\"a\\\"b\""),
            (Kind::Number, "2.5E+3"),
            (Kind::Number, "1"),
            (Kind::Punct, "."),
            (Kind::Word, "x"),
            (Kind::Number, "1"),
            (Kind::Word, "e"),
            (Kind::Punct, "é"),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn an_unclosed_string_ends_at_the_line_end() {
        let got = kinds("\"abc\nx");
        assert_eq!(
            got,
            [(Kind::Str { closed: false }, "\"abc"), (Kind::Word, "x")]
        );
        assert_eq!(kinds("\"a\\"), [(Kind::Str { closed: false }, "\"a\\")]);
    }

    #[test]
    fn token_at_past_the_end_is_none() {
        assert_eq!(token_at("x  ", 1), None);
        assert_eq!(token_at("x", 5), None);
        assert_eq!(token_at("x // only a comment", 1), None);
    }
}
