//! A credential presented to revoke it, in the manner of RFC 7009: its
//! signature checked against the cluster's keys, and the status index and
//! tenant it proves. No clock: an expired credential may still be named
//! (whoever holds the lease of its index decides whether it still lives).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::jwt::{KeyLookup, VerifyError, header_json, verify_raw};
use crate::{KeyId, StatusIndex, TenantId};

/// The longest credential accepted for presentation.
pub const MAX_PRESENTED_BYTES: usize = 8 * 1024;

/// What a presented credential proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub key_id: KeyId,
    pub index: StatusIndex,
    pub tenant: TenantId,
}

/// Check `token`'s EdDSA signature with the key its `kid` names in `keys`
/// and read its status index and tenant.
pub fn presented(token: &str, keys: &impl KeyLookup) -> Result<Presented, VerifyError> {
    let malformed = |why: &str| VerifyError::Malformed(why.to_owned());
    let token = token.trim();
    if token.len() > MAX_PRESENTED_BYTES {
        return Err(VerifyError::Malformed(format!(
            "the credential is {} bytes; at most {MAX_PRESENTED_BYTES}",
            token.len()
        )));
    }
    let header = header_json(token)?;
    let alg = header
        .get("alg")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if alg != "EdDSA" {
        return Err(VerifyError::UnsupportedAlgorithm(alg.to_owned()));
    }
    let kid = header
        .get("kid")
        .and_then(|v| v.as_str())
        .ok_or(VerifyError::MissingKeyId)?;
    let public_key = keys
        .public_key(kid)
        .ok_or_else(|| VerifyError::UnknownKeyId(kid.to_owned()))?;
    let key_id = KeyId::new(kid).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let (signed, signature) = token
        .rsplit_once('.')
        .ok_or_else(|| malformed("a JWT has three dot-separated parts"))?;
    let signature: [u8; 64] = URL_SAFE_NO_PAD
        .decode(signature)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| malformed("the signature is not 64 bytes of base64url"))?;
    if !verify_raw(&public_key, signed.as_bytes(), &signature) {
        return Err(VerifyError::BadSignature);
    }
    let payload = signed
        .split_once('.')
        .map(|(_, payload)| payload)
        .ok_or_else(|| malformed("a JWT has three dot-separated parts"))?;
    let claims: serde_json::Value = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| malformed("the payload is not base64url JSON"))?;
    let idx = claims["status"]["status_list"]["idx"]
        .as_u64()
        .ok_or_else(|| VerifyError::BadClaims("no status.status_list.idx".into()))?;
    // The position in the list its uri names, as `Claims::status_index`.
    let index = claims["status"]["status_list"]["uri"]
        .as_str()
        .and_then(|uri| crate::status_list::index_of(uri, idx))
        .unwrap_or(idx);
    let tenant = claims["tenant"]
        .as_str()
        .ok_or_else(|| VerifyError::BadClaims("no tenant".into()))
        .and_then(|t| TenantId::new(t).map_err(|e| VerifyError::BadClaims(e.to_string())))?;
    Ok(Presented {
        key_id,
        index: StatusIndex(index),
        tenant,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{Claims, SigningKeyPair, StatusClaim, StatusListRef, WorkloadId};

    fn pair(seed: u8) -> SigningKeyPair {
        SigningKeyPair::from_seed(KeyId::new(format!("k{seed}")).unwrap(), [seed; 32])
    }

    fn credential(key: &SigningKeyPair, tenant: &str, index: u64) -> String {
        let claims = Claims {
            iss: "lapse".into(),
            sub: WorkloadId::new("spiffe://acme.example/app").unwrap(),
            aud: vec!["billing".into()],
            iat: 1,
            nbf: 1,
            exp: 2,
            jti: "j".into(),
            tenant: TenantId::new(tenant).unwrap(),
            scopes: vec![],
            status: StatusClaim {
                status_list: StatusListRef {
                    idx: index,
                    uri: "u".into(),
                },
            },
            cnf: None,
            chain: None,
            agent: Default::default(),
        };
        key.sign(&claims).unwrap()
    }

    #[test]
    fn proves_its_index_and_tenant_only_with_a_known_key_and_a_whole_signature() {
        let key = pair(1);
        let keys: BTreeMap<String, [u8; 32]> =
            [("k1".to_owned(), key.public_key())].into_iter().collect();
        let token = credential(&key, "acme", 42);
        // Expired long ago: still proves what it names.
        assert_eq!(
            presented(&token, &keys),
            Ok(Presented {
                key_id: KeyId::new("k1").unwrap(),
                index: StatusIndex(42),
                tenant: TenantId::new("acme").unwrap(),
            })
        );
        assert_eq!(presented(&format!("{token}\n"), &keys).unwrap().index.0, 42);
        // Another key, unknown to the cluster.
        let stranger = credential(&pair(2), "acme", 42);
        assert!(matches!(
            presented(&stranger, &keys),
            Err(VerifyError::UnknownKeyId(_))
        ));
        // The payload changed to claim another tenant: the signature fails.
        let (head, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD
            .encode(r#"{"tenant":"beta","status":{"status_list":{"idx":42,"uri":"u"}}}"#);
        let forged = format!("{head}.{forged_payload}.{signature}");
        assert_eq!(presented(&forged, &keys), Err(VerifyError::BadSignature));
        for bad in ["", "a.b", "a.b.c", &"x".repeat(MAX_PRESENTED_BYTES + 1)] {
            assert!(presented(bad, &keys).is_err(), "{bad:.20}");
        }
    }
}
