//! Recovery: the last checkpoint plus the records of the log that follows it.

use std::fs;
use std::path::Path;

use super::{apply, MetaError, State, CHECKPOINT_FILE, LOG_FILE};
use crate::format::meta_record::LOG_HEADER_SIZE;
use crate::format::{Checkpoint, LogHeader, RecordFrame};

/// What recovery found.
pub struct Recovered {
    pub state: State,
    /// Records replayed from the log.
    pub replayed: u64,
    /// Where the valid part of the log ends (a torn tail after it is to be cut off).
    pub log_valid_len: u64,
    /// The log's epoch matches the checkpoint and can be appended to; false means a fresh log
    /// must be created (the old one predates the checkpoint).
    pub log_usable: bool,
    /// Warnings (torn tail, stale log), each naming file and offset.
    pub warnings: Vec<String>,
}

/// Read `<dir>/checkpoint` and replay `<dir>/meta.log` after it. Reads only; nothing is changed
/// on disk (the caller truncates a torn tail when it opens the log for writing).
pub fn recover(dir: &Path) -> Result<Recovered, MetaError> {
    let ck_path = dir.join(CHECKPOINT_FILE);
    let ck_bytes = fs::read(&ck_path).map_err(|e| MetaError::io("read", &ck_path, e))?;
    let corrupt = |source| MetaError::Corrupt {
        path: ck_path.clone(),
        offset: 0,
        source,
    };
    let mut state =
        State::from_checkpoint(Checkpoint::decode(&ck_bytes).map_err(corrupt)?).map_err(corrupt)?;

    let log_path = dir.join(LOG_FILE);
    let mut warnings = Vec::new();
    let log = match fs::read(&log_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            warnings.push(format!(
                "{} is missing; starting a new log after checkpoint epoch {}",
                log_path.display(),
                state.epoch
            ));
            return Ok(Recovered {
                state,
                replayed: 0,
                log_valid_len: 0,
                log_usable: false,
                warnings,
            });
        }
        Err(e) => return Err(MetaError::io("read", &log_path, e)),
    };
    let header = LogHeader::decode(&log).map_err(|source| MetaError::Corrupt {
        path: log_path.clone(),
        offset: 0,
        source,
    })?;
    if header.pool_id != state.pool_id {
        return Err(MetaError::Mismatch {
            path: log_path,
            detail: format!(
                "belongs to pool {:016x}, the checkpoint to pool {:016x}",
                header.pool_id, state.pool_id
            ),
        });
    }
    if header.epoch + 1 == state.epoch {
        // Crash between writing checkpoint E+1 and the fresh log E+1: every record of this
        // log is inside the checkpoint already.
        warnings.push(format!(
            "{} has epoch {}, older than checkpoint epoch {}: its records are in the checkpoint; starting a new log",
            log_path.display(),
            header.epoch,
            state.epoch
        ));
        return Ok(Recovered {
            state,
            replayed: 0,
            log_valid_len: 0,
            log_usable: false,
            warnings,
        });
    }
    if header.epoch != state.epoch {
        return Err(MetaError::Mismatch {
            path: log_path,
            detail: format!(
                "log epoch {} does not follow checkpoint epoch {}",
                header.epoch, state.epoch
            ),
        });
    }

    let mut pos = LOG_HEADER_SIZE;
    let mut replayed = 0;
    while pos < log.len() {
        match RecordFrame::parse(&log[pos..]) {
            RecordFrame::Record(rec, n) => {
                apply(&mut state, &rec).map_err(|detail| MetaError::Inconsistent {
                    path: log_path.clone(),
                    offset: pos as u64,
                    detail,
                })?;
                replayed += 1;
                pos += n;
            }
            RecordFrame::Incomplete | RecordFrame::Corrupt(_) => {
                // A torn tail has nothing valid after it. A valid frame later in the file
                // means this damage is in the middle of the log: refuse.
                if let Some(later) = find_valid_frame_after(&log, pos) {
                    let source = match RecordFrame::parse(&log[pos..]) {
                        RecordFrame::Corrupt(e) => e,
                        _ => crate::format::FormatError::Invalid {
                            what: "metadata record",
                            detail: format!(
                                "length field overruns valid records (next valid frame at offset {later})"
                            ),
                        },
                    };
                    return Err(MetaError::Corrupt {
                        path: log_path,
                        offset: pos as u64,
                        source,
                    });
                }
                warnings.push(format!(
                    "{}: torn tail at offset {} ({} bytes) is cut off",
                    log_path.display(),
                    pos,
                    log.len() - pos
                ));
                break;
            }
        }
    }
    Ok(Recovered {
        state,
        replayed,
        log_valid_len: pos as u64,
        log_usable: true,
        warnings,
    })
}

