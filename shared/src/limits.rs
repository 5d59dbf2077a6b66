//! Every limit and default the agent and the coordinator must agree on, defined once: the
//! coordinator refuses what exceeds them, `UpsertTarget` refuses targets the agent could not
//! report on, and the agent truncates or splits so that it never builds what the coordinator
//! would refuse. The timing and defaults both sides assume (the retry pause that staleness allows
//! for, certificate thresholds) live here too, so neither side borrows them from the other.

use std::time::Duration;

/// Longest target URL accepted anywhere (config, `UpsertTarget`, result batches).
pub const MAX_URL: usize = 2048;
/// Longest identifier carried with a result: run-now ids, failure codes.
pub const MAX_ID: usize = 64;
/// Most results in one batch.
pub const MAX_BATCH_RESULTS: usize = 1000;
/// Largest gRPC message the coordinator decodes from agents and API callers.
pub const MAX_MESSAGE: usize = 4 << 20;
/// Largest message the coordinator sends an agent and the agent accepts (and `status` accepts
/// from the API): a full assignment of 100,000 targets (about 100 bytes each) fits.
pub const MAX_ASSIGNMENT: usize = 64 << 20;
/// Largest encoded batch an agent sends: the message cap less room for framing, so a batch
/// split by bytes always fits.
pub const MAX_BATCH_BYTES: usize = 3 << 20;
/// Largest encoded single result the coordinator stores; the agent's truncation keeps every
/// result well under it.
pub const MAX_RESULT_BYTES: usize = 256 << 10;
/// Longest free-text field of a result (a failure's message, hint and detail, a redirect
/// location): longer text is cut by the agent, which marks the cut with [`TRUNCATED`].
pub const MAX_TEXT: usize = 4096;
/// Most subject alternative names kept per certificate.
pub const MAX_SANS: usize = 256;
/// Longest single SAN, subject or issuer kept.
pub const MAX_NAME: usize = 1024;
/// Most certificates of a served chain kept.
pub const MAX_CHAIN: usize = 16;
/// Most backends (resolved addresses) reported per result.
pub const MAX_BACKENDS: usize = 64;
/// Most bytes of subject alternative names kept per certificate, all names together: with
/// [`MAX_SANS`] names of [`MAX_NAME`] each a certificate alone could fill [`MAX_RESULT_BYTES`].
pub const MAX_SANS_BYTES: usize = 64 << 10;
/// Longest free-text field of one backend's failure (its message, hint and detail): a result
/// carries up to [`MAX_BACKENDS`] of them, and the result's own failure says the most.
pub const MAX_BACKEND_TEXT: usize = 512;
/// The pause before an agent's one retry of a failed probe. The coordinator allows for it when it
/// decides how old a region's newest result may be before the region counts as silent.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Certificate health turns to warning with fewer days left, unless the target says otherwise.
pub const DEFAULT_WARN_DAYS: u32 = 30;
/// Certificate health turns to critical with fewer days left, unless the target says otherwise
/// (never more than its warning threshold).
pub const DEFAULT_CRITICAL_DAYS: u32 = 7;

/// What ends a field the agent cut short.
pub const TRUNCATED: &str = "…[truncated]";

/// The entry that replaces the tail of a list the agent cut short (the last SAN, the last
/// chain certificate's subject, the last backend's address): `…[truncated: 12 more]`.
pub fn truncated_more(more: usize) -> String {
    format!("…[truncated: {more} more]")
}

/// `list` cut to at most `max` entries, the last of them then being `marker(n)` for the `n`
/// entries it stands for (so a reader can tell, and count, what was dropped).
pub fn truncate_list<T>(list: &mut Vec<T>, max: usize, marker: impl FnOnce(usize) -> T) {
    if list.len() <= max || max == 0 {
        list.truncate(max);
        return;
    }
    let keep = max - 1;
    let more = list.len() - keep;
    list.truncate(keep);
    list.push(marker(more));
}

/// `text` cut to at most `max` bytes on a character boundary, ending in [`TRUNCATED`] when cut.
pub fn truncate(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(TRUNCATED.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(TRUNCATED);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept() {
        let mut s = "refused".to_owned();
        truncate(&mut s, MAX_TEXT);
        assert_eq!(s, "refused");
    }

    #[test]
    fn long_text_is_cut_on_a_character_and_marked() {
        let mut s = "é".repeat(5000);
        truncate(&mut s, MAX_TEXT);
        assert!(s.len() <= MAX_TEXT, "{}", s.len());
        assert!(s.ends_with(TRUNCATED));
        assert!(s.trim_end_matches(TRUNCATED).chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_long_list_ends_in_a_marker_that_counts_the_rest() {
        let mut list: Vec<String> = (0..10).map(|n| n.to_string()).collect();
        truncate_list(&mut list, 4, truncated_more);
        assert_eq!(list, ["0", "1", "2", "…[truncated: 7 more]"]);
        let mut short = vec![1, 2];
        truncate_list(&mut short, 2, |_| 0);
        assert_eq!(short, [1, 2]);
    }

    #[test]
    fn the_batch_cap_leaves_room_under_the_message_cap() {
        assert!(MAX_BATCH_BYTES + MAX_RESULT_BYTES < MAX_MESSAGE);
    }

    #[test]
    fn an_assignment_may_be_larger_than_what_agents_send() {
        assert!(MAX_ASSIGNMENT >= MAX_MESSAGE);
        assert!(DEFAULT_CRITICAL_DAYS <= DEFAULT_WARN_DAYS);
    }
}
