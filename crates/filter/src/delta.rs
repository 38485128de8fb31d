//! `RevokedDelta`: the change between two epochs of a [`RevokedSet`]
//! (indices newly revoked, and an optional forward move of the window),
//! with its own compact Rice-coded encoding.
//!
//! [`RevokedSet`]: crate::RevokedSet

use crate::codec::{Reader, choose_rice_k, put_varint, rice_encode};
use crate::error::FilterError;
use crate::gaps::{MAX_INDICES, check_canonical_k, decode_indices, gaps_from};

/// Indices revoked between `from_epoch` and `to_epoch`, and optionally a new
/// window base (everything below it drops out of the set).
///
/// Wire form: `varint from_epoch, varint to_epoch, u8 has_base,
/// [varint removed_below], varint count, [varint first, u8 k, rice(gaps)]`.
/// The first added index is written as a plain varint, the rest as Rice-coded
/// gaps (`next - previous - 1`), so the delta is self-contained and does not
/// depend on the receiver's window base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedDelta {
    from_epoch: u64,
    to_epoch: u64,
    added: Vec<u64>,
    removed_below: Option<u64>,
}

impl RevokedDelta {
    /// A delta; `added` must be strictly increasing and `from_epoch < to_epoch`.
    pub fn new(
        from_epoch: u64,
        to_epoch: u64,
        added: Vec<u64>,
        removed_below: Option<u64>,
    ) -> Result<Self, FilterError> {
        if from_epoch >= to_epoch {
            return Err(FilterError::InvalidParameter(
                "from_epoch must be < to_epoch",
            ));
        }
        if added.windows(2).any(|w| w[0] >= w[1]) {
            return Err(FilterError::NotSorted);
        }
        // No window reaches u64::MAX (`base + universe` must not overflow),
        // so no delta can add it; refusing it keeps every delta encodable.
        if added.last() == Some(&u64::MAX) {
            return Err(FilterError::InvalidParameter(
                "index u64::MAX lies outside every window",
            ));
        }
        if added.len() as u64 > MAX_INDICES {
            return Err(FilterError::TooLarge {
                what: "delta",
                len: added.len() as u64,
                max: MAX_INDICES,
            });
        }
        Ok(Self {
            from_epoch,
            to_epoch,
            added,
            removed_below,
        })
    }

    /// Epoch this delta applies to.
    pub fn from_epoch(&self) -> u64 {
        self.from_epoch
    }

    /// Epoch reached after applying it.
    pub fn to_epoch(&self) -> u64 {
        self.to_epoch
    }

    /// Newly revoked indices, strictly increasing.
    pub fn added(&self) -> &[u64] {
        &self.added
    }

    /// New window base, if the window moved.
    pub fn removed_below(&self) -> Option<u64> {
        self.removed_below
    }

    /// The compact encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint(out, self.from_epoch);
        put_varint(out, self.to_epoch);
        match self.removed_below {
            None => out.push(0),
            Some(b) => {
                out.push(1);
                put_varint(out, b);
            }
        }
        put_varint(out, self.added.len() as u64);
        if let Some((&first, rest)) = self.added.split_first() {
            put_varint(out, first);
            let gaps = gaps_from(first + 1, rest);
            let k = choose_rice_k(&gaps);
            out.push(k);
            rice_encode(out, gaps, k);
        }
    }

    /// Decode a complete encoding produced by [`RevokedDelta::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, FilterError> {
        let mut r = Reader::new(bytes);
        let d = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(d)
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self, FilterError> {
        let from_epoch = r.varint()?;
        let to_epoch = r.varint()?;
        if from_epoch >= to_epoch {
            return Err(FilterError::Corrupt("delta epochs not increasing".into()));
        }
        let removed_below = match r.u8()? {
            0 => None,
            1 => Some(r.varint()?),
            f => return Err(FilterError::Corrupt(format!("bad window flag {f}"))),
        };
        let count = r.varint()?;
        if count > MAX_INDICES {
            return Err(FilterError::TooLarge {
                what: "delta",
                len: count,
                max: MAX_INDICES,
            });
        }
        let added = if count == 0 {
            Vec::new()
        } else {
            let first = r.varint()?;
            let k = r.u8()?;
            let start = first
                .checked_add(1)
                .ok_or_else(|| FilterError::Corrupt("index overflows u64".into()))?;
            let rest = if count > 1 {
                decode_indices(r, count - 1, k, start, |_| Ok(()))?
            } else {
                Vec::new()
            };
            check_canonical_k(k, &gaps_from(start, &rest))?;
            let mut v = Vec::with_capacity(rest.len() + 1);
            v.push(first);
            v.extend(rest);
            if v.last() == Some(&u64::MAX) {
                return Err(FilterError::Corrupt(
                    "index u64::MAX lies outside every window".into(),
                ));
            }
            v
        };
        Ok(Self {
            from_epoch,
            to_epoch,
            added,
            removed_below,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_validates() {
        assert_eq!(
            RevokedDelta::new(1, 2, vec![3, 3], None),
            Err(FilterError::NotSorted)
        );
        assert!(RevokedDelta::new(2, 2, vec![], None).is_err());
    }

    #[test]
    fn round_trip() {
        let d = RevokedDelta::new(4, 5, vec![12, 13, 40, u64::MAX - 1], Some(11)).unwrap();
        assert_eq!(RevokedDelta::decode(&d.encode()).unwrap(), d);
        let d1 = RevokedDelta::new(0, 1, vec![7], None).unwrap();
        assert_eq!(RevokedDelta::decode(&d1.encode()).unwrap(), d1);
    }
}
