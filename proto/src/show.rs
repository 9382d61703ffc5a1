//! bird's answers for people, shared by `bird show` and `calico-node
//! status` / metrics: the names of BGP session states, what BFD means for
//! a session ([`Peer::bfd_note`]), and the text tables both print
//! ([`Table`]: `plain` for `bird show`, `boxed` in the shape of
//! `calicoctl node status`).

use std::fmt::Write;

use crate::bird::{Peer, SessionState};

impl SessionState {
    /// Every state a session can be in, with its name as RFC 4271 writes
    /// it, in the order of the state machine.
    pub const NAMED: [(SessionState, &'static str); 6] = [
        (SessionState::Idle, "Idle"),
        (SessionState::Connect, "Connect"),
        (SessionState::Active, "Active"),
        (SessionState::OpenSent, "OpenSent"),
        (SessionState::OpenConfirm, "OpenConfirm"),
        (SessionState::Established, "Established"),
    ];

    /// The state's name; `None` for `Unspecified`.
    pub fn rfc_name(self) -> Option<&'static str> {
        Self::NAMED
            .iter()
            .find(|(s, _)| *s == self)
            .map(|(_, name)| *name)
    }
}

/// The name of a state as it comes off the wire; `None` when the value is
/// unspecified or unknown (each caller prints that its own way).
pub fn state_name(state: i32) -> Option<&'static str> {
    SessionState::try_from(state)
        .ok()
        .and_then(SessionState::rfc_name)
}

impl Peer {
    /// What BFD means for this BGP session when it is configured and not
    /// Up: the session waits for BFD before it opens a connection of its
    /// own, or it was established by the peer's connection before BFD came
    /// Up and is not yet protected by it. `None` without BFD or with BFD Up.
    pub fn bfd_note(&self) -> Option<&'static str> {
        if self.bfd.is_empty() || self.bfd == "Up" {
            return None;
        }
        Some(if self.state == SessionState::Established as i32 {
            "not yet protected by BFD"
        } else {
            "waiting for BFD"
        })
    }
}

/// A header row and rows of cells, rendered as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Each column's width: its widest cell, header included.
    fn widths(&self) -> Vec<usize> {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        (0..cols)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Left-aligned columns separated by two spaces; a row's last cell is
    /// not padded, so no line ends in spaces.
    pub fn plain(&self) -> String {
        let widths = self.widths();
        let mut out = String::new();
        for r in &self.rows {
            let mut line = String::new();
            for (i, cell) in r.iter().enumerate() {
                if i + 1 == r.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Boxed: `+---+` rules above and below the header and at the end,
    /// headers centred, cells left-aligned between `|`.
    pub fn boxed(&self) -> String {
        let widths = self.widths();
        let rule = widths.iter().fold("+".to_string(), |acc, w| {
            format!("{acc}{}+", "-".repeat(w + 2))
        });
        let mut s = String::new();
        let _ = writeln!(s, "{rule}");
        let mut rows = self.rows.iter();
        if let Some(header) = rows.next() {
            let line =
                header
                    .iter()
                    .zip(widths.iter().copied())
                    .fold("|".to_string(), |acc, (h, w)| {
                        let pad = w - h.chars().count();
                        format!(
                            "{acc} {}{h}{} |",
                            " ".repeat(pad / 2),
                            " ".repeat(pad - pad / 2)
                        )
                    });
            let _ = writeln!(s, "{line}");
            let _ = writeln!(s, "{rule}");
        }
        for r in rows {
            let line = r
                .iter()
                .zip(widths.iter().copied())
                .fold("|".to_string(), |acc, (v, w)| format!("{acc} {v:<w$} |"));
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(s, "{rule}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(&["PEER", "AS", "LAST ERROR"]);
        t.push(vec!["10.0.0.1".into(), "65001".into(), "-".into()]);
        t.push(vec![
            "fd00::254".into(),
            "64512".into(),
            "Hold timer".into(),
        ]);
        t
    }

    #[test]
    fn plain_pads_all_but_the_last_column() {
        assert_eq!(
            sample().plain(),
            "PEER       AS     LAST ERROR\n\
             10.0.0.1   65001  -\n\
             fd00::254  64512  Hold timer\n"
        );
    }

    #[test]
    fn boxed_centres_headers_between_rules() {
        assert_eq!(
            sample().boxed(),
            "+-----------+-------+------------+\n\
             |   PEER    |  AS   | LAST ERROR |\n\
             +-----------+-------+------------+\n\
             | 10.0.0.1  | 65001 | -          |\n\
             | fd00::254 | 64512 | Hold timer |\n\
             +-----------+-------+------------+\n"
        );
    }

    fn peer(state: SessionState, bfd: &str) -> Peer {
        Peer {
            state: state as i32,
            bfd: bfd.to_string(),
            ..Peer::default()
        }
    }

    #[test]
    fn bfd_note_says_why_a_session_with_bfd_down_is_not_up_or_not_protected() {
        assert_eq!(peer(SessionState::Active, "").bfd_note(), None);
        assert_eq!(peer(SessionState::Established, "Up").bfd_note(), None);
        assert_eq!(
            peer(SessionState::Active, "Down").bfd_note(),
            Some("waiting for BFD")
        );
        assert_eq!(
            peer(SessionState::Established, "Init").bfd_note(),
            Some("not yet protected by BFD")
        );
    }

    #[test]
    fn state_names_follow_the_rfc_and_unknown_is_none() {
        assert_eq!(
            state_name(SessionState::OpenConfirm as i32),
            Some("OpenConfirm")
        );
        assert_eq!(state_name(SessionState::Unspecified as i32), None);
        assert_eq!(state_name(99), None);
    }
}
