//! The `group` subcommands: journal groups replicated asynchronously through a remote
//! directory.

use fusevol::units::parse_size;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand};

/// Retention and apply delay of a secondary (`group attach`, `group set`).
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct PitrArgs {
    /// Keep applied segments this many seconds (in DIR/GROUP/retained/) for restore-to
    /// (0: no age limit) [default on attach: retention off]
    #[arg(long, value_name = "SECS")]
    pub(crate) retain_secs: Option<u64>,
    /// Keep at most this much of applied segments, oldest dropped first, e.g. 10G (0: no
    /// size limit) [default on attach: retention off]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) retain_size: Option<u64>,
    /// Apply a record only once it is SECS old: the image stays that far behind
    /// [default on attach: 0]
    #[arg(long, value_name = "SECS")]
    pub(crate) apply_delay: Option<u64>,
}

impl PitrArgs {
    pub(crate) fn options(&self) -> fusevol::control::PitrOptions {
        fusevol::control::PitrOptions {
            retain_secs: self.retain_secs,
            retain_size: self.retain_size,
            apply_delay: self.apply_delay,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum GroupCmd {
    /// Put volumes in a new journal group replicated to DIR/GROUP/ (this pool is the primary)
    Create {
        /// Name of the new group
        #[arg(value_name = "GROUP")]
        name: String,
        /// The group's volumes, comma-separated (at least one)
        #[arg(
            long,
            value_name = "V1,V2",
            value_delimiter = ',',
            required = true,
            num_args = 1
        )]
        volumes: Vec<String>,
        /// Remote directory the journal is shipped to (relative paths are taken from the
        /// current directory)
        #[arg(long, value_name = "DIR")]
        remote: PathBuf,
        /// Seal a journal segment at this size [default: 16M]
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        segment_size: Option<u64>,
        /// Seal a non-empty segment this many ms after its first record; bounds the lag
        /// [default: 200]
        #[arg(long, value_name = "MS")]
        seal_ms: Option<u64>,
        /// Shipping rate limit per second, e.g. 50M [default: none]
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        rate: Option<u64>,
        /// Journal size limit (what the journal may hold before the --journal-full policy
        /// acts) [default: 4G]
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        journal_limit: Option<u64>,
        /// What a full journal does: block (writers slow down, wait up to --block-timeout,
        /// then get ENOSPC) or suspend (stop journaling, track changed regions in a bitmap
        /// until `group resync`) [default: block]
        #[arg(long, value_name = "POLICY", value_parser = ["block", "suspend"])]
        journal_full: Option<String>,
        /// With --journal-full block: how long a writer waits for journal space before
        /// ENOSPC, in seconds (fractions allowed) [default: 30]
        #[arg(long, value_name = "SECS", value_parser = parse_secs)]
        block_timeout: Option<u64>,
    },
    /// Attach this pool as the secondary of the group published in DIR/GROUP/ (creates the
    /// secondary volumes, read-only while applying)
    Attach {
        /// Name of the group on the primary
        #[arg(value_name = "GROUP")]
        name: String,
        /// Remote directory the primary ships to (relative paths are taken from the current
        /// directory)
        #[arg(long, value_name = "DIR")]
        remote: PathBuf,
        #[command(flatten)]
        pitr: PitrArgs,
        /// Keep the group's volumes here as PREFIX<name> (e.g. r- makes data r-data), as an
        /// array lets an S-VOL have its own number; also for volumes added later
        #[arg(long, value_name = "PREFIX")]
        rename: Option<String>,
        /// Keep these volumes under these names here (before --rename, which applies to
        /// the others): NAME=LOCAL, comma-separated
        #[arg(long, value_name = "NAME=LOCAL,...", value_delimiter = ',', value_parser = parse_mapping)]
        map: Vec<(String, String)>,
    },
    /// Add a volume to a group
    Add {
        #[arg(value_name = "GROUP")]
        name: String,
        #[arg(value_name = "VOL")]
        volume: String,
    },
    /// Take a volume out of a group (the volume stays)
    Remove {
        #[arg(value_name = "GROUP")]
        name: String,
        #[arg(value_name = "VOL")]
        volume: String,
    },
    /// Snapshot every volume of the group at one instant (SNAP on each volume)
    Snapshot {
        #[arg(value_name = "GROUP")]
        name: String,
        /// Name of the snapshot taken of each volume
        #[arg(value_name = "SNAP")]
        snapshot: String,
        #[command(flatten)]
        hooks: crate::backup::HookArgs,
    },
    /// On the secondary: become the primary under a new epoch (disaster or planned switch)
    ///
    /// Applies every complete record in the remote directory (or stops at a group snapshot's
    /// marker), makes the volumes writable, journals new writes under a new epoch and records
    /// the epoch in the remote directory; the old primary then refuses to go on.
    Takeover {
        #[arg(value_name = "GROUP")]
        name: String,
        /// Apply up to and including the marker of this group snapshot, nothing after it
        #[arg(long, value_name = "SNAP")]
        at_marker: Option<String>,
    },
    /// On an old primary that was taken over: become the new primary's secondary with a delta
    ///
    /// Asks the new primary for the regions this site wrote after the takeover point (known
    /// from its own journal), snapshots its volumes (failback-e<EPOCH>) until that delta is
    /// applied, and applies the new primary's journal from the takeover point.
    Failback {
        #[arg(value_name = "GROUP")]
        name: String,
        /// Keep the failback-e<EPOCH> snapshots (this site's last image as primary) after the
        /// delta is applied
        #[arg(long)]
        keep_snapshot: bool,
    },
    /// Stop journaling (primary) or applying (secondary); the volumes stay, writable
    Delete {
        #[arg(value_name = "GROUP")]
        name: String,
    },
    /// Show groups, all or one: role, state, epoch, volumes, remote, sequence numbers
    /// (written, sealed, shipped, applied, acknowledged), lag, journal use, consistency
    Status {
        /// Only this group [default: all groups]
        #[arg(value_name = "GROUP")]
        name: Option<String>,
    },
    /// Change a group's settings (only those given): the journal limit, the journal-full
    /// policy and the block timeout (primary); retention and apply delay (secondary)
    ///
    /// `--retain-secs 0 --retain-size 0` stops retaining; what is retained stays until
    /// removed.
    Set {
        #[arg(value_name = "GROUP")]
        name: String,
        /// New journal size limit (primary)
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        journal_limit: Option<u64>,
        /// block or suspend (primary)
        #[arg(long, value_name = "POLICY", value_parser = ["block", "suspend"])]
        journal_full: Option<String>,
        /// Seconds a blocked writer waits before ENOSPC (primary)
        #[arg(long, value_name = "SECS", value_parser = parse_secs)]
        block_timeout: Option<u64>,
        #[command(flatten)]
        pitr: PitrArgs,
        /// Publish a `lag-above` event when the lag this site measures reaches SECS
        /// (fractions allowed) and `lag-below` when it is under half of it again; 0 turns it
        /// off (either site; the primary sees a stopped secondary) [default: off]
        #[arg(long, value_name = "SECS", value_parser = parse_secs)]
        lag_alert: Option<u64>,
    },
    /// On a suspended primary (journal full, policy suspend): journal again and send the
    /// regions changed while suspended
    ///
    /// The secondary snapshots its volumes (resync-<SEQ>, its last consistent image) when
    /// the resync reaches it, is inconsistent until the resync is applied, then deletes the
    /// snapshot. Needs the remote directory.
    Resync {
        #[arg(value_name = "GROUP")]
        name: String,
    },
    /// Wait until a group has applied SEQ, is consistent, or is caught up (exit 5 on timeout)
    ///
    /// A group in an error state is waited for all the same (until the timeout); its last
    /// error is printed at the end.
    #[command(group(
        ArgGroup::new("until")
            .required(true)
            .args(["applied", "consistent", "caught_up"])
    ))]
    Wait {
        #[arg(value_name = "GROUP")]
        name: String,
        /// Until the applied sequence number is at least SEQ
        #[arg(long, value_name = "SEQ")]
        applied: Option<u64>,
        /// Until the secondary image is consistent
        #[arg(long)]
        consistent: bool,
        /// Until everything written on this side is applied and nothing lags
        #[arg(long)]
        caught_up: bool,
        /// Give up after SECS seconds (exit 5); 0: wait forever [default: wait forever]
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// Rebuild the group's volumes as of a sequence number or a time, into new volumes
    ///
    /// Starts from the latest group snapshot applied here at or before the target (or the
    /// initial image) and applies the retained segments after it, in order, verifying every
    /// record. The group's own volumes and its applier are not touched.
    #[command(group(
        ArgGroup::new("target")
            .required(true)
            .args(["seq", "time"])
    ))]
    RestoreTo {
        #[arg(value_name = "GROUP")]
        name: String,
        /// The image after this sequence number
        #[arg(long, value_name = "N")]
        seq: Option<u64>,
        /// The image after the last record at or before this time: seconds since the epoch
        /// (decimals allowed) or RFC 3339 (2026-12-01T21:00:00Z)
        #[arg(long, value_name = "T", value_parser = parse_time_ns)]
        time: Option<u64>,
        /// Names of the new volumes: PREFIX<volume> [default: <GROUP>-<SEQ>-]
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
        /// Write raw image files DIR2/<volume>.img instead of volumes in this pool
        #[arg(long, value_name = "DIR2", conflicts_with = "prefix")]
        into: Option<PathBuf>,
    },
}

