//! The state codes of a split-mirror pair, as recorded in the metadata log and checkpoints
//! (`PairState` records, `PairRec.state`). The state machine itself is in `mirror`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PairState {
    Copy = 1,
    Pair = 2,
    Psus = 3,
    CopyRs = 4,
    CopyRsR = 5,
    Psue = 6,
}

impl PairState {
    pub fn from_u8(v: u8) -> Option<PairState> {
        Some(match v {
            1 => PairState::Copy,
            2 => PairState::Pair,
            3 => PairState::Psus,
            4 => PairState::CopyRs,
            5 => PairState::CopyRsR,
            6 => PairState::Psue,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            PairState::Copy => "COPY",
            PairState::Pair => "PAIR",
            PairState::Psus => "PSUS",
            PairState::CopyRs => "COPY(RS)",
            PairState::CopyRsR => "COPY(RS-R)",
            PairState::Psue => "PSUE",
        }
    }

    /// Host writes to the P-VOL go to the S-VOL too.
    pub fn dual_writes(self) -> bool {
        matches!(
            self,
            PairState::Copy | PairState::Pair | PairState::CopyRs | PairState::CopyRsR
        )
    }
}
