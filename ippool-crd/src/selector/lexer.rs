//! Tokens of Calico's selector language.
//!
//! The rules follow Calico's tokenizer: only space and tab are whitespace;
//! strings are single- or double-quoted with no escapes; a label is a run of
//! `[A-Za-z0-9_./-]`; the word operators (`in`, `not in`, `contains`,
//! `starts with`, `ends with`) are only recognised right after a label, so
//! a label may itself be called `in`.

use super::SelectorError;

/// Calico refuses labels longer than this.
pub(crate) const MAX_LABEL_LEN: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    Label(String),
    Str(String),
    LBrace,
    RBrace,
    Comma,
    Eq,
    Ne,
    In,
    NotIn,
    Contains,
    StartsWith,
    EndsWith,
    Not,
    All,
    Global,
    Has(String),
    LParen,
    RParen,
    And,
    Or,
    Eof,
}

impl Tok {
    /// How the token reads in an error message.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Label(l) => format!("label {l:?}"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::Comma => "','".into(),
            Tok::Eq => "'=='".into(),
            Tok::Ne => "'!='".into(),
            Tok::In => "'in'".into(),
            Tok::NotIn => "'not in'".into(),
            Tok::Contains => "'contains'".into(),
            Tok::StartsWith => "'starts with'".into(),
            Tok::EndsWith => "'ends with'".into(),
            Tok::Not => "'!'".into(),
            Tok::All => "'all()'".into(),
            Tok::Global => "'global()'".into(),
            Tok::Has(l) => format!("'has({l})'"),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::And => "'&&'".into(),
            Tok::Or => "'||'".into(),
            Tok::Eof => "end of selector".into(),
        }
    }
}

/// A token and the byte offset where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spanned {
    pub(crate) tok: Tok,
    pub(crate) at: usize,
}

pub(crate) fn is_label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

/// Splits `input` into tokens; the last one is always [`Tok::Eof`].
pub(crate) fn tokenize(input: &str) -> Result<Vec<Spanned>, SelectorError> {
    let bytes = input.as_bytes();
    let mut out: Vec<Spanned> = Vec::new();
    let mut i = 0;
    let err = |at: usize, msg: String| SelectorError::new(input, at, msg);
    loop {
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t') {
            i += 1;
        }
        let Some(&c) = bytes.get(i) else {
            out.push(Spanned {
                tok: Tok::Eof,
                at: i,
            });
            return Ok(out);
        };
        let start = i;
        let after_label = matches!(
            out.last(),
            Some(Spanned {
                tok: Tok::Label(_),
                ..
            })
        );
        let tok = match c {
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            b'{' => {
                i += 1;
                Tok::LBrace
            }
            b'}' => {
                i += 1;
                Tok::RBrace
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b'"' | b'\'' => {
                let body = &input[i + 1..];
                let Some(len) = body.find(c as char) else {
                    return Err(err(
                        start,
                        format!("unterminated string: no closing {}", c as char),
                    ));
                };
                i += len + 2;
                Tok::Str(body[..len].to_string())
            }
            b'=' => {
                if bytes.get(i + 1) == Some(&b'=') {
                    i += 2;
                    Tok::Eq
                } else {
                    return Err(err(
                        start,
                        "expected '==' (a single '=' is not an operator)".into(),
                    ));
                }
            }
            b'!' => {
                if bytes.get(i + 1) == Some(&b'=') {
                    i += 2;
                    Tok::Ne
                } else {
                    i += 1;
                    Tok::Not
                }
            }
            b'&' => {
                if bytes.get(i + 1) == Some(&b'&') {
                    i += 2;
                    Tok::And
                } else {
                    return Err(err(start, "expected '&&'".into()));
                }
            }
            b'|' => {
                if bytes.get(i + 1) == Some(&b'|') {
                    i += 2;
                    Tok::Or
                } else {
                    return Err(err(start, "expected '||'".into()));
                }
            }
            _ if after_label => {
                let (tok, len) = word_operator(&input[i..]).ok_or_else(|| {
                    let label = match out.last() {
                        Some(Spanned {
                            tok: Tok::Label(l), ..
                        }) => l.clone(),
                        _ => String::new(),
                    };
                    err(
                        start,
                        format!(
                            "expected an operator after label {label:?} (==, !=, in, not in, \
                             contains, starts with, ends with)"
                        ),
                    )
                })?;
                i += len;
                tok
            }
            _ => {
                let rest = &input[i..];
                if let Some(after) = rest.strip_prefix("has(") {
                    let mut j = i + 4 + leading_ws(after);
                    let (label, len) = identifier(input, j)?;
                    j += len;
                    j += leading_ws(&input[j..]);
                    if bytes.get(j) != Some(&b')') {
                        return Err(err(j, format!("expected ')' to close has({label}")));
                    }
                    i = j + 1;
                    Tok::Has(label)
                } else if let Some(tok) = empty_call(rest, "all(", Tok::All)
                    .or_else(|| empty_call(rest, "global(", Tok::Global))
                {
                    let (tok, len) = tok.map_err(|(off, msg)| err(i + off, msg))?;
                    i += len;
                    tok
                } else {
                    let (label, len) = identifier(input, i)?;
                    i += len;
                    Tok::Label(label)
                }
            }
        };
        out.push(Spanned { tok, at: start });
    }
}

