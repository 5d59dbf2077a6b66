//! Sharding past one machine: which of N coordinators (or coordinator pairs) owns a target. The
//! owner is a stable hash of the target's normalized URL, the same on every version and platform
//! (README: "Past one machine: shards"), so every shard and the `shard` command agree without
//! talking to each other. Pure: the hub applies it to the config's targets and to API upserts.

use std::num::NonZeroU32;

/// One shard of a split: `index` of `count` (0-based). `Shard::WHOLE` (1 of 1) owns every target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    count: NonZeroU32,
    index: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("count: at least 1, got 0")]
    NoShards,
    #[error("index: {index} is not below the count of {count} (indexes start at 0)")]
    IndexOutOfRange { index: u32, count: u32 },
}

impl Default for Shard {
    fn default() -> Self {
        Shard::WHOLE
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard {} of {}", self.index, self.count)
    }
}

/// The hash a target is placed by: the first 8 bytes of the SHA-256 of its normalized URL (the
/// form `ListTargets` shows), read as a big-endian integer. Part of the on-disk contract of a
/// split: a change would move targets between running shards, so unit tests pin it.
pub fn hash(url: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, url.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// The index of the shard, of `count`, that owns the normalized `url`.
pub fn owner(url: &str, count: NonZeroU32) -> u32 {
    // The remainder is below `count`, a u32.
    (hash(url) % u64::from(count.get())) as u32
}

impl Shard {
    pub const WHOLE: Shard = Shard { count: NonZeroU32::MIN, index: 0 };

    pub fn new(count: u32, index: u32) -> Result<Shard, ShardError> {
        let count = NonZeroU32::new(count).ok_or(ShardError::NoShards)?;
        if index >= count.get() {
            return Err(ShardError::IndexOutOfRange { index, count: count.get() });
        }
        Ok(Shard { count, index })
    }

    pub fn count(&self) -> u32 {
        self.count.get()
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    /// Whether this is a split at all (more than one shard).
    pub fn is_split(&self) -> bool {
        self.count.get() > 1
    }

    /// Whether this shard owns the normalized `url`.
    pub fn owns(&self, url: &str) -> bool {
        !self.is_split() || owner(url, self.count) == self.index
    }

    /// The shard of the same split that owns the normalized `url`.
    pub fn owner_of(&self, url: &str) -> Shard {
        Shard { count: self.count, index: owner(url, self.count) }
    }

    /// Why an upsert of `url` (not owned here) is refused: which shard owns it.
    pub fn refusal(&self, url: &str) -> String {
        let owner = self.owner_of(url);
        format!(
            "{url} belongs to {owner}, not to this coordinator ({self}): add it to the coordinator of shard {}",
            owner.index
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_the_first_8_bytes_of_sha256_big_endian() {
        // From `printf %s URL | sha256sum | cut -c1-16`: a change of the hash fails here, since
        // it would move targets between the shards of a running split.
        for (url, first) in [
            ("https://example.com/", 0x0f11_5db0_62b7_c0dd_u64),
            ("https://shop.example.com/", 0x7578_38ee_0de1_badf),
            ("https://api.example.com/healthz", 0x9077_683a_67c5_1aa1),
            ("https://[2001:db8::1]:8443/x?y=1", 0x1477_f636_895b_7860),
        ] {
            assert_eq!(hash(url), first, "{url}");
        }
        let of = |url: &str, n: u32| owner(url, NonZeroU32::new(n).unwrap());
        // Python over the same prefixes: h % n for n in (2, 3, 4, 5, 7, 16).
        assert_eq!([2, 3, 4, 5, 7, 16].map(|n| of("https://example.com/", n)), [1, 2, 1, 0, 5, 13]);
        assert_eq!([2, 3, 4, 5, 7, 16].map(|n| of("https://shop.example.com/", n)), [1, 2, 3, 3, 2, 15]);
        assert_eq!([2, 3, 4, 5, 7, 16].map(|n| of("https://api.example.com/healthz", n)), [1, 0, 1, 2, 0, 1]);
        assert_eq!([2, 3, 4, 5, 7, 16].map(|n| of("https://[2001:db8::1]:8443/x?y=1", n)), [0, 1, 0, 3, 3, 0]);
    }

    #[test]
    fn every_url_is_in_exactly_one_shard_and_the_shards_are_about_even() {
        let urls: Vec<String> = (0..10_000).map(|i| format!("https://t{i}.example.net/health")).collect();
        for count in 1..=5u32 {
            let shards: Vec<Shard> = (0..count).map(|i| Shard::new(count, i).unwrap()).collect();
            let mut sizes = vec![0usize; count as usize];
            for url in &urls {
                let owners: Vec<&Shard> = shards.iter().filter(|s| s.owns(url)).collect();
                assert_eq!(owners.len(), 1, "{url} with {count} shards: owned by {owners:?}");
                assert_eq!(owners[0].owner_of(url), *owners[0]);
                sizes[owners[0].index() as usize] += 1;
            }
            let even = urls.len() / count as usize;
            for (i, size) in sizes.iter().enumerate() {
                // A fair split of 10,000 lands well within 10% of even (a few standard deviations).
                assert!(size.abs_diff(even) * 10 < even, "{count} shards: shard {i} holds {size} of {even}");
            }
        }
    }

    #[test]
    fn a_shard_is_checked_and_says_who_owns_a_url() {
        assert_eq!(Shard::new(0, 0), Err(ShardError::NoShards));
        let e = Shard::new(2, 2).unwrap_err();
        assert_eq!(e.to_string(), "index: 2 is not below the count of 2 (indexes start at 0)");
        assert!(Shard::WHOLE.owns("https://anything.test/") && !Shard::WHOLE.is_split());
        assert_eq!(Shard::default(), Shard::WHOLE);
        let zero = Shard::new(2, 0).unwrap();
        assert!(!zero.owns("https://example.com/"));
        assert_eq!(
            zero.refusal("https://example.com/"),
            "https://example.com/ belongs to shard 1 of 2, not to this coordinator (shard 0 of 2): add it to the \
             coordinator of shard 1"
        );
    }
}
