//! The error type shared by every constructor and decoder in this crate.

use thiserror::Error;

/// Everything that can go wrong building, mutating or decoding a filter.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FilterError {
    /// The input ended before a complete value could be read.
    #[error("input truncated")]
    Truncated,
    /// The message does not start with the `LPSF` magic.
    #[error("bad magic")]
    BadMagic,
    /// The container version is not one this build understands.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    /// The container kind byte is unknown.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The CRC-32 trailer does not match the message.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        /// CRC stored in the trailer.
        stored: u32,
        /// CRC computed over the received bytes.
        computed: u32,
    },
    /// A length or count exceeds a hard limit.
    #[error("{what} too large: {len} > {max}")]
    TooLarge {
        /// What was being sized.
        what: &'static str,
        /// The requested length or count.
        len: u64,
        /// The limit it exceeded.
        max: u64,
    },
    /// An index lies outside the live window `[base, base + universe)`.
    #[error("index {index} outside window [{base}, {base} + {universe})")]
    OutOfWindow {
        /// The offending index.
        index: u64,
        /// Window start.
        base: u64,
        /// Window length.
        universe: u64,
    },
    /// Input that must be strictly increasing was not (unsorted or duplicate).
    #[error("values not strictly increasing")]
    NotSorted,
    /// A delta tried to add an index that is already revoked.
    #[error("index {0} already present")]
    AlreadyPresent(u64),
    /// A delta tried to move the window base backwards.
    #[error("window base may only move forward: current {current}, requested {requested}")]
    WindowBackwards {
        /// The current base.
        current: u64,
        /// The requested base.
        requested: u64,
    },
    /// A delta does not start at the epoch of the state it is applied to.
    #[error("epoch mismatch: state at {state}, delta from {from} to {to}")]
    EpochMismatch {
        /// Epoch of the state.
        state: u64,
        /// `from_epoch` of the delta.
        from: u64,
        /// `to_epoch` of the delta.
        to: u64,
    },
    /// A caller-supplied parameter is out of range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(&'static str),
    /// Bytes were left over after a complete value was decoded.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
    /// The input is structurally invalid.
    #[error("corrupt input: {0}")]
    Corrupt(String),
}
