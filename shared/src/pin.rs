//! Certificate pins as operators paste them: read the same way by the agent's `check
//! --pin-sha256`, its probe of an assigned target, and the coordinator's target checks, so a pin
//! one side accepts the other never refuses.

/// A pin that is not a SHA-256 hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a SHA-256 hash (64 hex digits)")]
pub struct PinError {
    pub input: String,
}

/// Reads a pin: 64 hex digits, either case, optionally colon-separated (`openssl x509
/// -fingerprint -sha256` prints `AB:CD:…`). The result is lowercase without colons, the form
/// reports carry and the coordinator stores.
pub fn parse_pin(text: &str) -> Result<String, PinError> {
    let pin: String = text.trim().chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PinError { input: text.to_owned() });
    }
    Ok(pin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_read_as_operators_paste_them() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_pin(&hex).unwrap(), hex);
        assert_eq!(parse_pin(&format!(" {} ", hex.to_uppercase())).unwrap(), hex);
        assert_eq!(parse_pin(&vec!["AB"; 32].join(":")).unwrap(), hex);
        for bad in ["", "ab", &"ab".repeat(33), &"zz".repeat(32), "sha256//q83vEjRWeJA="] {
            let err = parse_pin(bad).unwrap_err();
            assert_eq!(err.to_string(), format!("{bad:?} is not a SHA-256 hash (64 hex digits)"));
        }
    }
}
