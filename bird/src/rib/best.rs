//! Best-path selection: RFC 4271 section 9.1.2.2 as written, an
//! elimination over the candidate set, with RFC 4456 section 9 for
//! reflected routes. Eliminating (rather than comparing pairs) keeps the
//! MED rule transitive: MEDs are compared only among routes from the same
//! neighbouring AS, and a pairwise comparator with that rule can make the
//! result depend on the order paths arrived in.
//!
//! Steps, each keeping only the candidates that are best on it:
//! 1. highest LOCAL_PREF (absent: 100);
//! 2. locally originated over learned;
//! 3. shortest AS_PATH (a set counts one);
//! 4. lowest ORIGIN;
//! 5. per neighbouring AS, lowest MULTI_EXIT_DISC (absent: 0);
//! 6. routes from external peers over routes from internal ones;
//! 7. lowest IGP cost to the next hop, where known.
//!
//! What is left is the ECMP set. The best path among it is then picked by
//! 8. lowest BGP Identifier (the ORIGINATOR_ID when the route has one);
//! 9. shortest CLUSTER_LIST;
//! 10. lowest peer address.

use std::net::{IpAddr, Ipv4Addr};

use super::attrs::Rank;

/// Default LOCAL_PREF (BIRD and most speakers use 100).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// One path as selection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub rank: Rank,
    /// Originated by this speaker.
    pub local: bool,
    /// Learned from an external peer.
    pub external: bool,
    /// Cost to reach the next hop, when an IGP (or configuration) knows.
    pub igp_cost: Option<u32>,
    /// The BGP Identifier of the peer the route came from.
    pub peer_id: Ipv4Addr,
    pub peer_addr: IpAddr,
}

impl Candidate {
    fn local_pref(&self) -> u32 {
        self.rank.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)
    }

    fn identifier(&self) -> u32 {
        u32::from(self.rank.originator_id.unwrap_or(self.peer_id))
    }

    /// Steps 8 to 10, as one key (lower wins).
    fn tie_break(&self) -> (u32, u32, IpAddr) {
        (
            self.identifier(),
            self.rank.cluster_list_len,
            self.peer_addr.to_canonical(),
        )
    }
}

/// The outcome: candidate indices, best first, then the rest of the ECMP
/// set, then every other candidate; `ecmp` is the size of the ECMP set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub order: Vec<usize>,
    pub ecmp: usize,
}

fn keep_best<K: Ord + Copy>(set: &mut Vec<usize>, c: &[Candidate], key: impl Fn(&Candidate) -> K) {
    if let Some(best) = set.iter().map(|&i| key(&c[i])).min() {
        set.retain(|&i| key(&c[i]) == best);
    }
}

