//! Group record section: epochs: takeover, split-brain refusal and failback.

use crate::format::codec::{Dec, Enc};
use crate::format::FormatError;

// Format: (empty so far)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandoverRec {}

impl HandoverRec {
    pub(crate) fn encode(&self, _e: &mut Enc) {}

    pub(crate) fn decode(_d: &mut Dec<'_>) -> Result<HandoverRec, FormatError> {
        Ok(HandoverRec {})
    }
}
