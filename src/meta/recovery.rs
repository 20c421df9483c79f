//! Recovery: the last checkpoint plus the records of the log that follows it.

use std::fs;
use std::path::Path;

use serde::Serialize;

use super::array_copy::read_array_copies;
use super::{apply, MetaError, State, CHECKPOINT_FILES, LOG_FILE};
use crate::format::meta_record::LOG_HEADER_COPY;
use crate::format::{Checkpoint, LogHeader, MetaRecord, RecordFrame};

/// How recovery treats damage in the middle of the metadata log (a torn tail is cut off
/// in both modes: it is what a crash leaves).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryMode {
    /// Refuse: an error naming the file and offset, nothing applied.
    #[default]
    Strict,
    /// Apply the valid prefix up to the first damaged or inapplicable record and report
    /// what was lost; the opener serves the result read-only until an operator confirms.
    Salvage,
}

impl std::str::FromStr for RecoveryMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" => Ok(RecoveryMode::Strict),
            "salvage" => Ok(RecoveryMode::Salvage),
            _ => Err(format!("unknown recovery mode '{s}' (strict or salvage)")),
        }
    }
}

/// One whole record found after the damage point and not applied.
#[derive(Debug, Clone, Serialize)]
pub struct LostRecord {
    pub offset: u64,
    pub kind: String,
    /// Volumes (or snapshots' volumes) it touched, by name where known (`#id` otherwise).
    pub volumes: Vec<String>,
    /// Logical extents it mapped or unmapped.
    pub extents: u64,
}

/// What a salvage left out: everything from the first damaged record to the end of the log.
#[derive(Debug, Clone, Serialize)]
pub struct SalvageReport {
    pub log: String,
    /// Offset of the first record not applied.
    pub damaged_at: u64,
    pub reason: String,
    /// Records applied before it.
    pub records_applied: u64,
    /// Bytes of the log from `damaged_at` to its end.
    pub bytes_lost: u64,
    /// The records after the damage that still verify (none of them is applied: each may
    /// depend on the lost one).
    pub lost_records: Vec<LostRecord>,
    /// Every volume the lost records touched.
    pub volumes: Vec<String>,
    /// Logical extents the lost records mapped or unmapped.
    pub extents: u64,
}

impl std::fmt::Display for SalvageReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "salvage: {} damaged at offset {}: {}",
            self.log, self.damaged_at, self.reason
        )?;
        writeln!(
            f,
            "  {} records applied before it; not applied: the damaged record and {} later records that verify ({} bytes of the log)",
            self.records_applied,
            self.lost_records.len(),
            self.bytes_lost
        )?;
        for r in &self.lost_records {
            writeln!(
                f,
                "  lost: offset {} {} volumes [{}] extents {}",
                r.offset,
                r.kind,
                r.volumes.join(", "),
                r.extents
            )?;
        }
        write!(
            f,
            "  volumes touched by lost records: [{}]; logical extents: {}",
            self.volumes.join(", "),
            self.extents
        )
    }
}

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
    /// The log's header (its version says where the records start).
    pub log_header: LogHeader,
    /// The checkpoint copy the state came from.
    pub checkpoint_file: String,
    /// A copy of the checkpoint or of the log header is damaged, missing or older than the
    /// one used: the opener writes a fresh checkpoint (both slots) and log to rewrite it.
    pub needs_rewrite: bool,
    /// Warnings (torn tail, stale log, skipped copies), each naming file and offset.
    pub warnings: Vec<String>,
    /// Salvage mode only: the log was damaged and only its valid prefix was applied.
    pub salvage: Option<SalvageReport>,
}

/// One checkpoint slot, read and verified.
fn read_slot(dir: &Path, name: &'static str) -> Result<State, String> {
    let path = dir.join(name);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{} is missing", path.display()))
        }
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    let corrupt = |e: crate::format::FormatError| format!("{} at offset 0: {e}", path.display());
    State::from_checkpoint(Checkpoint::decode(&bytes).map_err(corrupt)?).map_err(corrupt)
}

