//! Calico's label selector language, as used by IPPool `nodeSelector` and
//! BGPPeer `nodeSelector` / `peerSelector`.
//!
//! ```text
//! all()                       every object
//! has(k)        !has(k)       label present / absent
//! k == 'v'      k != 'v'      equal / absent-or-different
//! k in {'a','b'}              present and one of
//! k not in {'a','b'}          absent or none of
//! k contains 's'   k starts with 's'   k ends with 's'
//! a && b    a || b    !a    ( ... )
//! ```
//!
//! Strings take single or double quotes and have no escapes. An empty
//! selector is `all()`. Parsing never panics; errors carry the byte offset
//! and column of the problem.

mod lexer;
mod parser;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// A parsed selector. `Display` prints Calico's canonical text (the form
/// Calico itself stores and compares), e.g. `(a == "x" && has(b))`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    root: Expr,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Expr {
    All,
    /// `global()`: matches everything; meaningful only in policy selectors.
    Global,
    Has(String),
    Eq(String, String),
    Ne(String, String),
    Contains(String, String),
    StartsWith(String, String),
    EndsWith(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

/// A selector that does not parse: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {input:?}: {message} (at column {column})")]
pub struct SelectorError {
    /// The selector text.
    pub input: String,
    /// Byte offset of the problem in `input`.
    pub offset: usize,
    /// 1-based character column of the problem.
    pub column: usize,
    /// What was wrong.
    pub message: String,
}

impl SelectorError {
    pub(crate) fn new(input: &str, offset: usize, message: String) -> Self {
        let offset = offset.min(input.len());
        Self {
            input: input.to_string(),
            offset,
            column: Self::column_of(input, offset),
            message,
        }
    }

    pub(crate) fn column_of(input: &str, offset: usize) -> usize {
        input
            .char_indices()
            .take_while(|(i, _)| *i < offset)
            .count()
            + 1
    }

    /// The selector with a caret under the problem, for terminal output.
    pub fn pointer(&self) -> String {
        format!(
            "{}\n{}^",
            self.input,
            " ".repeat(self.column.saturating_sub(1))
        )
    }
}

impl Selector {
    /// Parses Calico selector text.
    pub fn parse(s: &str) -> Result<Selector, SelectorError> {
        let toks = lexer::tokenize(s)?;
        let root = parser::Parser::new(s, toks).parse_all()?;
        Ok(Selector { root })
    }

    /// The selector that matches everything.
    pub fn all() -> Selector {
        Selector { root: Expr::All }
    }

    /// True when this selector is (exactly) `all()`.
    pub fn is_all(&self) -> bool {
        self.root == Expr::All
    }

    /// True when `global()` appears anywhere in the selector; Calico forbids
    /// it in IPPool selectors.
    pub fn uses_global(&self) -> bool {
        fn walk(e: &Expr) -> bool {
            match e {
                Expr::Global => true,
                Expr::Not(inner) => walk(inner),
                Expr::And(v) | Expr::Or(v) => v.iter().any(walk),
                _ => false,
            }
        }
        walk(&self.root)
    }

    /// Evaluates the selector against a label set.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.root.eval(labels)
    }
}

impl Default for Selector {
    fn default() -> Self {
        Selector::all()
    }
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

impl Expr {
    fn eval(&self, labels: &BTreeMap<String, String>) -> bool {
        let get = |k: &String| labels.get(k).map(String::as_str);
        match self {
            Expr::All | Expr::Global => true,
            Expr::Has(k) => labels.contains_key(k),
            Expr::Eq(k, v) => get(k) == Some(v.as_str()),
            Expr::Ne(k, v) => get(k) != Some(v.as_str()),
            Expr::Contains(k, v) => get(k).is_some_and(|l| l.contains(v.as_str())),
            Expr::StartsWith(k, v) => get(k).is_some_and(|l| l.starts_with(v.as_str())),
            Expr::EndsWith(k, v) => get(k).is_some_and(|l| l.ends_with(v.as_str())),
            Expr::In(k, set) => get(k).is_some_and(|l| set.contains(l)),
            Expr::NotIn(k, set) => !get(k).is_some_and(|l| set.contains(l)),
            Expr::Not(inner) => !inner.eval(labels),
            Expr::And(v) => v.iter().all(|e| e.eval(labels)),
            Expr::Or(v) => v.iter().any(|e| e.eval(labels)),
        }
    }
}

/// Calico quotes with `"` unless the value itself contains `"`.
fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    let q = if s.contains('"') { '\'' } else { '"' };
    write!(f, "{q}{s}{q}")
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = |f: &mut fmt::Formatter<'_>, k: &str, op: &str, v: &str| {
            write!(f, "{k}{op}")?;
            write_quoted(f, v)
        };
        let set = |f: &mut fmt::Formatter<'_>, k: &str, op: &str, vals: &BTreeSet<String>| {
            write!(f, "{k} {op} {{")?;
            for (i, v) in vals.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_quoted(f, v)?;
            }
            f.write_str("}")
        };
        let join = |f: &mut fmt::Formatter<'_>, sep: &str, v: &[Expr]| {
            f.write_str("(")?;
            for (i, e) in v.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                write!(f, "{e}")?;
            }
            f.write_str(")")
        };
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Global => f.write_str("global()"),
            Expr::Has(k) => write!(f, "has({k})"),
            Expr::Eq(k, v) => op(f, k, " == ", v),
            Expr::Ne(k, v) => op(f, k, " != ", v),
            Expr::Contains(k, v) => op(f, k, " contains ", v),
            Expr::StartsWith(k, v) => op(f, k, " starts with ", v),
            Expr::EndsWith(k, v) => op(f, k, " ends with ", v),
            Expr::In(k, v) => set(f, k, "in", v),
            Expr::NotIn(k, v) => set(f, k, "not in", v),
            Expr::Not(inner) => write!(f, "!{inner}"),
            Expr::And(v) => join(f, " && ", v),
            Expr::Or(v) => join(f, " || ", v),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root.fmt(f)
    }
}

#[cfg(test)]
mod tests;
