//! The windows figures are asked for: durations back from now ("24h", "30d"), at most
//! `ROLLUP_DAYS` long (older days are no longer kept).

use std::time::Duration;

use super::ROLLUP_DAYS;

/// The windows shown when none is asked for: 24 hours, 7, 30 and 90 days.
pub const DEFAULT_WINDOWS: [&str; 4] = ["24h", "7d", "30d", "90d"];

/// Most windows one request may ask for.
pub const MAX_WINDOWS: usize = 8;

/// One window: as it was written, and its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub name: String,
    pub ms: i64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WindowError {
    #[error("window {0:?}: {1}")]
    Invalid(String, String),
    #[error("window {0:?} is longer than the {ROLLUP_DAYS} days of roll-ups kept")]
    TooLong(String),
    #[error("at most {MAX_WINDOWS} windows per request, got {0}")]
    TooMany(usize),
}

/// `names` as windows (the default four when empty).
pub fn parse_windows(names: &[String]) -> Result<Vec<Window>, WindowError> {
    if names.len() > MAX_WINDOWS {
        return Err(WindowError::TooMany(names.len()));
    }
    let defaults: Vec<String>;
    let names = if names.is_empty() {
        defaults = DEFAULT_WINDOWS.iter().map(|s| (*s).to_owned()).collect();
        &defaults
    } else {
        names
    };
    names
        .iter()
        .map(|name| {
            let name = name.trim();
            let length = vantage_shared::duration::parse_duration(name)
                .map_err(|e| WindowError::Invalid(name.to_owned(), e.to_string()))?;
            if length.is_zero() {
                return Err(WindowError::Invalid(name.to_owned(), "must be longer than zero".into()));
            }
            if length > Duration::from_secs(ROLLUP_DAYS as u64 * 86_400) {
                return Err(WindowError::TooLong(name.to_owned()));
            }
            Ok(Window { name: name.to_owned(), ms: length.as_millis() as i64 })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_default_to_the_four_and_refuse_what_cannot_be_answered() {
        let four = parse_windows(&[]).unwrap();
        assert_eq!(four.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), DEFAULT_WINDOWS);
        assert_eq!(four[2].ms, 30 * 86_400_000);
        assert_eq!(parse_windows(&["12h".into()]).unwrap()[0].ms, 12 * 3_600_000);
        assert!(matches!(parse_windows(&["soon".into()]), Err(WindowError::Invalid(..))));
        assert!(matches!(parse_windows(&["0s".into()]), Err(WindowError::Invalid(..))));
        assert_eq!(parse_windows(&["401d".into()]), Err(WindowError::TooLong("401d".into())));
        assert_eq!(parse_windows(&vec!["1d".to_owned(); 9]), Err(WindowError::TooMany(9)));
    }
}