/// `--time`: seconds since the Unix epoch (decimals allowed) or an RFC 3339 time, as ns.
pub(crate) fn parse_time_ns(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return secs
            .checked_mul(1_000_000_000)
            .ok_or_else(|| format!("time {s}: seconds since the epoch out of range"));
    }
    if let Ok(secs) = s.parse::<f64>() {
        if (0.0..1.0e10).contains(&secs) {
            return Ok((secs * 1e9).round() as u64);
        }
        return Err(format!("time {s}: seconds since the epoch out of range"));
    }
    let ts: jiff::Timestamp = s
        .parse()
        .map_err(|e| format!("time '{s}': neither seconds since the epoch nor RFC 3339 ({e})"))?;
    u64::try_from(ts.as_nanosecond()).map_err(|_| format!("time '{s}' is before 1970"))
}

/// `--map NAME=LOCAL`: a volume of the group and the name it gets in this pool.
fn parse_mapping(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((g, l)) if !g.is_empty() && !l.is_empty() => Ok((g.to_string(), l.to_string())),
        _ => Err(format!("'{s}' is not NAME=LOCAL")),
    }
}

/// Seconds (fractions allowed) as milliseconds.
fn parse_secs(s: &str) -> Result<u64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !v.is_finite() || !(0.0..=86_400.0).contains(&v) {
        return Err(format!("'{s}' is not between 0 and 86400 seconds"));
    }
    Ok((v * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use std::path::Path;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn parses_journal_options() {
        let args = [
            "fusevol",
            "group",
            "create",
            "g",
            "--volumes",
            "a",
            "--remote",
            "/r",
            "--seal-ms",
            "50",
            "--rate",
            "10M",
            "--segment-size",
            "4M",
            "--journal-limit",
            "1G",
        ];
        match parse(&args).command {
            Command::Group(GroupCmd::Create {
                segment_size,
                seal_ms,
                rate,
                journal_limit,
                ..
            }) => {
                assert_eq!(seal_ms, Some(50));
                assert_eq!(rate, Some(10 << 20));
                assert_eq!(segment_size, Some(4 << 20));
                assert_eq!(journal_limit, Some(1 << 30));
            }
            _ => panic!("wrong command"),
        }
        let args = [
            "fusevol",
            "group",
            "set",
            "g",
            "--journal-full",
            "suspend",
            "--block-timeout",
            "2.5",
        ];
        match parse(&args).command {
            Command::Group(GroupCmd::Set {
                journal_full,
                block_timeout,
                journal_limit,
                ..
            }) => {
                assert_eq!(journal_full.as_deref(), Some("suspend"));
                assert_eq!(block_timeout, Some(2500));
                assert_eq!(journal_limit, None);
            }
            _ => panic!("wrong command"),
        }
        for bad in [["--journal-full", "drop"], ["--block-timeout", "-1"]] {
            let mut a = vec!["fusevol", "group", "set", "g"];
            a.extend(bad);
            assert!(Cli::try_parse_from(a).is_err(), "{bad:?}");
        }
        assert!(Cli::try_parse_from([
            "fusevol",
            "group",
            "create",
            "g",
            "--volumes",
            "a",
            "--remote",
            "/r",
            "--rate",
            "lots"
        ])
        .is_err());
    }

    #[test]
    fn parses_group_commands() {
        match parse(&[
            "fusevol",
            "group",
            "create",
            "g1",
            "--volumes",
            "v1,v2",
            "--remote",
            "/r",
        ])
        .command
        {
            Command::Group(GroupCmd::Create {
                name,
                volumes,
                remote,
                ..
            }) => {
                assert_eq!(name, "g1");
                assert_eq!(volumes, vec!["v1", "v2"]);
                assert_eq!(remote, Path::new("/r"));
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "group", "attach", "g1", "--remote", "rel/dir"]).command {
            Command::Group(GroupCmd::Attach { name, remote, .. }) => {
                assert_eq!(name, "g1");
                assert_eq!(remote, Path::new("rel/dir"));
            }
            _ => panic!("wrong command"),
        }
        match parse(&[
            "fusevol",
            "group",
            "attach",
            "g1",
            "--remote",
            "/r",
            "--rename",
            "r-",
            "--map",
            "vol0=pv0,data=d",
        ])
        .command
        {
            Command::Group(GroupCmd::Attach { rename, map, .. }) => {
                assert_eq!(rename.as_deref(), Some("r-"));
                assert_eq!(
                    map,
                    vec![("vol0".into(), "pv0".into()), ("data".into(), "d".into())]
                );
            }
            _ => panic!("wrong command"),
        }
        assert!(Cli::try_parse_from([
            "fusevol", "group", "attach", "g1", "--remote", "/r", "--map", "vol0"
        ])
        .is_err());
        match parse(&["fusevol", "group", "set", "g1", "--lag-alert", "2.5"]).command {
            Command::Group(GroupCmd::Set { lag_alert, .. }) => assert_eq!(lag_alert, Some(2500)),
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "group", "add", "g1", "v3"]).command {
            Command::Group(GroupCmd::Add { name, volume }) => {
                assert_eq!((name.as_str(), volume.as_str()), ("g1", "v3"))
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "group", "remove", "g1", "v3"]).command {
            Command::Group(GroupCmd::Remove { name, volume }) => {
                assert_eq!((name.as_str(), volume.as_str()), ("g1", "v3"))
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "group", "snapshot", "g1", "s1"]).command {
            Command::Group(GroupCmd::Snapshot { name, snapshot, .. }) => {
                assert_eq!((name.as_str(), snapshot.as_str()), ("g1", "s1"))
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "group", "delete", "g1"]).command {
            Command::Group(GroupCmd::Delete { name }) => assert_eq!(name, "g1"),
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "group", "status"]).command {
            Command::Group(GroupCmd::Status { name }) => assert_eq!(name, None),
            _ => panic!("wrong command"),
        }
        let cli = parse(&["fusevol", "group", "status", "g1", "--json"]);
        assert!(cli.json);
        match cli.command {
            Command::Group(GroupCmd::Status { name }) => assert_eq!(name.as_deref(), Some("g1")),
            _ => panic!("wrong command"),
        }
        let cli = parse(&[
            "fusevol",
            "group",
            "wait",
            "g1",
            "--applied",
            "42",
            "--timeout",
            "9",
        ]);
        assert_eq!(cli.timeout, Some(9));
        match cli.command {
            Command::Group(GroupCmd::Wait {
                name,
                applied,
                consistent,
                caught_up,
                timeout,
            }) => {
                assert_eq!(name, "g1");
                assert_eq!(applied, Some(42));
                assert!(!consistent && !caught_up);
                assert_eq!(timeout, Some(9));
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "group", "wait", "g1", "--consistent"]).command {
            Command::Group(GroupCmd::Wait {
                applied,
                consistent,
                caught_up,
                timeout,
                ..
            }) => {
                assert_eq!((applied, timeout), (None, None));
                assert!(consistent && !caught_up);
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "group", "wait", "g1", "--caught-up"]).command {
            Command::Group(GroupCmd::Wait { caught_up, .. }) => assert!(caught_up),
            _ => panic!("wrong command"),
        }
    }

    #[test]
    fn rejects_bad_group_usage() {
        for args in [
            &["fusevol", "group"][..],
            &["fusevol", "group", "create", "g1", "--volumes", "v1"],
            &["fusevol", "group", "create", "g1", "--remote", "/r"],
            &[
                "fusevol",
                "group",
                "create",
                "--volumes",
                "v1",
                "--remote",
                "/r",
            ],
            &["fusevol", "group", "attach", "g1"],
            &["fusevol", "group", "add", "g1"],
            &["fusevol", "group", "remove", "g1"],
            &["fusevol", "group", "snapshot", "g1"],
            &["fusevol", "group", "delete"],
            &["fusevol", "group", "status", "g1", "g2"],
            &["fusevol", "group", "wait", "g1"],
            &["fusevol", "group", "wait", "g1", "--applied", "x"],
            &[
                "fusevol",
                "group",
                "wait",
                "g1",
                "--applied",
                "3",
                "--consistent",
            ],
            &[
                "fusevol",
                "group",
                "wait",
                "g1",
                "--consistent",
                "--caught-up",
            ],
            &[
                "fusevol",
                "group",
                "wait",
                "g1",
                "--consistent",
                "--timeout",
                "soon",
            ],
            &["fusevol", "group", "frobnicate"],
        ] {
            let err = Cli::try_parse_from(args).err().expect("must fail");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn parses_point_in_time_options_and_times() {
        match parse(&[
            "fusevol",
            "group",
            "attach",
            "g",
            "--remote",
            "/r",
            "--retain-secs",
            "3600",
            "--retain-size",
            "2G",
            "--apply-delay",
            "60",
        ])
        .command
        {
            Command::Group(GroupCmd::Attach { pitr, .. }) => {
                assert_eq!(pitr.retain_secs, Some(3600));
                assert_eq!(pitr.retain_size, Some(2 << 30));
                assert_eq!(pitr.apply_delay, Some(60));
            }
            _ => panic!("wrong command"),
        }
        match parse(&[
            "fusevol",
            "group",
            "restore-to",
            "g",
            "--time",
            "2026-12-01T21:00:00Z",
            "--prefix",
            "old-",
        ])
        .command
        {
            Command::Group(GroupCmd::RestoreTo {
                seq, time, prefix, ..
            }) => {
                assert_eq!(seq, None);
                assert_eq!(time, Some(1_796_158_800 * 1_000_000_000));
                assert_eq!(prefix.as_deref(), Some("old-"));
            }
            _ => panic!("wrong command"),
        }
        assert_eq!(parse_time_ns("17").unwrap(), 17_000_000_000);
        assert_eq!(parse_time_ns("1.5").unwrap(), 1_500_000_000);
        assert_eq!(
            parse_time_ns("1970-01-01T00:00:02+00:00").unwrap(),
            2_000_000_000
        );
        assert!(parse_time_ns("yesterday").is_err());
        assert!(parse_time_ns("1969-12-31T23:59:59Z").is_err());
        assert!(parse_time_ns("-5").is_err());
        for args in [
            &["fusevol", "group", "restore-to", "g"][..],
            &[
                "fusevol",
                "group",
                "restore-to",
                "g",
                "--seq",
                "1",
                "--time",
                "5",
            ],
            &[
                "fusevol",
                "group",
                "restore-to",
                "g",
                "--seq",
                "1",
                "--into",
                "/x",
                "--prefix",
                "p",
            ],
            &["fusevol", "group", "set", "g", "--retain-size", "lots"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
