//! Thin wrappers over the few system calls std does not offer. No `unsafe` is needed: nix
//! provides safe bindings for all of them.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use nix::fcntl::{fallocate, FallocateFlags};
use nix::unistd::{lseek, Whence};

/// Deallocate `len` bytes at `offset`; reads of the range return zeros afterwards. Falls back
/// to writing zeros where the file system cannot punch holes.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    match fallocate(file.as_raw_fd(), flags, offset as i64, len as i64) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) => write_zeros(file, offset, len),
        Err(e) => Err(e.into()),
    }
}

fn write_zeros(file: &File, mut offset: u64, mut len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let zeros = vec![0u8; 1 << 20];
    while len > 0 {
        let n = len.min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], offset)?;
        offset += n as u64;
        len -= n as u64;
    }
    Ok(())
}

/// Copy `len` bytes between files with copy_file_range (in-kernel; a reflink where the file
/// system can), falling back to read + write.
pub fn copy_range(src: &File, src_off: u64, dst: &File, dst_off: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let (mut so, mut dof, mut left) = (src_off as i64, dst_off as i64, len as usize);
    while left > 0 {
        match nix::fcntl::copy_file_range(src, Some(&mut so), dst, Some(&mut dof), left) {
            Ok(0) => break,
            Ok(n) => left -= n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(
                nix::errno::Errno::EXDEV
                | nix::errno::Errno::ENOSYS
                | nix::errno::Errno::EOPNOTSUPP
                | nix::errno::Errno::EINVAL,
            ) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if left > 0 {
        // Past the end of the source (never written: zeros) or no copy_file_range here.
        let mut buf = vec![0u8; left];
        let mut got = 0;
        while got < left {
            let n = src.read_at(&mut buf[got..], so as u64 + got as u64)?;
            if n == 0 {
                buf[got..].fill(0);
                break;
            }
            got += n;
        }
        dst.write_all_at(&buf, dof as u64)?;
    }
    Ok(())
}

/// The data regions of `file` in `[start, end)`, found with SEEK_DATA / SEEK_HOLE.
pub fn data_regions(file: &File, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let data = match lseek(fd, pos as i64, Whence::SeekData) {
            Ok(d) => d as u64,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(nix::errno::Errno::EINVAL) => {
                // The file system cannot tell: treat the whole range as data.
                out.push((pos, end));
                break;
            }
            Err(e) => return Err(e.into()),
        };
        if data >= end {
            break;
        }
        let hole = match lseek(fd, data as i64, Whence::SeekHole) {
            Ok(h) => h as u64,
            Err(e) => return Err(e.into()),
        };
        let stop = hole.min(end);
        out.push((data, stop));
        pos = stop;
    }
    Ok(out)
}

/// 8 random bytes from the kernel.
pub fn random_u64() -> io::Result<u64> {
    use std::io::Read;
    let mut b = [0u8; 8];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn punch_and_find_data() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(&vec![1u8; 1 << 20], 2 << 20).unwrap();
        let regions = data_regions(&f, 0, 8 << 20).unwrap();
        assert!(
            regions.iter().any(|&(a, b)| a <= 2 << 20 && b >= 3 << 20),
            "{regions:?}"
        );
        punch_hole(&f, 2 << 20, 1 << 20).unwrap();
        let mut buf = vec![9u8; 4096];
        f.read_exact_at(&mut buf, (2 << 20) + 4096).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    }
}
