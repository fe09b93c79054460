//! Fair claims: which of the ready runs a node takes when it has room for some, so that one
//! org's or one fleet's backlog cannot starve the others.

use std::collections::BTreeMap;

/// One ready run a fair claim may take: its `seq`, its fleet and its org (any key types; a run
/// whose fleet is gone counts its fleet as its org).
pub type Candidate<K> = (i64, K, K);

/// The `seq` of the (at most `max`) runs a fair claim takes among `candidates` (each fleet's
/// oldest ready runs, at most `max` of each), given the runs running per fleet and per org.
///
/// The k-th ready run of a fleet with n running has turn n + k within its org; the org's runs
/// are interleaved by that turn (ties to the older run), and the j-th of them in an org with m
/// running has turn m + j overall. The lowest turns are taken, ties to the oldest run. So each
/// slot goes to the org, then the fleet, with the fewest runs running (counting the runs this
/// claim has already picked), and a lone fleet still fills every slot. Both stores rank here,
/// on a few hundred rows at most, rather than in SQL, where two window passes cost SQLite ~7 µs
/// per candidate.
pub fn fair_pick<K: Ord + Clone>(
    mut candidates: Vec<Candidate<K>>,
    busy_fleets: &BTreeMap<K, u64>,
    busy_orgs: &BTreeMap<K, u64>,
    max: usize,
) -> Vec<i64> {
    // Turn within the fleet.
    candidates.sort_by(|a, b| (&a.1, a.0).cmp(&(&b.1, b.0)));
    let mut ranked: Vec<(u64, i64, K)> = Vec::with_capacity(candidates.len());
    let mut k = 0;
    for (i, (seq, fleet, org)) in candidates.iter().enumerate() {
        k = if i > 0 && candidates[i - 1].1 == *fleet {
            k + 1
        } else {
            1
        };
        let turn = busy_fleets.get(fleet).copied().unwrap_or(0) + k;
        ranked.push((turn, *seq, org.clone()));
    }
    // Turn within the org, then overall.
    ranked.sort_by(|a, b| (&a.2, a.0, a.1).cmp(&(&b.2, b.0, b.1)));
    let mut overall: Vec<(u64, i64)> = Vec::with_capacity(ranked.len());
    let mut j = 0;
    for (i, (_, seq, org)) in ranked.iter().enumerate() {
        j = if i > 0 && ranked[i - 1].2 == *org {
            j + 1
        } else {
            1
        };
        overall.push((busy_orgs.get(org).copied().unwrap_or(0) + j, *seq));
    }
    overall.sort_unstable();
    overall.into_iter().take(max).map(|(_, seq)| seq).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_pick_shares_slots_by_org_then_fleet_and_counts_what_runs() {
        // Fleet a (org x) has 4 running and a backlog; b (org y) and c (org x) have none.
        let runs = |fleet: &'static str, org: &'static str, seqs: &[i64]| {
            seqs.iter()
                .map(move |s| (*s, fleet, org))
                .collect::<Vec<_>>()
        };
        let candidates = [
            runs("a", "x", &[1, 2, 3, 4]),
            runs("b", "y", &[10, 11]),
            runs("c", "x", &[20, 21]),
        ]
        .concat();
        let busy_fleets = BTreeMap::from([("a", 4)]);
        let busy_orgs = BTreeMap::from([("x", 4)]);
        // y has nothing running: both of b's runs first; then x's, c before a within x.
        assert_eq!(
            fair_pick(candidates.clone(), &busy_fleets, &busy_orgs, 5),
            [10, 11, 20, 21, 1]
        );
        // Nothing running anywhere: one run per org in turn, oldest first on ties.
        let none = BTreeMap::new();
        assert_eq!(
            fair_pick(candidates.clone(), &none, &none, 4),
            [1, 10, 11, 20]
        );
        // A lone fleet fills the batch in arrival order.
        assert_eq!(
            fair_pick(runs("a", "x", &[5, 3, 9]), &busy_fleets, &busy_orgs, 2),
            [3, 5]
        );
    }
}
