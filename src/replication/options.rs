//! What a caller asks of a journal group: the settings of a new group, the settings `group
//! set` changes, and the point-in-time settings (retention, apply delay).
//!
//! The control protocol carries these types as they are (`control::protocol` re-exports
//! them): their serde form is part of the wire format and must not change.

use serde::{Deserialize, Serialize};

/// Point-in-time settings of a group (absent: unchanged, or off for a new attach).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitrOptions {
    /// Keep applied segments this many seconds after they were applied (0: no age limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_secs: Option<u64>,
    /// Keep at most this many bytes of applied segments (0: no size limit). Both limits 0:
    /// retention off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_size: Option<u64>,
    /// Apply a record only once it is this many seconds old (0: at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_delay: Option<u64>,
}

impl PitrOptions {
    pub fn is_empty(&self) -> bool {
        self == &PitrOptions::default()
    }
}

/// Journal settings of a new group (absent: the default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOptions {
    /// Seal a segment at this many bytes (default 16 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_size: Option<u64>,
    /// Seal a non-empty segment this many milliseconds after its first record (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_ms: Option<u64>,
    /// Shipping rate limit, bytes per second (default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// Journal size limit the status reports use against (default 4 GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_limit: Option<u64>,
    /// What a full journal does: "block" (default) or "suspend".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_full: Option<String>,
    /// How long a blocked writer waits for journal space before ENOSPC (default 30000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_timeout_ms: Option<u64>,
}

/// Settings `group set` changes (absent: unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSetOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_full: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_timeout_ms: Option<u64>,
}

impl GroupSetOptions {
    pub fn is_empty(&self) -> bool {
        self == &GroupSetOptions::default()
    }
}

/// How a secondary names the group's volumes (`group attach --rename PREFIX`, `--map
/// GROUPNAME=LOCALNAME,...`; absent: the primary's names). A name in `map` takes its local
/// name from there; every other one gets `prefix` in front.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeNames {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub map: std::collections::BTreeMap<String, String>,
}

impl VolumeNames {
    pub fn is_empty(&self) -> bool {
        self == &VolumeNames::default()
    }
}
