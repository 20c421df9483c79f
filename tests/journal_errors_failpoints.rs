//! A journal that cannot be written keeps the meaning of its error: the failpoint
//! `journal::append::write` fails the record's write with EIO, and the writer of a grouped
//! volume sees EIO (never EINVAL), with nothing of the write done.
#![cfg(feature = "failpoints")]

mod common;

use common::images::{image, storage_at};
use fusevol::control::GroupOptions;

const ES: u64 = 64 << 10;

#[test]
fn journal_write_error_gives_eio_and_nothing_is_lost() {
    let t = tempfile::tempdir().unwrap();
    let st = storage_at(&t.path().join("pool"), ES, 64 << 20, 2);
    let remote = t.path().join("remote");
    std::fs::create_dir(&remote).unwrap();
    let (vol, _) = st.volumes.create_volume("v", 4 << 20, None).unwrap();
    st.replication
        .group_create("g", &["v".to_string()], &remote, &GroupOptions::default())
        .unwrap();
    let first = vec![0xa5u8; 128 << 10];
    assert_eq!(st.write(&vol, 0, &first).unwrap(), first.len());

    fail::cfg("journal::append::write", "return").unwrap();
    let second = vec![0x5au8; 64 << 10];
    let err = st.write(&vol, 64 << 10, &second).unwrap_err();
    fail::remove("journal::append::write");
    assert_eq!(
        fusevol::fuse::io_errno(&err),
        libc::EIO,
        "a failed journal write must be EIO: {err}"
    );
    assert!(
        err.to_string().contains("volume 'v'"),
        "names the volume: {err}"
    );
    assert!(
        err.to_string().contains("journal"),
        "names the journal: {err}"
    );
    // Write-ahead: the record failed, so the data write never happened.
    assert_eq!(&image(&st, "v")[..128 << 10], &first[..]);

    // The journal works again once the device does.
    assert_eq!(st.write(&vol, 64 << 10, &second).unwrap(), second.len());
    st.sync().unwrap();
    let img = image(&st, "v");
    assert_eq!(&img[..64 << 10], &first[..64 << 10]);
    assert_eq!(&img[64 << 10..128 << 10], &second[..]);
    st.shutdown();
}
