//! The checkpoint copy in every array file (`format::array_copy`): written after the two
//! pool-directory slots by every checkpoint, read by recovery beside them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::State;
use crate::format::array_copy::{
    place_copy, ArrayLabel, ARRAY_LABELS_END, ARRAY_LABEL_OFFSETS, ARRAY_LABEL_SIZE,
};
use crate::format::array_header::ARRAY_HEADER_SIZE;
use crate::format::{ArrayHeader, Checkpoint};
use crate::fsio;

/// The directory of the array files, inside the pool directory.
pub const ARRAYS_DIR: &str = "arrays";

/// One array file's best checkpoint copy, or why it has none.
pub(crate) struct ArrayCopy {
    /// The file, relative to the pool directory (`arrays/a0.img`).
    pub file: String,
    /// The newest copy that verifies: its state and the label slot it came from.
    pub copy: Result<(State, usize), String>,
    /// The array's header says this pool (copies of another pool's file are never used).
    pub pool_id: Option<u64>,
}

fn read_exact_at(f: &File, len: usize, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = f.read_at(&mut buf[got..], offset + got as u64)?;
        if n == 0 {
            buf.truncate(got);
            break;
        }
        got += n;
    }
    Ok(buf)
}

fn header(f: &File, path: &Path) -> Result<ArrayHeader, String> {
    let b = read_exact_at(f, ARRAY_HEADER_SIZE, 0)
        .map_err(|e| format!("read {}: {e}", path.display()))?;
    let h = ArrayHeader::decode(&b)
        .map_err(|e| format!("{} header at offset 0: {e}", path.display()))?;
    if h.data_offset < ARRAY_LABELS_END {
        return Err(format!(
            "{}: no reserved area for a checkpoint copy (data starts at {})",
            path.display(),
            h.data_offset
        ));
    }
    Ok(h)
}

/// Label `slot` of an array file and its copy, verified (label checksum, pool and array id,
/// copy checksum). The checkpoint bytes are returned undecoded.
fn read_label(
    f: &File,
    path: &Path,
    h: &ArrayHeader,
    slot: usize,
) -> Result<(ArrayLabel, Vec<u8>), String> {
    let at = ARRAY_LABEL_OFFSETS[slot];
    let where_ = || format!("{} label {} at offset {at}", path.display(), slot + 1);
    let b = read_exact_at(f, ARRAY_LABEL_SIZE, at).map_err(|e| format!("{}: {e}", where_()))?;
    if b.iter().all(|&x| x == 0) {
        return Err(format!("{}: empty (no copy written there)", where_()));
    }
    let l = ArrayLabel::decode(&b).map_err(|e| format!("{}: {e}", where_()))?;
    if l.pool_id != h.pool_id || l.array_id != h.array_id {
        return Err(format!(
            "{}: belongs to pool {:016x} array {}, the file to pool {:016x} array {}",
            where_(),
            l.pool_id,
            l.array_id,
            h.pool_id,
            h.array_id
        ));
    }
    let bytes = read_exact_at(f, l.copy_len as usize, l.copy_offset)
        .map_err(|e| format!("{} copy at offset {}: {e}", path.display(), l.copy_offset))?;
    l.verify_copy(&bytes)
        .map_err(|e| format!("{} copy at offset {}: {e}", path.display(), l.copy_offset))?;
    Ok((l, bytes))
}

/// The newest copy of one array file that verifies.
fn read_one(dir: &Path, file: &str) -> ArrayCopy {
    let path = dir.join(file);
    let mut out = ArrayCopy {
        file: file.to_string(),
        copy: Err(String::new()),
        pool_id: None,
    };
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            out.copy = Err(format!("open {}: {e}", path.display()));
            return out;
        }
    };
    let h = match header(&f, &path) {
        Ok(h) => h,
        Err(e) => {
            out.copy = Err(e);
            return out;
        }
    };
    out.pool_id = Some(h.pool_id);
    let mut why = Vec::new();
    let mut best: Option<(State, usize)> = None;
    for slot in 0..2 {
        let decoded = read_label(&f, &path, &h, slot).and_then(|(l, bytes)| {
            let corrupt = |e: crate::format::FormatError| {
                format!("{} copy at offset {}: {e}", path.display(), l.copy_offset)
            };
            let st = State::from_checkpoint(Checkpoint::decode(&bytes).map_err(corrupt)?)
                .map_err(corrupt)?;
            if st.epoch != l.generation || st.pool_id != h.pool_id {
                return Err(format!(
                    "{} copy at offset {}: holds epoch {} of pool {:016x}, its label says epoch {}",
                    path.display(),
                    l.copy_offset,
                    st.epoch,
                    st.pool_id,
                    l.generation
                ));
            }
            Ok(st)
        });
        match decoded {
            Ok(st) if best.as_ref().is_none_or(|(b, _)| st.epoch > b.epoch) => {
                best = Some((st, slot))
            }
            Ok(_) => {}
            Err(e) => why.push(e),
        }
    }
    out.copy = best.ok_or_else(|| why.join("; "));
    out
}