/// `all()` / `global()`, allowing blanks inside the parentheses.
/// Returns the token and bytes consumed, or an (offset, message) error.
#[allow(clippy::type_complexity)]
fn empty_call(rest: &str, prefix: &str, tok: Tok) -> Option<Result<(Tok, usize), (usize, String)>> {
    let after = rest.strip_prefix(prefix)?;
    let ws = leading_ws(after);
    let close = prefix.len() + ws;
    if rest.as_bytes().get(close) == Some(&b')') {
        Some(Ok((tok, close + 1)))
    } else {
        Some(Err((
            close,
            format!("expected ')' to close {prefix} ({prefix}) takes no arguments)"),
        )))
    }
}

fn leading_ws(s: &str) -> usize {
    s.bytes().take_while(|b| matches!(b, b' ' | b'\t')).count()
}

/// A label starting at byte `at` of `input`: its text and length.
fn identifier(input: &str, at: usize) -> Result<(String, usize), SelectorError> {
    let rest = input.get(at..).unwrap_or("");
    let len = rest.bytes().take_while(|b| is_label_byte(*b)).count();
    if len == 0 {
        let found = match rest.chars().next() {
            Some(c) => format!("{c:?}"),
            None => "end of selector".to_string(),
        };
        return Err(SelectorError::new(
            input,
            at,
            format!("expected a label name (letters, digits, '_', '.', '/', '-'), found {found}"),
        ));
    }
    if len > MAX_LABEL_LEN {
        return Err(SelectorError::new(
            input,
            at,
            format!("label is {len} characters long; the limit is {MAX_LABEL_LEN}"),
        ));
    }
    Ok((rest[..len].to_string(), len))
}

/// The word operators that may follow a label. Multi-word ones may have
/// blanks (or nothing) between the words; each must end at a word boundary.
fn word_operator(rest: &str) -> Option<(Tok, usize)> {
    let candidates: [(&[&str], Tok); 5] = [
        (&["contains"], Tok::Contains),
        (&["starts", "with"], Tok::StartsWith),
        (&["ends", "with"], Tok::EndsWith),
        (&["not", "in"], Tok::NotIn),
        (&["in"], Tok::In),
    ];
    'next: for (words, tok) in candidates {
        let mut pos = 0;
        for (n, word) in words.iter().enumerate() {
            if !rest[pos..].starts_with(word) {
                continue 'next;
            }
            pos += word.len();
            if n + 1 < words.len() {
                pos += leading_ws(&rest[pos..]);
            }
        }
        if rest.as_bytes().get(pos).is_some_and(|b| is_label_byte(*b)) {
            continue;
        }
        return Some((tok, pos));
    }
    None
}
