//! The IETF Token Status List (draft-ietf-oauth-status-list): how a
//! credential's status index maps to a list and a position in it, and the
//! status list token brokers serve.
//!
//! Lapse's status indices are one sequence for the whole cluster, leased to
//! brokers in blocks. Lists are blocks of [`STATUS_LIST_SIZE`] indices,
//! numbered from 1: list `k` holds indices `(k - 1) * STATUS_LIST_SIZE` up to
//! `k * STATUS_LIST_SIZE`, and a credential's `status.status_list` names its
//! list (`uri`, ending `/statuslists/<k>`) and its position in it (`idx`).
//! One bit per credential (`bits: 1`): 1 is INVALID (revoked), 0 VALID.

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// How many status indices one list holds: 2^20, 128 KiB of bits before
/// compression.
pub const STATUS_LIST_SIZE: u64 = 1 << 20;
/// The `typ` of a status list token.
pub const STATUS_LIST_TYPE: &str = "statuslist+jwt";
/// The path segment naming lists under the issuer.
const LISTS_SEGMENT: &str = "/statuslists/";

/// The list (numbered from 1) and the position in it of status `index`.
pub fn locate(index: u64) -> (u64, u64) {
    (index / STATUS_LIST_SIZE + 1, index % STATUS_LIST_SIZE)
}

/// The URI of list `list` under `issuer`.
pub fn list_uri(issuer: &str, list: u64) -> String {
    format!("{}{LISTS_SEGMENT}{list}", issuer.trim_end_matches('/'))
}

/// The list a status list `uri` names, if it ends `/statuslists/<k>` with
/// `k` at least 1.
pub fn list_of_uri(uri: &str) -> Option<u64> {
    // Read on every verification: the number after the last slash, then
    // the segment before it (no substring search).
    let slash = uri.rfind('/')?;
    let number = &uri[slash + 1..];
    if !uri[..=slash].ends_with(LISTS_SEGMENT) {
        return None;
    }
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok().filter(|k| *k >= 1)
}

/// The cluster-wide status index of position `idx` of the list `uri`
/// names; `None` when the URI names no list or `idx` is beyond a list.
pub fn index_of(uri: &str, idx: u64) -> Option<u64> {
    let list = list_of_uri(uri)?;
    if idx >= STATUS_LIST_SIZE {
        return None;
    }
    (list - 1).checked_mul(STATUS_LIST_SIZE)?.checked_add(idx)
}

/// `status_list` of a status list token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusListBits {
    /// Bits per credential: always 1 here.
    pub bits: u8,
    /// The bytes, ZLIB-compressed (RFC 1950), base64url without padding.
    pub lst: String,
}

/// The claims of a status list token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusListClaims {
    /// The cluster's issuer.
    pub iss: String,
    /// The list's URI, as credentials name it.
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    /// Seconds a relying party may cache the list for.
    pub ttl: u64,
    pub status_list: StatusListBits,
}

/// `lst` for a list of [`STATUS_LIST_SIZE`] credentials with those at
/// `revoked` positions INVALID (positions beyond the list are ignored).
/// Position `i` is bit `i % 8` (least significant first) of byte `i / 8`.
pub fn encode_list(revoked: impl IntoIterator<Item = u64>) -> String {
    let mut bytes = vec![0u8; (STATUS_LIST_SIZE / 8) as usize];
    for position in revoked {
        if position < STATUS_LIST_SIZE {
            bytes[(position / 8) as usize] |= 1 << (position % 8);
        }
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(&bytes)
        .expect("writing to memory cannot fail");
    URL_SAFE_NO_PAD.encode(encoder.finish().expect("writing to memory cannot fail"))
}

/// Why an `lst` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusListError {
    #[error("lst is not base64url")]
    Base64,
    #[error("lst is not ZLIB data")]
    Zlib,
    #[error("lst holds more than a list of {STATUS_LIST_SIZE} credentials")]
    TooLarge,
}

