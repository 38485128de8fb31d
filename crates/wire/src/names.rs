//! The names a feed subscriber gives in its `Hello` (and a relay for its
//! leaves): what brokers and relays accept as a verifier id or a region.

use tonic::Status;

/// Longest verifier id and region accepted.
pub const MAX_NAME_BYTES: usize = 128;

/// `Ok` when `value` may be a verifier id or region called `what`: at most
/// [`MAX_NAME_BYTES`] of letters, digits and `. _ - : / @`, and not empty
/// unless `allow_empty`; else INVALID_ARGUMENT saying why.
pub fn check_name(what: &str, value: &str, allow_empty: bool) -> Result<(), Status> {
    if value.is_empty() && !allow_empty {
        return Err(Status::invalid_argument(format!("{what} is empty")));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(Status::invalid_argument(format!(
            "{what} is {} bytes; at most {MAX_NAME_BYTES}",
            value.len()
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-:/@".contains(*c)))
    {
        return Err(Status::invalid_argument(format!(
            "{what} {value:?} contains {c:?}; use letters, digits and . _ - : / @"
        )));
    }
    Ok(())
}

/// Whether a `Hello`'s verifier id belongs to the certified `name`: the
/// name itself, or `name/<suffix>`.
pub fn verifier_id_matches(name: &str, id: &str) -> bool {
    id == name
        || id
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_id_is_its_certificates_name_or_under_it() {
        assert!(verifier_id_matches("edge", "edge"));
        assert!(verifier_id_matches("edge", "edge/7"));
        assert!(!verifier_id_matches("edge", "edge/"));
        assert!(!verifier_id_matches("edge", "edge-2"));
        assert!(!verifier_id_matches("edge", "edg"));
        assert!(!verifier_id_matches("edge", "other/edge"));
    }

    #[test]
    fn names_are_capped_and_spelled_plainly() {
        assert!(check_name("region", "", true).is_ok());
        assert!(check_name("verifier_id", "", false).is_err());
        assert!(check_name("verifier_id", "edge-1/a@b:c.d_e", false).is_ok());
        assert!(check_name("verifier_id", &"a".repeat(MAX_NAME_BYTES), false).is_ok());
        assert!(check_name("verifier_id", &"a".repeat(MAX_NAME_BYTES + 1), false).is_err());
        assert!(check_name("verifier_id", "edge 1", false).is_err());
    }
}
