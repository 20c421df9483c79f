//! Group record section: journal-full policy, suspension and the bitmap of regions changed while suspended.

use crate::format::codec::{Dec, Enc};
use crate::format::FormatError;

// Format: (empty so far)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FullRec {}

impl FullRec {
    pub(crate) fn encode(&self, _e: &mut Enc) {}

    pub(crate) fn decode(_d: &mut Dec<'_>) -> Result<FullRec, FormatError> {
        Ok(FullRec {})
    }
}