/// The offset of the first whole, checksummed frame strictly after `pos`, if any.
fn find_valid_frame_after(log: &[u8], pos: usize) -> Option<usize> {
    (pos + 1..log.len()).find(|&p| matches!(RecordFrame::parse(&log[p..]), RecordFrame::Record(..)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::MetaRecord;
    use crate::meta::{write_checkpoint, MetaLog};

    fn setup() -> (tempfile::TempDir, MetaLog) {
        let d = tempfile::tempdir().unwrap();
        let ck = Checkpoint {
            pool_id: 1,
            epoch: 1,
            extent_size: 4096,
            next_id: 1,
            ..Default::default()
        };
        write_checkpoint(d.path(), &ck).unwrap();
        let mut log = MetaLog::create(d.path(), 1, 1).unwrap();
        for i in 1..=5 {
            log.append(&MetaRecord::VolumeCreate {
                id: i,
                name: format!("v{i}"),
                size: 1 << 20,
                tier: "fast".into(),
                created: 0,
            })
            .unwrap();
        }
        (d, log)
    }

    #[test]
    fn replays_all_records() {
        let (d, _log) = setup();
        let r = recover(d.path()).unwrap();
        assert_eq!(r.replayed, 5);
        assert_eq!(r.state.volumes.len(), 5);
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn torn_tail_is_cut_with_warning() {
        let (d, log) = setup();
        let good = log.len();
        let p = d.path().join(LOG_FILE);
        let mut b = fs::read(&p).unwrap();
        b.extend_from_slice(&[7, 0, 0, 0, 1, 2]);
        fs::write(&p, &b).unwrap();
        let r = recover(d.path()).unwrap();
        assert_eq!(r.replayed, 5);
        assert_eq!(r.log_valid_len, good);
        assert!(r.warnings[0].contains(&format!("offset {good}")));
    }

    #[test]
    fn middle_corruption_is_an_error_naming_the_offset() {
        let (d, _log) = setup();
        let p = d.path().join(LOG_FILE);
        let mut b = fs::read(&p).unwrap();
        b[LOG_HEADER_SIZE + 12] ^= 0xff;
        fs::write(&p, &b).unwrap();
        let e = recover(d.path()).err().unwrap().to_string();
        assert!(e.contains("meta.log"), "{e}");
        assert!(e.contains(&format!("offset {LOG_HEADER_SIZE}")), "{e}");
    }

    #[test]
    fn corrupt_length_in_middle_is_an_error() {
        let (d, _log) = setup();
        let p = d.path().join(LOG_FILE);
        let mut b = fs::read(&p).unwrap();
        b[LOG_HEADER_SIZE + 2] = 0x7f; // huge length in the first record
        fs::write(&p, &b).unwrap();
        assert!(recover(d.path()).is_err());
    }

    #[test]
    fn stale_log_after_rotation_crash_is_ignored() {
        let (d, _log) = setup();
        let mut r = recover(d.path()).unwrap();
        r.state.epoch = 2;
        write_checkpoint(d.path(), &r.state.to_checkpoint()).unwrap();
        let r2 = recover(d.path()).unwrap();
        assert!(!r2.log_usable);
        assert_eq!(r2.state.volumes.len(), 5);
    }
}
