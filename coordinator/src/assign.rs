//! Which agent probes which target: within a region, targets are spread over the region's
//! connected agents by rendezvous (highest random weight) hashing, so when an agent leaves only
//! its own targets move.

/// A stable 64-bit hash (FNV-1a, then a final mix): the same on every coordinator and version.
fn weight(agent: &str, target: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in agent.bytes().chain([0xff]).chain(target.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64 finalizer: FNV alone is weak in the high bits.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The agent (of `agents`, all in one region) that should probe `target`.
pub fn owner<'a>(target: &str, agents: &[&'a str]) -> Option<&'a str> {
    agents.iter().copied().max_by_key(|agent| (weight(agent, target), *agent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_targets_and_moves_only_the_leavers() {
        let agents = ["a1", "a2", "a3"];
        let targets: Vec<String> = (0..3000).map(|i| format!("https://t{i}.example/")).collect();
        let before: Vec<&str> = targets.iter().map(|t| owner(t, &agents).unwrap()).collect();
        for agent in agents {
            let share = before.iter().filter(|a| **a == agent).count();
            assert!((800..1200).contains(&share), "{agent} got {share} of 3000");
        }
        let after: Vec<&str> = targets.iter().map(|t| owner(t, &["a1", "a3"]).unwrap()).collect();
        for (b, a) in before.iter().zip(&after) {
            if *b != "a2" {
                assert_eq!(b, a, "a target of a remaining agent moved");
            }
        }
        assert_eq!(owner("x", &[]), None);
    }
}
