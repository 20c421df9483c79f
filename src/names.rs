//! Names of volumes, arrays and tiers: one rule for all.

/// Longest name, in bytes (a file name in the mount).
pub const MAX_NAME: usize = 255;

/// Check a name given by a user. `kind` ("volume", "array", "tier") goes into the message.
pub fn validate(kind: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{kind} name is empty"));
    }
    if name == "." || name == ".." {
        return Err(format!("{kind} name '{name}' is reserved"));
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "{kind} name is {} bytes long; the limit is {MAX_NAME}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c == '/' || c == '\0' || c.is_control())
    {
        return Err(format!(
            "{kind} name '{}' contains the character {c:?}, which is not allowed",
            name.escape_debug()
        ));
    }
    if name.starts_with('.') {
        return Err(format!(
            "{kind} name '{name}' starts with '.', which is reserved for the mount's own entries"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn refuses_bad_names() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "x\0",
            ".snapshots",
            &"n".repeat(256),
        ] {
            assert!(validate("volume", bad).is_err(), "{bad:?}");
        }
        for good in ["vol0", "db-data_1", "x.img", &"n".repeat(255)] {
            assert!(validate("volume", good).is_ok(), "{good:?}");
        }
    }
}
