//! Group record section: retention of applied segments, apply delay and the markers (group snapshots) seen.

use crate::format::codec::{Dec, Enc};
use crate::format::FormatError;

// Format: (empty so far)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PitrRec {}

impl PitrRec {
    pub(crate) fn encode(&self, _e: &mut Enc) {}

    pub(crate) fn decode(_d: &mut Dec<'_>) -> Result<PitrRec, FormatError> {
        Ok(PitrRec {})
    }
}