/// The array files of the pool directory (`arrays/*.img`), sorted.
pub(crate) fn array_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join(ARRAYS_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".img"))
        .map(|n| format!("{ARRAYS_DIR}/{n}"))
        .collect();
    v.sort();
    v
}

/// The best copy of every array file in the pool directory.
pub(crate) fn read_array_copies(dir: &Path) -> Vec<ArrayCopy> {
    array_files(dir).iter().map(|f| read_one(dir, f)).collect()
}

/// Write checkpoint `bytes` (epoch `generation`) into one array file: the bytes to a region
/// past the data area that does not overlap the newest copy that verifies, fdatasync, then
/// the label slot that does not hold that copy, fdatasync. A crash at any point leaves the
/// file's newest good copy as it was.
fn write_one(path: &Path, pool_id: u64, generation: u64, bytes: &[u8]) -> Result<(), String> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let h = header(&f, path)?;
    if h.pool_id != pool_id {
        return Err(format!(
            "{} belongs to pool {:016x}, not {:016x}; no copy written",
            path.display(),
            h.pool_id,
            pool_id
        ));
    }
    let labels: Vec<Option<ArrayLabel>> = (0..2)
        .map(|s| read_label(&f, path, &h, s).ok().map(|(l, _)| l))
        .collect();
    // Keep the newest good copy; replace the other slot.
    let keep = match (&labels[0], &labels[1]) {
        (Some(a), Some(b)) => Some(if a.generation >= b.generation { 0 } else { 1 }),
        (Some(_), None) => Some(0),
        (None, Some(_)) => Some(1),
        (None, None) => None,
    };
    let slot = match keep {
        Some(k) => 1 - k,
        None => 0,
    };
    let keep_range = keep.and_then(|k| labels[k].map(|l| l.range()));
    let offset = place_copy(h.data_offset + h.capacity, bytes.len() as u64, keep_range);
    let label = ArrayLabel {
        array_id: h.array_id,
        pool_id,
        generation,
        copy_offset: offset,
        copy_len: bytes.len() as u64,
        copy_crc: crc32c::crc32c(bytes),
    };
    let io = |op: &str, e: std::io::Error| format!("{op} {}: {e}", path.display());
    fsio::pwrite(&f, bytes, offset).map_err(|e| io("write checkpoint copy to", e))?;
    fsio::fdatasync(&f).map_err(|e| io("fdatasync", e))?;
    fail::fail_point!("meta::array_copy::before_label", |_| Err(format!(
        "failpoint meta::array_copy::before_label ({})",
        path.display()
    )));
    fsio::pwrite(&f, &label.encode(), ARRAY_LABEL_OFFSETS[slot])
        .map_err(|e| io("write checkpoint label to", e))?;
    fsio::fdatasync(&f).map_err(|e| io("fdatasync", e))?;
    Ok(())
}

/// Write the checkpoint copy into every array file the checkpoint lists. A file that is
/// missing or cannot be written is logged and skipped (the pool-directory slots and the
/// other arrays hold the checkpoint; recovery treats that array's older copy as stale).
/// Returns the files that could not be written.
pub(crate) fn write_array_copies(dir: &Path, ckpt: &Checkpoint, bytes: &[u8]) -> Vec<String> {
    let mut failed = Vec::new();
    for a in &ckpt.arrays {
        let path: PathBuf = dir.join(&a.file);
        if let Err(e) = write_one(&path, ckpt.pool_id, ckpt.epoch, bytes) {
            log::warn!(
                "checkpoint epoch {}: no copy in array '{}': {e}",
                ckpt.epoch,
                a.name
            );
            failed.push(a.file.clone());
        }
    }
    failed
}