pub fn select(c: &[Candidate]) -> Selection {
    let mut set: Vec<usize> = (0..c.len()).collect();
    keep_best(&mut set, c, |x| std::cmp::Reverse(x.local_pref()));
    keep_best(&mut set, c, |x| !x.local);
    keep_best(&mut set, c, |x| x.rank.as_path_len);
    keep_best(&mut set, c, |x| x.rank.origin);
    // Step 5: "remove from consideration routes with less-preferred
    // MULTI_EXIT_DISC attributes. MULTI_EXIT_DISC is only comparable
    // between routes learned from the same neighboring AS".
    let snapshot = set.clone();
    set.retain(|&i| {
        !snapshot.iter().any(|&j| {
            c[j].rank.neighbor_as == c[i].rank.neighbor_as && c[j].rank.med < c[i].rank.med
        })
    });
    keep_best(&mut set, c, |x| !x.external);
    keep_best(&mut set, c, |x| x.igp_cost.unwrap_or(0));
    set.sort_by_key(|&i| c[i].tie_break());
    let ecmp = set.len();
    let mut order = set;
    order.extend(
        (0..c.len())
            .filter(|i| !order.contains(i))
            .collect::<Vec<_>>(),
    );
    Selection { order, ecmp }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(peer: u8) -> Candidate {
        Candidate {
            rank: Rank {
                local_pref: None,
                as_path_len: 1,
                origin: 0,
                med: 0,
                neighbor_as: Some(65001),
                originator_id: None,
                cluster_list_len: 0,
            },
            local: false,
            external: true,
            igp_cost: None,
            peer_id: Ipv4Addr::new(10, 0, 0, peer),
            peer_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, peer)),
        }
    }

    fn best(c: &[Candidate]) -> usize {
        select(c).order[0]
    }

    #[test]
    fn highest_local_pref_wins_over_a_shorter_path() {
        let mut a = cand(1);
        a.rank.local_pref = Some(200);
        a.rank.as_path_len = 5;
        let b = cand(2);
        assert_eq!(best(&[b, a]), 1);
    }

    #[test]
    fn locally_originated_wins_at_equal_local_pref() {
        let mut a = cand(9);
        a.local = true;
        a.rank.as_path_len = 0;
        let mut b = cand(1);
        b.rank.as_path_len = 0;
        assert_eq!(best(&[b, a]), 1);
    }

    #[test]
    fn shortest_as_path_wins() {
        let mut a = cand(1);
        a.rank.as_path_len = 3;
        let b = cand(2);
        assert_eq!(best(&[a, b]), 1);
    }

    #[test]
    fn lowest_origin_wins() {
        let mut a = cand(1);
        a.rank.origin = 2;
        let b = cand(2);
        assert_eq!(best(&[a, b]), 1);
    }

    #[test]
    fn lower_med_wins_only_within_the_same_neighbor_as() {
        let mut a = cand(1);
        a.rank.med = 50;
        let mut b = cand(2);
        b.rank.med = 10;
        assert_eq!(best(&[a, b]), 1);
        // Different neighbour ASes: MED is not compared, router ID decides.
        b.rank.neighbor_as = Some(65002);
        assert_eq!(best(&[a, b]), 0);
    }

    #[test]
    fn med_elimination_does_not_depend_on_arrival_order() {
        // The classic non-transitive triple: a (AS1, MED 10), b (AS2,
        // MED 0), c (AS1, MED 0). Pairwise, the winner depends on order;
        // eliminating by group always removes a.
        let mut a = cand(1);
        a.rank.med = 10;
        let mut b = cand(2);
        b.rank.neighbor_as = Some(65002);
        let c = cand(3);
        for perm in [[0, 1, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
            let set = [a, b, c];
            let cands: Vec<Candidate> = perm.iter().map(|&i| set[i]).collect();
            let sel = select(&cands);
            // b (id .2) and c (id .3) tie through step 7: b wins on ID.
            assert_eq!(cands[sel.order[0]].peer_id, Ipv4Addr::new(10, 0, 0, 2));
            assert_eq!(sel.ecmp, 2);
        }
    }

    #[test]
    fn missing_med_counts_as_zero() {
        let mut a = cand(1);
        a.rank.med = 1;
        let b = cand(2);
        assert_eq!(best(&[a, b]), 1);
    }

    #[test]
    fn external_wins_over_internal() {
        let mut a = cand(1);
        a.external = false;
        let b = cand(2);
        assert_eq!(best(&[a, b]), 1);
    }

    #[test]
    fn lower_igp_cost_wins_where_known() {
        let mut a = cand(1);
        a.igp_cost = Some(20);
        let mut b = cand(2);
        b.igp_cost = Some(10);
        assert_eq!(best(&[a, b]), 1);
    }

    #[test]
    fn lowest_router_id_breaks_the_tie_and_originator_id_stands_in_for_it() {
        let a = cand(5);
        let b = cand(3);
        assert_eq!(best(&[a, b]), 1);
        let mut a = cand(5);
        a.rank.originator_id = Some(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(best(&[a, b]), 0);
    }

    #[test]
    fn shorter_cluster_list_then_lower_peer_address_break_the_tie() {
        let id = Some(Ipv4Addr::new(1, 1, 1, 1));
        let mut a = cand(7);
        a.rank.originator_id = id;
        a.rank.cluster_list_len = 2;
        let mut b = cand(8);
        b.rank.originator_id = id;
        b.rank.cluster_list_len = 1;
        assert_eq!(best(&[a, b]), 1);
        b.rank.cluster_list_len = 2;
        assert_eq!(best(&[b, a]), 1, "10.0.0.7 < 10.0.0.8");
    }

    #[test]
    fn equal_paths_form_an_ecmp_set_best_first() {
        let a = cand(3);
        let b = cand(1);
        let mut c = cand(2);
        c.rank.as_path_len = 2;
        let sel = select(&[a, b, c]);
        assert_eq!(sel.ecmp, 2);
        assert_eq!(sel.order, vec![1, 0, 2]);
    }

    #[test]
    fn single_candidate_is_best() {
        assert_eq!(
            select(&[cand(1)]),
            Selection {
                order: vec![0],
                ecmp: 1
            }
        );
    }
}
