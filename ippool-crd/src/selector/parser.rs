//! Recursive-descent parser for selectors. Precedence, loosest first:
//! `||`, `&&`, then a single (possibly `!`-negated) operation or a
//! parenthesised expression.

use std::collections::BTreeSet;

use super::lexer::{Spanned, Tok};
use super::{Expr, SelectorError};

/// Parenthesis nesting deeper than this is refused rather than risking the
/// stack on hostile input. Real selectors nest two or three deep.
pub(crate) const MAX_DEPTH: usize = 64;

pub(crate) struct Parser<'a> {
    input: &'a str,
    toks: Vec<Spanned>,
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    pub(crate) fn new(input: &'a str, toks: Vec<Spanned>) -> Self {
        Self {
            input,
            toks,
            pos: 0,
            depth: 0,
        }
    }

    /// Parses the whole token stream. An empty selector selects everything,
    /// as in Calico.
    pub(crate) fn parse_all(mut self) -> Result<Expr, SelectorError> {
        if self.peek().tok == Tok::Eof {
            return Ok(Expr::All);
        }
        let expr = self.or_expr()?;
        let next = self.peek();
        if next.tok != Tok::Eof {
            let msg = match next.tok {
                Tok::RParen => "unmatched ')'".to_string(),
                _ => format!(
                    "unexpected {} after a complete expression; join expressions with && or ||",
                    next.tok.describe()
                ),
            };
            return Err(self.err_at(next.at, msg));
        }
        Ok(expr)
    }

    fn peek(&self) -> &Spanned {
        // The lexer always ends the stream with Eof and we never advance past it.
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> Spanned {
        let t = self.peek().clone();
        if t.tok != Tok::Eof {
            self.pos += 1;
        }
        t
    }

    fn err_at(&self, at: usize, msg: impl Into<String>) -> SelectorError {
        SelectorError::new(self.input, at, msg.into())
    }

    fn or_expr(&mut self) -> Result<Expr, SelectorError> {
        let mut terms = vec![self.and_expr()?];
        while self.peek().tok == Tok::Or {
            self.bump();
            terms.push(self.and_expr()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn and_expr(&mut self) -> Result<Expr, SelectorError> {
        let mut terms = vec![self.operation()?];
        while self.peek().tok == Tok::And {
            self.bump();
            terms.push(self.operation()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn operation(&mut self) -> Result<Expr, SelectorError> {
        let mut negated = false;
        while self.peek().tok == Tok::Not {
            self.bump();
            negated = !negated;
        }
        let t = self.bump();
        let expr = match t.tok {
            Tok::Has(label) => Expr::Has(label),
            Tok::All => Expr::All,
            Tok::Global => Expr::Global,
            Tok::Label(label) => self.comparison(label)?,
            Tok::LParen => {
                if self.depth >= MAX_DEPTH {
                    return Err(
                        self.err_at(t.at, format!("parentheses nest more than {MAX_DEPTH} deep"))
                    );
                }
                self.depth += 1;
                let inner = self.or_expr()?;
                self.depth -= 1;
                let close = self.bump();
                if close.tok != Tok::RParen {
                    return Err(self.err_at(
                        close.at,
                        format!(
                            "expected ')' to close the '(' at column {}, found {}",
                            SelectorError::column_of(self.input, t.at),
                            close.tok.describe()
                        ),
                    ));
                }
                inner
            }
            other => {
                return Err(self.err_at(
                    t.at,
                    format!(
                        "expected a label, has(...), all(), '(' or '!', found {}",
                        other.describe()
                    ),
                ));
            }
        };
        // `!(!x)` is `x`; folding it keeps the canonical text a fixed point.
        Ok(match (negated, expr) {
            (false, e) => e,
            (true, Expr::Not(inner)) => *inner,
            (true, e) => Expr::Not(Box::new(e)),
        })
    }

    /// `label <op> 'value'` or `label [not] in {'a', 'b'}`.
    fn comparison(&mut self, label: String) -> Result<Expr, SelectorError> {
        let op = self.bump();
        match op.tok {
            Tok::Eq | Tok::Ne | Tok::Contains | Tok::StartsWith | Tok::EndsWith => {
                let value = self.bump();
                let Tok::Str(value) = value.tok else {
                    return Err(self.err_at(
                        value.at,
                        format!(
                            "expected a quoted string after {}, found {}",
                            op.tok.describe(),
                            value.tok.describe()
                        ),
                    ));
                };
                Ok(match op.tok {
                    Tok::Eq => Expr::Eq(label, value),
                    Tok::Ne => Expr::Ne(label, value),
                    Tok::Contains => Expr::Contains(label, value),
                    Tok::StartsWith => Expr::StartsWith(label, value),
                    _ => Expr::EndsWith(label, value),
                })
            }
            Tok::In | Tok::NotIn => {
                let set = self.set_literal(&op)?;
                Ok(if op.tok == Tok::In {
                    Expr::In(label, set)
                } else {
                    Expr::NotIn(label, set)
                })
            }
            other => Err(self.err_at(
                op.at,
                format!(
                    "expected an operator after label {label:?}, found {}",
                    other.describe()
                ),
            )),
        }
    }

    /// `{ 'a', 'b' }`. Like Calico, accepts `{}` and a trailing comma.
    fn set_literal(&mut self, op: &Spanned) -> Result<BTreeSet<String>, SelectorError> {
        let open = self.bump();
        if open.tok != Tok::LBrace {
            return Err(self.err_at(
                open.at,
                format!(
                    "expected '{{' to start a set after {}, found {}",
                    op.tok.describe(),
                    open.tok.describe()
                ),
            ));
        }
        let mut set = BTreeSet::new();
        while let Tok::Str(s) = &self.peek().tok {
            set.insert(s.clone());
            self.bump();
            if self.peek().tok == Tok::Comma {
                self.bump();
            } else {
                break;
            }
        }
        let close = self.bump();
        if close.tok != Tok::RBrace {
            return Err(self.err_at(
                close.at,
                format!(
                    "expected a quoted string, ',' or '}}' in the set, found {}",
                    close.tok.describe()
                ),
            ));
        }
        Ok(set)
    }
}