/// The newest checkpoint copy that verifies (the epoch is the generation number) among
/// the two pool-directory slots and the copy in every array file, with a warning for each
/// copy skipped and why. Returns the state, the name of the copy used, and whether a copy
/// must be rewritten (damaged, missing or older than the one used).
fn newest_checkpoint(
    dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<(State, String, bool), MetaError> {
    let mut cands: Vec<(String, Result<State, String>)> = CHECKPOINT_FILES
        .iter()
        .map(|&name| (name.to_string(), read_slot(dir, name)))
        .collect();
    let slots = cands.len();
    let arrays = read_array_copies(dir);
    for a in &arrays {
        let copy = match &a.copy {
            Ok((st, slot)) => Ok((st.clone(), *slot)),
            Err(e) => Err(e.clone()),
        };
        cands.push((
            match &copy {
                Ok((_, slot)) => format!("{} (array copy, label {})", a.file, slot + 1),
                Err(_) => format!("{} (array copy)", a.file),
            },
            copy.map(|(st, _)| st),
        ));
    }
    let best = cands
        .iter()
        .enumerate()
        .filter_map(|(i, (_, r))| r.as_ref().ok().map(|s| (s.epoch, std::cmp::Reverse(i))))
        .max()
        .map(|(_, std::cmp::Reverse(i))| i);
    let Some(best) = best else {
        return Err(MetaError::NoCheckpoint {
            detail: cands
                .iter()
                .map(|(_, r)| r.as_ref().err().cloned().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("; "),
        });
    };
    let best_name = cands[best].0.clone();
    let chosen = std::mem::replace(&mut cands[best].1, Err(String::new())).expect("best copy");
    // The arrays the chosen state lists, by file: a copy is expected in each one present.
    let listed: Vec<&str> = chosen.arrays.iter().map(|a| a.file.as_str()).collect();
    let mut needs_rewrite = false;
    for (i, (name, r)) in cands.into_iter().enumerate() {
        if i == best {
            continue;
        }
        let array = i.checked_sub(slots).map(|j| &arrays[j]);
        if let Some(a) = array {
            if !listed.contains(&a.file.as_str()) || a.pool_id.is_some_and(|p| p != chosen.pool_id)
            {
                // Not an array of this pool (or of this state): neither used nor rewritten.
                if r.is_ok() || a.pool_id.is_some() {
                    warnings.push(format!(
                        "{}: not an array of pool {:016x} at epoch {}; its copy is not used",
                        dir.join(&a.file).display(),
                        chosen.pool_id,
                        chosen.epoch
                    ));
                }
                continue;
            }
        }
        match r {
            Ok(st) if st.pool_id != chosen.pool_id => {
                return Err(MetaError::Mismatch {
                    path: dir.join(&name),
                    detail: format!(
                        "belongs to pool {:016x}, {} to pool {:016x}",
                        st.pool_id, best_name, chosen.pool_id
                    ),
                })
            }
            // Same epoch: a good copy, nothing to rewrite.
            Ok(st) if st.epoch == chosen.epoch => {}
            Ok(st) => {
                needs_rewrite = true;
                warnings.push(format!(
                    "{}: checkpoint epoch {} is older than epoch {} of {} (a checkpoint cut short by a crash); rewritten",
                    dir.join(&name).display(),
                    st.epoch,
                    chosen.epoch,
                    best_name
                ))
            }
            Err(why) => {
                needs_rewrite = true;
                warnings.push(format!(
                    "checkpoint copy skipped: {why}; epoch {} of {} used, the copy is rewritten",
                    chosen.epoch, best_name
                ))
            }
        }
    }
    Ok((chosen, best_name, needs_rewrite))
}

/// The log's header from the first copy that verifies (version 1 logs have one copy).
fn log_header(
    log: &[u8],
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<(LogHeader, bool), MetaError> {
    let second = || log.get(LOG_HEADER_COPY..).map(LogHeader::decode);
    match LogHeader::decode(log) {
        Ok(h) if h.version == 1 => Ok((h, false)),
        Ok(h) => match second() {
            Some(Ok(h2)) if h2 == h => Ok((h, false)),
            other => {
                let why = match other {
                    Some(Err(e)) => e.to_string(),
                    Some(Ok(h2)) => {
                        format!("differs from copy 1 (epoch {} vs {})", h2.epoch, h.epoch)
                    }
                    None => "missing (file too short)".into(),
                };
                warnings.push(format!(
                    "{}: log header copy 2 at offset {LOG_HEADER_COPY} skipped: {why}; copy 1 at offset 0 used, the log is rewritten",
                    path.display()
                ));
                Ok((h, true))
            }
        },
        Err(e1) => match second() {
            Some(Ok(h2)) if h2.version != 1 => {
                warnings.push(format!(
                    "{}: log header copy 1 at offset 0 skipped: {e1}; copy 2 at offset {LOG_HEADER_COPY} used, the log is rewritten",
                    path.display()
                ));
                Ok((h2, true))
            }
            _ => Err(MetaError::Corrupt {
                path: path.to_path_buf(),
                offset: 0,
                source: e1,
            }),
        },
    }
}

/// Read the newest valid checkpoint copy and replay `<dir>/meta.log` after it. Reads only;
/// nothing is changed on disk (the caller truncates a torn tail when it opens the log for
/// writing, and rewrites damaged copies with a fresh checkpoint when `needs_rewrite`).
pub fn recover(dir: &Path) -> Result<Recovered, MetaError> {
    recover_with(dir, RecoveryMode::Strict)
}

/// `recover` with an explicit policy for damage in the middle of the log.
pub fn recover_with(dir: &Path, mode: RecoveryMode) -> Result<Recovered, MetaError> {
    let mut warnings = Vec::new();
    let (mut state, checkpoint_file, mut needs_rewrite) = newest_checkpoint(dir, &mut warnings)?;
    let fresh = |state, warnings, needs_rewrite| Recovered {
        state,
        replayed: 0,
        log_valid_len: 0,
        log_usable: false,
        log_header: LogHeader::new(0, 0),
        checkpoint_file: checkpoint_file.clone(),
        needs_rewrite,
        warnings,
        salvage: None,
    };

    let log_path = dir.join(LOG_FILE);
    let log = match fs::read(&log_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            warnings.push(format!(
                "{} is missing; starting a new log after checkpoint epoch {}",
                log_path.display(),
                state.epoch
            ));
            return Ok(fresh(state, warnings, needs_rewrite));
        }
        Err(e) => return Err(MetaError::io("read", &log_path, e)),
    };
    let (header, bad_copy) = log_header(&log, &log_path, &mut warnings)?;
    needs_rewrite |= bad_copy;
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
        return Ok(fresh(state, warnings, needs_rewrite));
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

    let mut pos = header.records_offset();
    let mut replayed = 0;
    let mut salvage = None;
    while pos < log.len() {
        match RecordFrame::parse(&log[pos..]) {
            RecordFrame::Record(rec, n) => {
                if let Err(detail) = apply(&mut state, &rec) {
                    if mode == RecoveryMode::Salvage {
                        let reason = format!("record does not apply: {detail}");
                        salvage = Some(report(&log_path, &log, pos, reason, replayed, &state));
                        break;
                    }
                    return Err(MetaError::Inconsistent {
                        path: log_path.clone(),
                        offset: pos as u64,
                        detail,
                    });
                }
                replayed += 1;
                pos += n;
            }
            RecordFrame::Incomplete | RecordFrame::Corrupt(_) => {
                // A torn tail has nothing valid after it. A valid frame later in the file
                // means this damage is in the middle of the log: refuse (strict) or stop
                // here and report what follows (salvage).
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
                    if mode == RecoveryMode::Salvage {
                        let reason = source.to_string();
                        salvage = Some(report(&log_path, &log, pos, reason, replayed, &state));
                        break;
                    }
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
    if let Some(r) = &salvage {
        warnings.push(r.to_string());
    }
    Ok(Recovered {
        state,
        replayed,
        log_valid_len: pos as u64,
        log_usable: true,
        log_header: header,
        checkpoint_file,
        needs_rewrite,
        warnings,
        salvage,
    })
}

/// The salvage report for damage at `pos`: every whole record after it, described.
fn report(
    path: &Path,
    log: &[u8],
    pos: usize,
    reason: String,
    applied: u64,
    st: &State,
) -> SalvageReport {
    let mut names: std::collections::HashMap<u64, String> =
        st.volumes.iter().map(|v| (v.id, v.name.clone())).collect();
    for s in &st.snapshots {
        names.insert(
            s.id,
            format!(
                "{}@{}",
                names.get(&s.volume).cloned().unwrap_or_default(),
                s.name
            ),
        );
    }
    let mut lost = Vec::new();
    let mut p = pos;
    while p < log.len() {
        match RecordFrame::parse(&log[p..]) {
            RecordFrame::Record(rec, n) => {
                lost.push(describe(p as u64, &rec, &mut names));
                p += n;
            }
            _ => match find_valid_frame_after(log, p) {
                Some(next) => p = next,
                None => break,
            },
        }
    }
    let mut volumes: Vec<String> = lost.iter().flat_map(|r| r.volumes.clone()).collect();
    volumes.sort();
    volumes.dedup();
    SalvageReport {
        log: path.display().to_string(),
        damaged_at: pos as u64,
        reason,
        records_applied: applied,
        bytes_lost: (log.len() - pos) as u64,
        extents: lost.iter().map(|r| r.extents).sum(),
        lost_records: lost,
        volumes,
    }
}

/// A lost record's kind, the volumes it touched and the logical extents it (un)mapped.
fn describe(
    offset: u64,
    rec: &MetaRecord,
    names: &mut std::collections::HashMap<u64, String>,
) -> LostRecord {
    let debug = format!("{rec:?}");
    let kind = debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string();
    let name = |names: &std::collections::HashMap<u64, String>, id: u64| {
        names.get(&id).cloned().unwrap_or_else(|| format!("#{id}"))
    };
    let (ids, extents): (Vec<u64>, u64) = match rec {
        MetaRecord::VolumeCreate { id, name: n, .. }
        | MetaRecord::VolumeClone { id, name: n, .. } => {
            names.insert(*id, n.clone());
            (vec![*id], 0)
        }
        MetaRecord::VolumeDelete { id } | MetaRecord::VolumeResize { id, .. } => (vec![*id], 0),
        MetaRecord::MapSet { volume, entries }
        | MetaRecord::MapSetPartial {
            volume, entries, ..
        } => (vec![*volume], entries.len() as u64),
        MetaRecord::Unmap { volume, lexts } => (vec![*volume], lexts.len() as u64),
        MetaRecord::MapShare {
            volume,
            entries,
            holes,
            ..
        } => (vec![*volume], (entries.len() + holes.len()) as u64),
        MetaRecord::SnapshotCreate { volume, .. } | MetaRecord::SnapshotRollback { volume, .. } => {
            (vec![*volume], 0)
        }
        MetaRecord::SnapshotDelete { id } => (vec![*id], 0),
        MetaRecord::PairCreate { pvol, svol, .. } => (vec![*pvol, *svol], 0),
        MetaRecord::GroupDirty {
            volume, regions, ..
        }
        | MetaRecord::GroupClean {
            volume, regions, ..
        } => (vec![*volume], regions.len() as u64),
        _ => (Vec::new(), 0),
    };
    LostRecord {
        offset,
        kind,
        volumes: ids.into_iter().map(|id| name(names, id)).collect(),
        extents,
    }
}

/// The offset of the first whole, checksummed frame strictly after `pos`, if any.
fn find_valid_frame_after(log: &[u8], pos: usize) -> Option<usize> {
    (pos + 1..log.len()).find(|&p| matches!(RecordFrame::parse(&log[p..]), RecordFrame::Record(..)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::meta_record::LOG_RECORDS_V2;
    use crate::format::MetaRecord;
    use crate::meta::{write_checkpoint, MetaLog, CHECKPOINT_COPY_FILE, CHECKPOINT_FILE};

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
        b[LOG_RECORDS_V2 + 12] ^= 0xff;
        fs::write(&p, &b).unwrap();
        let e = recover(d.path()).err().unwrap().to_string();
        assert!(e.contains("meta.log"), "{e}");
        assert!(e.contains(&format!("offset {LOG_RECORDS_V2}")), "{e}");
    }

    #[test]
    fn corrupt_length_in_middle_is_an_error() {
        let (d, _log) = setup();
        let p = d.path().join(LOG_FILE);
        let mut b = fs::read(&p).unwrap();
        b[LOG_RECORDS_V2 + 2] = 0x7f; // huge length in the first record
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

    /// Every flipped byte and every zeroed 4 KiB block of either checkpoint copy or either
    /// log header copy: recovery uses the other copy, names the one it skipped, and asks
    /// for a rewrite; the state is the same.
    #[test]
    fn a_damaged_copy_is_skipped_for_the_other() {
        let (d, _log) = setup();
        let files = [CHECKPOINT_FILE, CHECKPOINT_COPY_FILE, LOG_FILE];
        let orig: Vec<Vec<u8>> = files
            .iter()
            .map(|f| fs::read(d.path().join(f)).unwrap())
            .collect();
        let clean = recover(d.path()).unwrap();
        assert!(!clean.needs_rewrite && clean.warnings.is_empty());
        let restore = || {
            for (f, b) in files.iter().zip(&orig) {
                fs::write(d.path().join(f), b).unwrap();
            }
        };
        let mut cases: Vec<(usize, usize, bool)> = Vec::new(); // (file, offset, zero block)
        for (fi, b) in orig.iter().enumerate() {
            // The log's records are not copies: only its two header copies.
            let offsets: Vec<usize> = if fi == 2 {
                (0..64).chain(4096..4160).collect()
            } else {
                (0..b.len()).collect()
            };
            for off in offsets.into_iter().step_by(3) {
                cases.push((fi, off, false));
            }
        }
        cases.push((0, 0, true));
        cases.push((1, 0, true));
        cases.push((2, 0, true));
        cases.push((2, 4096, true));
        for (fi, off, zero) in cases {
            restore();
            let p = d.path().join(files[fi]);
            let mut b = orig[fi].clone();
            if zero {
                let end = (off + 4096).min(b.len());
                b[off..end].fill(0);
            } else {
                b[off] ^= 0x5a;
            }
            fs::write(&p, &b).unwrap();
            let r = recover(d.path()).unwrap_or_else(|e| panic!("{} offset {off}: {e}", files[fi]));
            assert_eq!(r.replayed, 5, "{} offset {off}", files[fi]);
            assert_eq!(r.state.volumes.len(), 5);
            assert!(
                r.needs_rewrite,
                "{} offset {off}: no rewrite asked",
                files[fi]
            );
            assert!(
                r.warnings
                    .iter()
                    .any(|w| w.contains(files[fi]) && w.contains("skipped")),
                "{} offset {off}: {:?}",
                files[fi],
                r.warnings
            );
        }
    }

    #[test]
    fn both_checkpoint_copies_bad_is_an_error_naming_both() {
        let (d, _log) = setup();
        for f in [CHECKPOINT_FILE, CHECKPOINT_COPY_FILE] {
            let p = d.path().join(f);
            let mut b = fs::read(&p).unwrap();
            b[20] ^= 1;
            fs::write(&p, &b).unwrap();
        }
        let e = recover(d.path()).err().unwrap().to_string();
        assert!(
            e.contains("checkpoint at offset 0") && e.contains("checkpoint.2 at offset 0"),
            "{e}"
        );
    }

    /// The newest copy that verifies wins: a crash between the two slots of a rotation
    /// leaves one at epoch E+1 and one at E.
    #[test]
    fn newest_valid_copy_wins_and_the_stale_one_is_rewritten() {
        let (d, _log) = setup();
        let mut r = recover(d.path()).unwrap();
        r.state.epoch = 2;
        crate::meta::log::write_atomic(
            d.path(),
            CHECKPOINT_COPY_FILE,
            &r.state.to_checkpoint().encode(),
        )
        .unwrap();
        let r2 = recover(d.path()).unwrap();
        assert_eq!(
            (r2.state.epoch, r2.checkpoint_file.as_str()),
            (2, CHECKPOINT_COPY_FILE)
        );
        assert!(r2.needs_rewrite && !r2.log_usable);
        assert_eq!(r2.state.volumes.len(), 5);
    }

    /// A pool written before the copies: one checkpoint file, a version 1 log with its
    /// records from offset 64. It opens; the missing copy is to be written.
    #[test]
    fn old_layout_is_read() {
        let (d, _log) = setup();
        fs::remove_file(d.path().join(CHECKPOINT_COPY_FILE)).unwrap();
        let p = d.path().join(LOG_FILE);
        let b = fs::read(&p).unwrap();
        let mut old = LogHeader {
            version: 1,
            ..LogHeader::new(1, 1)
        }
        .encode_start();
        old.extend_from_slice(&b[LOG_RECORDS_V2..]);
        fs::write(&p, &old).unwrap();
        let r = recover(d.path()).unwrap();
        assert_eq!((r.replayed, r.log_header.version), (5, 1));
        assert_eq!(r.log_valid_len, old.len() as u64);
        assert!(r.needs_rewrite);
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("checkpoint.2 is missing")),
            "{:?}",
            r.warnings
        );
    }

    /// Salvage (issue 19 item 2): a damaged record in the middle applies the prefix and
    /// reports the records after it (strict refuses the same log).
    #[test]
    fn salvage_applies_the_prefix_and_reports_the_rest() {
        let (d, _log) = setup();
        let p = d.path().join(LOG_FILE);
        let mut b = fs::read(&p).unwrap();
        // The third record (v3): flip a payload byte.
        let mut pos = LOG_RECORDS_V2;
        for _ in 0..2 {
            let RecordFrame::Record(_, n) = RecordFrame::parse(&b[pos..]) else {
                panic!()
            };
            pos += n;
        }
        b[pos + 12] ^= 0xff;
        fs::write(&p, &b).unwrap();
        assert!(recover(d.path()).is_err());
        let r = recover_with(d.path(), RecoveryMode::Salvage).unwrap();
        assert_eq!(r.replayed, 2);
        assert_eq!(r.state.volumes.len(), 2);
        let s = r.salvage.expect("a salvage report");
        assert_eq!(s.damaged_at, pos as u64);
        assert_eq!(s.records_applied, 2);
        assert_eq!(
            s.lost_records.len(),
            2,
            "v4 and v5 verify but are not applied"
        );
        assert_eq!(s.volumes, vec!["v4".to_string(), "v5".to_string()]);
        assert_eq!(s.lost_records[0].kind, "VolumeCreate");
        assert!(r
            .warnings
            .iter()
            .any(|w| w.contains(&format!("offset {pos}"))));
        // A clean log salvages to the same as strict, with no report.
        let (d2, _l2) = setup();
        let r2 = recover_with(d2.path(), RecoveryMode::Salvage).unwrap();
        assert!(r2.salvage.is_none() && r2.replayed == 5);
    }
}
