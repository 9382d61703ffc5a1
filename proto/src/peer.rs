//! Readings of a bird `Peer` that more than one tool prints.

use crate::bird::{Peer, SessionState};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
