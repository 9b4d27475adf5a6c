//! The crate's one error type.

use std::fmt;

use crate::BufferId;

/// What went wrong in a call on a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A constructor was given a zero duration; `parameter` names which one
    /// (`"tick"` or `"expire"`).
    ZeroDuration {
        /// The name of the offending parameter.
        parameter: &'static str,
    },
    /// [`fetch_and_delete`](crate::Buffer::fetch_and_delete) found no live entry under `id`:
    /// it was never stored, was already consumed or deleted, or has expired.
    NotFound {
        /// The id that was asked for.
        id: BufferId,
    },
    /// `try_set` refused: storing the value would have taken the bytes held past the byte
    /// budget. Nothing was stored or evicted; the caller answers "busy" and retries later.
    Full {
        /// The byte budget ([`Builder::max_bytes`](crate::Builder::max_bytes)).
        budget: usize,
        /// The bytes held when the call looked.
        held: usize,
        /// The bytes the refused value weighs.
        asked: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ZeroDuration { parameter } => {
                write!(f, "invalid {parameter}: the {parameter} duration must be greater than zero")
            }
            Error::NotFound { id } => {
                write!(f, "buffer id {id} not found (never stored, already consumed, or expired)")
            }
            Error::Full { budget, held, asked } => {
                write!(f, "byte budget of {budget} bytes full: {held} bytes held, {asked} bytes asked")
            }
        }
    }
}

impl std::error::Error for Error {}

/// Rejects a zero duration, naming the parameter.
pub(crate) fn require_nonzero(parameter: &'static str, value: std::time::Duration) -> Result<(), Error> {
    if value.is_zero() {
        Err(Error::ZeroDuration { parameter })
    } else {
        Ok(())
    }
}
