//! Channel health: which alert channels answer that they are misconfigured (401/403/404, a
//! refused SMTP login), since when, and whether the other channels were told (`channel_failing`).
//! The dispatcher feeds it every delivery's outcome; `/metrics`, the status page and `ListStatus`
//! read it. The decisions are pure functions over the map, tested below.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::channel::SendError;

/// Default of `[alerts] channel_failing_after`.
pub const CHANNEL_FAILING_AFTER: Duration = Duration::from_secs(3600);

/// A channel that answered "misconfigured" last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failing {
    /// Its first such answer since it last worked.
    pub since_ms: i64,
    /// The newest such answer.
    pub error: String,
    /// Whether `channel_failing` went to the other channels.
    pub alerted: bool,
}

/// What one delivery attempt said about its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Delivered, or refused for this alert only (400/413/422): the receiver was reached and
    /// took the credentials, so the channel works.
    Works,
    /// 401/403/404 and the like.
    Misconfigured(String),
    /// A timeout, a 5xx, a connection error: says nothing about the channel's setup.
    Unknown,
}

impl Observed {
    pub fn of(result: &Result<(), SendError>) -> Observed {
        match result {
            Ok(()) | Err(SendError::Rejected(_)) => Observed::Works,
            Err(SendError::Misconfigured(e)) => Observed::Misconfigured(e.clone()),
            Err(SendError::Transient(_)) => Observed::Unknown,
        }
    }
}

/// How a channel's health changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// It started failing now.
    Failing,
    /// It works again after failing since `was.since_ms`.
    Recovered { was: Failing },
}

/// Applies one observation of `channel`.
pub fn observe(map: &mut BTreeMap<String, Failing>, channel: &str, observed: Observed, now_ms: i64) -> Option<Change> {
    match observed {
        Observed::Unknown => None,
        Observed::Works => map.remove(channel).map(|was| Change::Recovered { was }),
        Observed::Misconfigured(error) => match map.get_mut(channel) {
            Some(failing) => {
                failing.error = error;
                None
            }
            None => {
                map.insert(channel.to_owned(), Failing { since_ms: now_ms, error, alerted: false });
                Some(Change::Failing)
            }
        },
    }
}

/// Channels failing for longer than `after` and not yet alerted: marked alerted and returned.
pub fn overdue(map: &mut BTreeMap<String, Failing>, now_ms: i64, after: Duration) -> Vec<String> {
    let after = after.as_millis() as i64;
    map.iter_mut()
        .filter(|(_, f)| !f.alerted && now_ms - f.since_ms >= after)
        .map(|(name, f)| {
            f.alerted = true;
            name.clone()
        })
        .collect()
}

/// The failing channels, shared by the dispatcher and the readers.
#[derive(Debug, Default)]
pub struct Board {
    channels: Mutex<BTreeMap<String, Failing>>,
}

impl Board {
    /// Starts from what the store remembers, keeping only channels still configured.
    pub fn new(remembered: impl IntoIterator<Item = (String, Failing)>, configured: &[String]) -> Board {
        let channels = remembered.into_iter().filter(|(name, _)| configured.contains(name)).collect();
        Board { channels: Mutex::new(channels) }
    }

    /// Works on the map under its lock.
    pub fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Failing>) -> T) -> T {
        f(&mut self.channels.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The failing channels now, by name.
    pub fn failing(&self) -> BTreeMap<String, Failing> {
        self.with(|m| m.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn misconfigured(e: &str) -> Observed {
        Observed::Misconfigured(e.to_owned())
    }

    #[test]
    fn a_channel_fails_from_its_first_misconfigured_answer_until_one_gets_through() {
        let mut map = BTreeMap::new();
        assert_eq!(observe(&mut map, "hook", Observed::Unknown, 0), None, "a timeout says nothing");
        assert_eq!(observe(&mut map, "hook", misconfigured("HTTP 401"), 1_000), Some(Change::Failing));
        assert_eq!(observe(&mut map, "hook", misconfigured("HTTP 404"), 2_000), None);
        assert_eq!(observe(&mut map, "hook", Observed::Unknown, 3_000), None, "still failing");
        assert_eq!(map["hook"], Failing { since_ms: 1_000, error: "HTTP 404".into(), alerted: false });
        let change = observe(&mut map, "hook", Observed::Works, 4_000);
        assert_eq!(
            change,
            Some(Change::Recovered { was: Failing { since_ms: 1_000, error: "HTTP 404".into(), alerted: false } })
        );
        assert!(map.is_empty());
        assert_eq!(observe(&mut map, "hook", Observed::Works, 5_000), None, "a working channel stays quiet");
    }

    #[test]
    fn a_refused_alert_means_the_channel_works_a_refused_credential_does_not() {
        let rejected: Result<(), SendError> = Err(SendError::from_status(422, "HTTP 422".into()));
        assert_eq!(Observed::of(&rejected), Observed::Works);
        for status in [401, 403, 404] {
            let refused: Result<(), SendError> = Err(SendError::from_status(status, format!("HTTP {status}")));
            assert_eq!(Observed::of(&refused), misconfigured(&format!("HTTP {status}")));
        }
        assert_eq!(Observed::of(&Err(SendError::from_status(503, String::new()))), Observed::Unknown);
        assert_eq!(Observed::of(&Ok(())), Observed::Works);
    }

    #[test]
    fn channel_failing_is_raised_once_after_the_threshold() {
        let mut map = BTreeMap::new();
        observe(&mut map, "hook", misconfigured("HTTP 401"), 0);
        observe(&mut map, "pager", misconfigured("HTTP 403"), 30_000);
        let hour = Duration::from_secs(3600);
        assert!(overdue(&mut map, 3_599_999, hour).is_empty());
        assert_eq!(overdue(&mut map, 3_600_000, hour), ["hook"]);
        assert!(overdue(&mut map, 3_620_000, hour).is_empty(), "once");
        assert_eq!(overdue(&mut map, 3_630_000, hour), ["pager"]);
        match observe(&mut map, "hook", Observed::Works, 4_000_000) {
            Some(Change::Recovered { was }) => assert!(was.alerted, "the recovery is told where the failure was"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_board_forgets_channels_no_longer_configured() {
        let f = Failing { since_ms: 1, error: "HTTP 401".into(), alerted: true };
        let board = Board::new([("old".to_owned(), f.clone()), ("hook".to_owned(), f.clone())], &["hook".to_owned()]);
        assert_eq!(board.failing().into_keys().collect::<Vec<_>>(), ["hook"]);
    }
}
