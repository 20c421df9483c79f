//! The `pair` subcommands and the pair state names they accept.

use clap::Subcommand;

use fusevol::units::parse_size;

#[derive(Subcommand)]
pub(crate) enum PairCmd {
    /// Pair PVOL with SVOL (at least as large) and start the initial copy (state COPY)
    Create {
        /// The P-VOL: the volume to mirror
        #[arg(value_name = "PVOL")]
        pvol: String,
        /// The S-VOL: the mirror; its content is overwritten
        #[arg(value_name = "SVOL")]
        svol: String,
        /// Create SVOL, as large as PVOL
        #[arg(long)]
        create_svol: bool,
        /// Tier of the S-VOL created with --create-svol [default: the pool's choice]
        #[arg(long, value_name = "TIER", requires = "create_svol")]
        svol_tier: Option<String>,
        /// Put the pair in this group (a group is split at one instant)
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
        /// Copy rate limit per second, e.g. 200M = 200 MiB/s [default: the daemon's]
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        rate: Option<u64>,
        /// Show the copy's progress and return when the pair is PAIR (exit 6 if it is PSUE)
        #[arg(long)]
        wait: bool,
    },
    /// Split pairs at one instant: named P-VOLs and/or a whole group (state PSUS)
    ///
    /// Steady (default): the daemon waits until every pair is PAIR, then splits; there is no
    /// answer timeout unless --timeout is given. Quick: splits at once; the rest of the copy
    /// runs in the background and the S-VOL only ever shows the split-time image.
    Split {
        /// P-VOLs of the pairs to split
        #[arg(value_name = "PVOL", required_unless_present = "group")]
        pvols: Vec<String>,
        /// Split every pair of this group
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
        /// Split at once, without waiting for the copy to finish
        #[arg(long)]
        quick: bool,
        #[command(flatten)]
        hooks: crate::backup::HookArgs,
    },
    /// Resynchronize a split or suspended pair, copying only changed regions
    Resync {
        /// The P-VOL of the pair
        #[arg(value_name = "PVOL")]
        pvol: String,
        /// Copy S-VOL to P-VOL instead (COPY(RS-R)): return the P-VOL to the split-time image
        #[arg(long)]
        restore: bool,
        /// Copy rate limit per second, e.g. 200M = 200 MiB/s [default: the daemon's]
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        rate: Option<u64>,
        /// Show the copy's progress and return when the pair is PAIR (exit 6 if it is PSUE)
        #[arg(long)]
        wait: bool,
    },
    /// Dissolve a pair (both volumes become SMPL and keep their data)
    Delete {
        /// The P-VOL of the pair
        #[arg(value_name = "PVOL")]
        pvol: String,
    },
    /// Show pairs, all or the one of PVOL: state, copy progress, bytes left, rate, differences
    ///
    /// LEFT is what the running copy still has to copy; DIFF is what changed on either side
    /// since the split (what a resync or restore copies).
    Status {
        /// Only the pair of this P-VOL [default: all pairs]
        #[arg(value_name = "PVOL")]
        pvol: Option<String>,
    },
    /// Wait until a pair reaches a state (exit 5 on timeout, 6 if the pair is PSUE)
    Wait {
        /// The P-VOL of the pair
        #[arg(value_name = "PVOL")]
        pvol: String,
        /// State to wait for: SMPL (no pair), COPY, PAIR, PSUS, COPY(RS) or COPY-RS,
        /// COPY(RS-R) or COPY-RS-R, PSUE; case-insensitive
        #[arg(long, value_name = "STATE", value_parser = parse_pair_state)]
        state: String,
        /// Give up after SECS seconds (exit 5); 0: wait forever [default: wait forever]
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
}

/// Pair state names as the daemon reports them; SMPL is a volume without a pair.
const PAIR_STATES: [&str; 7] = [
    "SMPL",
    "COPY",
    "PAIR",
    "PSUS",
    "COPY(RS)",
    "COPY(RS-R)",
    "PSUE",
];

/// A state name as typed (any case; `COPY-RS`, `COPY-RS-R` for the parenthesized names) as the
/// daemon spells it.
fn parse_pair_state(text: &str) -> Result<String, String> {
    let upper = text.trim().to_ascii_uppercase().replace('_', "-");
    let name = match upper.as_str() {
        "COPY-RS" => "COPY(RS)",
        "COPY-RS-R" => "COPY(RS-R)",
        other => other,
    };
    PAIR_STATES
        .iter()
        .find(|s| **s == name)
        .map(|s| s.to_string())
        .ok_or_else(|| {
            format!(
                "unknown pair state '{text}' (expected one of {}; or COPY-RS, COPY-RS-R)",
                PAIR_STATES.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn parses_pair_commands() {
        let parse =
            |args: &[&str]| Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        match parse(&[
            "fusevol",
            "pair",
            "create",
            "v0",
            "v0s",
            "--create-svol",
            "--svol-tier",
            "slow",
            "--group",
            "g1",
            "--rate",
            "200M",
            "--wait",
        ])
        .command
        {
            Command::Pair(PairCmd::Create {
                pvol,
                svol,
                create_svol,
                svol_tier,
                group,
                rate,
                wait,
            }) => {
                assert_eq!((pvol.as_str(), svol.as_str()), ("v0", "v0s"));
                assert!(create_svol && wait);
                assert_eq!(svol_tier.as_deref(), Some("slow"));
                assert_eq!(group.as_deref(), Some("g1"));
                assert_eq!(rate, Some(200 << 20));
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "pair", "create", "v0", "v1"]).command {
            Command::Pair(PairCmd::Create {
                create_svol,
                svol_tier,
                group,
                rate,
                wait,
                ..
            }) => {
                assert!(!create_svol && !wait);
                assert_eq!((svol_tier, group, rate), (None, None, None));
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "pair", "split", "v0", "v1", "--quick"]).command {
            Command::Pair(PairCmd::Split {
                pvols,
                group,
                quick,
                ..
            }) => {
                assert_eq!(pvols, vec!["v0", "v1"]);
                assert_eq!(group, None);
                assert!(quick);
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "pair", "split", "--group", "g1"]).command {
            Command::Pair(PairCmd::Split {
                pvols,
                group,
                quick,
                ..
            }) => {
                assert!(pvols.is_empty());
                assert_eq!(group.as_deref(), Some("g1"));
                assert!(!quick);
            }
            _ => panic!("wrong command"),
        }
        match parse(&[
            "fusevol",
            "pair",
            "resync",
            "v0",
            "--restore",
            "--rate",
            "1G",
        ])
        .command
        {
            Command::Pair(PairCmd::Resync {
                pvol,
                restore,
                rate,
                wait,
            }) => {
                assert_eq!(pvol, "v0");
                assert!(restore && !wait);
                assert_eq!(rate, Some(1 << 30));
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "pair", "resync", "v0", "--wait"]).command {
            Command::Pair(PairCmd::Resync {
                restore,
                rate,
                wait,
                ..
            }) => {
                assert!(!restore && wait);
                assert_eq!(rate, None);
            }
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "pair", "delete", "v0"]).command {
            Command::Pair(PairCmd::Delete { pvol }) => assert_eq!(pvol, "v0"),
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "pair", "status"]).command {
            Command::Pair(PairCmd::Status { pvol }) => assert_eq!(pvol, None),
            _ => panic!("wrong command"),
        }
        match parse(&["fusevol", "--json", "pair", "status", "v0"]).command {
            Command::Pair(PairCmd::Status { pvol }) => assert_eq!(pvol.as_deref(), Some("v0")),
            _ => panic!("wrong command"),
        }
        // No timeout: wait forever; the global answer timeout stays unset.
        let cli = parse(&["fusevol", "pair", "wait", "v0", "--state", "copy-rs-r"]);
        assert_eq!(cli.timeout, None);
        match cli.command {
            Command::Pair(PairCmd::Wait {
                pvol,
                state,
                timeout,
            }) => {
                assert_eq!(pvol, "v0");
                assert_eq!(state, "COPY(RS-R)");
                assert_eq!(timeout, None);
            }
            _ => panic!("wrong command"),
        }
        let cli = parse(&[
            "fusevol",
            "pair",
            "wait",
            "v0",
            "--state",
            "PAIR",
            "--timeout",
            "30",
        ]);
        assert_eq!(
            cli.timeout,
            Some(30),
            "the wait's limit bounds each answer too"
        );
        match cli.command {
            Command::Pair(PairCmd::Wait { state, timeout, .. }) => {
                assert_eq!(state, "PAIR");
                assert_eq!(timeout, Some(30));
            }
            _ => panic!("wrong command"),
        }
        // Before the subcommand, --timeout is the same option.
        let cli = parse(&[
            "fusevol",
            "--timeout",
            "7",
            "pair",
            "wait",
            "v0",
            "--state",
            "psus",
        ]);
        assert_eq!(cli.timeout, Some(7));
        match cli.command {
            Command::Pair(PairCmd::Wait { state, timeout, .. }) => {
                assert_eq!(state, "PSUS");
                assert_eq!(timeout, Some(7));
            }
            _ => panic!("wrong command"),
        }
        let cli = parse(&["fusevol", "pair", "split", "v0", "--timeout", "9"]);
        assert_eq!(cli.timeout, Some(9));
        assert_eq!(parse(&["fusevol", "volume", "list"]).timeout, None);
    }

    #[test]
    fn rejects_bad_pair_usage() {
        for args in [
            &["fusevol", "pair"][..],
            &["fusevol", "pair", "create", "v0"],
            &["fusevol", "pair", "create", "v0", "v1", "--rate", "fast"],
            &[
                "fusevol",
                "pair",
                "create",
                "v0",
                "v1",
                "--svol-tier",
                "slow",
            ],
            &["fusevol", "pair", "split"],
            &["fusevol", "pair", "split", "--quick"],
            &["fusevol", "pair", "resync"],
            &["fusevol", "pair", "resync", "v0", "--rate", "12X"],
            &["fusevol", "pair", "delete"],
            &["fusevol", "pair", "delete", "v0", "v1"],
            &["fusevol", "pair", "status", "v0", "v1"],
            &["fusevol", "pair", "wait", "v0"],
            &["fusevol", "pair", "wait", "--state", "PAIR"],
            &["fusevol", "pair", "wait", "v0", "--state", "SPLIT"],
            &[
                "fusevol",
                "pair",
                "wait",
                "v0",
                "--state",
                "PAIR",
                "--timeout",
                "soon",
            ],
            &["fusevol", "pair", "frobnicate"],
        ] {
            let err = Cli::try_parse_from(args).err().expect("must fail");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn normalizes_pair_state_names() {
        for (input, want) in [
            ("SMPL", "SMPL"),
            ("smpl", "SMPL"),
            ("copy", "COPY"),
            ("Pair", "PAIR"),
            ("psus", "PSUS"),
            ("PSUE", "PSUE"),
            ("COPY(RS)", "COPY(RS)"),
            ("copy(rs)", "COPY(RS)"),
            ("COPY-RS", "COPY(RS)"),
            ("copy-rs", "COPY(RS)"),
            ("copy_rs", "COPY(RS)"),
            ("COPY(RS-R)", "COPY(RS-R)"),
            ("copy(rs-r)", "COPY(RS-R)"),
            ("COPY-RS-R", "COPY(RS-R)"),
            ("copy-rs-r", "COPY(RS-R)"),
            (" pair ", "PAIR"),
        ] {
            assert_eq!(parse_pair_state(input).as_deref(), Ok(want), "{input}");
        }
        for bad in [
            "",
            "SPLIT",
            "COPY(RS",
            "COPY-R",
            "COPYRS",
            "PAIRED",
            "COPY(RS)-R",
        ] {
            let err = parse_pair_state(bad).expect_err(bad);
            assert!(err.contains("unknown pair state"), "{bad}: {err}");
        }
        // Every name the daemon reports parses to itself.
        for state in PAIR_STATES {
            assert_eq!(parse_pair_state(state).as_deref(), Ok(state));
        }
    }
}