/// The positions marked INVALID in `lst` (one bit each), reading at most
/// a whole list's bytes, so a hostile list cannot make it allocate more.
pub fn decode_list(lst: &str) -> Result<Vec<u64>, StatusListError> {
    let compressed = URL_SAFE_NO_PAD
        .decode(lst)
        .map_err(|_| StatusListError::Base64)?;
    let limit = STATUS_LIST_SIZE / 8;
    let mut bytes = Vec::new();
    flate2::read::ZlibDecoder::new(compressed.as_slice())
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|_| StatusListError::Zlib)?;
    if bytes.len() as u64 > limit {
        return Err(StatusListError::TooLarge);
    }
    Ok(bytes
        .iter()
        .enumerate()
        .flat_map(|(at, byte)| {
            (0..8)
                .filter(move |bit| byte & (1 << bit) != 0)
                .map(move |bit| at as u64 * 8 + bit)
        })
        .collect())
}

impl crate::SigningKeyPair {
    /// Sign a status list token: `alg: EdDSA`, `typ: statuslist+jwt`, this
    /// key's id.
    pub fn sign_status_list(
        &self,
        claims: &StatusListClaims,
    ) -> Result<String, crate::CredentialError> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.typ = Some(STATUS_LIST_TYPE.into());
        header.kid = Some(self.key_id().to_string());
        self.sign_with_header(&header, claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_map_to_lists_and_back() {
        assert_eq!(locate(0), (1, 0));
        assert_eq!(locate(STATUS_LIST_SIZE - 1), (1, STATUS_LIST_SIZE - 1));
        assert_eq!(locate(STATUS_LIST_SIZE + 5), (2, 5));
        for index in [0, 42, STATUS_LIST_SIZE, 3 * STATUS_LIST_SIZE + 7] {
            let (list, idx) = locate(index);
            let uri = list_uri("https://lapse.example/", list);
            assert_eq!(index_of(&uri, idx), Some(index), "{uri}");
        }
        assert_eq!(list_uri("https://a", 3), "https://a/statuslists/3");
        for bad in [
            "https://a/statuslists/0",
            "https://a/statuslists/",
            "https://a/statuslists/x1",
            "https://a/lists/1",
            "https://a/statuslists/-1",
            "https://a/statuslists/1/2",
            "https://a/statuslists/1/",
            "statuslists/1",
            "/statuslists",
            "",
        ] {
            assert_eq!(list_of_uri(bad), None, "{bad}");
        }
        for good in [
            "/statuslists/5",
            "https://a/statuslists/statuslists/5",
            "https://a/x/statuslists/5",
            "https://a/statuslists/x/statuslists/5",
        ] {
            assert_eq!(list_of_uri(good), Some(5), "{good}");
        }
        assert_eq!(index_of("https://a/statuslists/1", STATUS_LIST_SIZE), None);
        assert_eq!(
            index_of("https://a/statuslists/99999999999999999999", 0),
            None
        );
    }

    #[test]
    fn a_list_round_trips_and_is_small_when_sparse() {
        let revoked = vec![0, 7, 8, 1000, STATUS_LIST_SIZE - 1];
        let lst = encode_list(revoked.iter().copied().chain([STATUS_LIST_SIZE]));
        assert_eq!(decode_list(&lst).unwrap(), revoked);
        // 128 KiB of bits compress to well under 1 KiB when few are set.
        assert!(lst.len() < 1024, "{}", lst.len());
        assert_eq!(decode_list(&encode_list([])).unwrap(), Vec::<u64>::new());
    }

    #[test]
    fn a_hostile_lst_errors_without_allocating_beyond_a_list() {
        assert_eq!(decode_list("!!"), Err(StatusListError::Base64));
        assert_eq!(decode_list("AAAA"), Err(StatusListError::Zlib));
        // Twice a list's bytes, compressed: refused.
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        encoder
            .write_all(&vec![0u8; (STATUS_LIST_SIZE / 4) as usize])
            .unwrap();
        let big = URL_SAFE_NO_PAD.encode(encoder.finish().unwrap());
        assert_eq!(decode_list(&big), Err(StatusListError::TooLarge));
    }
}
