//! Where a new volume goes when `volume create` names no node (seed 004's construction rule):
//! the pools in priority order (a priority per node's pool, set by the admin with
//! `fusevold --cluster-priority N`, lower first; equal priorities prefer the node that was
//! asked, as the seed's "first priority is normally the manager's own SAN"), then the most
//! free capacity in the tier asked for, then the lowest load. A node qualifies when it is up,
//! has the tier (any tier when none is asked) and has at least the volume's size free in it.
//! Nothing qualifies → a refusal naming what is short.

use super::records::NodeRecord;

/// Free bytes of `n` in `tier` (all tiers when None); None when it has no such tier.
fn space(n: &NodeRecord, tier: Option<&str>) -> Option<u64> {
    match tier {
        None => Some(n.free),
        Some(t) => n.tiers.iter().find(|x| x.tier == t).map(|x| x.free),
    }
}

/// Pick the node for a volume of `size` bytes in `tier`, asked on node `me`.
pub fn choose(
    nodes: &[&NodeRecord],
    me: &str,
    size: u64,
    tier: Option<&str>,
) -> Result<String, String> {
    let mut fits: Vec<(&NodeRecord, u64)> = nodes
        .iter()
        .filter_map(|n| space(n, tier).map(|s| (*n, s)))
        .filter(|(_, s)| *s >= size)
        .collect();
    fits.sort_by(|(a, sa), (b, sb)| {
        a.priority
            .cmp(&b.priority)
            .then((a.name != me).cmp(&(b.name != me)))
            .then(sb.cmp(sa))
            .then(a.load.total_cmp(&b.load))
            .then(a.name.cmp(&b.name))
    });
    if let Some((n, _)) = fits.first() {
        return Ok(n.name.clone());
    }
    let what = match tier {
        Some(t) => format!("in tier '{t}'"),
        None => "in any tier".to_string(),
    };
    if nodes.is_empty() {
        return Err("no node of the cluster is up".into());
    }
    let with_tier: Vec<(&NodeRecord, u64)> = nodes
        .iter()
        .filter_map(|n| space(n, tier).map(|s| (*n, s)))
        .collect();
    let Some((best, free)) = with_tier.iter().max_by_key(|(_, s)| *s) else {
        return Err(format!(
            "no node that is up has tier '{}' (nodes up: {})",
            tier.unwrap_or(""),
            nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    Err(format!(
        "no node has {} free {what}: short by {} bytes on the largest, node '{}' ({} bytes free)",
        size,
        size - free,
        best.name,
        free
    ))
}

/// The nodes that have `tier`, best first by the same rule as `choose`, with their free
/// bytes in it rounded down to `PART_ALIGN`.
fn ranked<'a>(
    nodes: &[&'a NodeRecord],
    me: &str,
    tier: Option<&str>,
) -> Vec<(&'a NodeRecord, u64)> {
    let align = super::spread::PART_ALIGN;
    let mut v: Vec<(&NodeRecord, u64)> = nodes
        .iter()
        .filter_map(|n| space(n, tier).map(|s| (*n, s / align * align)))
        .collect();
    v.sort_by(|(a, sa), (b, sb)| {
        a.priority
            .cmp(&b.priority)
            .then((a.name != me).cmp(&(b.name != me)))
            .then(sb.cmp(sa))
            .then(a.load.total_cmp(&b.load))
            .then(a.name.cmp(&b.name))
    });
    v
}

/// Plan a spread volume of `size` bytes in `tier`: (node, bytes) in offset order, parts
/// aligned to `PART_ALIGN` but the last. `explicit` (`--spread`): over every node with free
/// space in the tier (at least two), in equal shares as far as their free space allows;
/// otherwise (no single node has the space) filled node by node in placement order. A
/// refusal names what is short.
pub fn spread(
    nodes: &[&NodeRecord],
    me: &str,
    size: u64,
    tier: Option<&str>,
    explicit: bool,
) -> Result<Vec<(String, u64)>, String> {
    let align = super::spread::PART_ALIGN;
    let what = match tier {
        Some(t) => format!("in tier '{t}'"),
        None => "in any tier".to_string(),
    };
    if nodes.is_empty() {
        return Err("no node of the cluster is up".into());
    }
    if !nodes.iter().any(|n| space(n, tier).is_some()) {
        return Err(format!(
            "no node that is up has tier '{}' (nodes up: {})",
            tier.unwrap_or(""),
            nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let cands: Vec<(&NodeRecord, u64)> = ranked(nodes, me, tier)
        .into_iter()
        .filter(|(_, f)| *f > 0)
        .collect();
    let total: u64 = cands.iter().map(|(_, f)| f).sum();
    let listing = || {
        cands
            .iter()
            .map(|(n, f)| format!("'{}' {f}", n.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if explicit && cands.len() < 2 {
        return Err(format!(
            "a spread volume needs at least two nodes up with free space {what}; there {} {} ({})",
            if cands.len() == 1 { "is" } else { "are" },
            cands.len(),
            if cands.is_empty() {
                "none".to_string()
            } else {
                listing()
            }
        ));
    }
    if total < size {
        return Err(format!(
            "no node has {size} bytes free {what}, and the nodes up have only {total} bytes \
             free there together ({}): short by {} bytes",
            if cands.is_empty() {
                "none".to_string()
            } else {
                listing()
            },
            size - total
        ));
    }
    // Shares: equal (aligned) for --spread, everything a node has otherwise.
    let mut take: Vec<u64> = vec![0; cands.len()];
    let mut left = size;
    if explicit {
        let share = size.div_ceil(cands.len() as u64).div_ceil(align) * align;
        for (i, (_, f)) in cands.iter().enumerate() {
            let t = share.min(*f).min(left);
            take[i] = t;
            left -= t;
        }
    }
    for (i, (_, f)) in cands.iter().enumerate() {
        if left == 0 {
            break;
        }
        let t = (f - take[i]).min(left);
        take[i] += t;
        left -= t;
    }
    // Every part but the last must end on an alignment boundary: each take is aligned
    // except at most one (where `left` ran out), which goes last.
    let mut plan: Vec<(String, u64)> = cands
        .iter()
        .zip(take)
        .filter(|(_, t)| *t > 0)
        .map(|((n, _), t)| (n.name.clone(), t))
        .collect();
    plan.sort_by_key(|(_, t)| !t.is_multiple_of(align));
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::super::records::TierSpace;
    use super::*;

    fn node(name: &str, priority: u32, tiers: &[(&str, u64)], load: f64) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            address: String::new(),
            pools: vec![],
            tiers: tiers
                .iter()
                .map(|(t, f)| TierSpace {
                    tier: t.to_string(),
                    capacity: *f * 2,
                    free: *f,
                })
                .collect(),
            capacity: tiers.iter().map(|(_, f)| f * 2).sum(),
            free: tiers.iter().map(|(_, f)| f).sum(),
            load,
            started: 0,
            pid: 0,
            priority,
            io_load: 0.0,
            busy: false,
            busy_above: 8.0,
        }
    }

    #[test]
    fn own_node_first_at_equal_priority_then_free_then_load() {
        let a = node("a", 100, &[("fast", 10)], 0.0);
        let b = node("b", 100, &[("fast", 50)], 0.0);
        let c = node("c", 100, &[("fast", 50)], 3.0);
        let all = [&a, &b, &c];
        assert_eq!(choose(&all, "a", 5, Some("fast")).unwrap(), "a");
        // a is too small: the most free, then the lower load.
        assert_eq!(choose(&all, "a", 20, Some("fast")).unwrap(), "b");
        assert_eq!(choose(&all, "x", 5, None).unwrap(), "b");
    }

    #[test]
    fn admin_priority_comes_before_everything() {
        let a = node("a", 100, &[("fast", 100)], 0.0);
        let b = node("b", 10, &[("fast", 20)], 5.0);
        assert_eq!(choose(&[&a, &b], "a", 5, Some("fast")).unwrap(), "b");
        assert_eq!(choose(&[&a, &b], "a", 50, Some("fast")).unwrap(), "a");
    }

    #[test]
    fn refusals_name_what_is_short() {
        let a = node("a", 100, &[("fast", 10), ("slow", 100)], 0.0);
        let b = node("b", 100, &[("fast", 30)], 0.0);
        let e = choose(&[&a, &b], "a", 40, Some("fast")).unwrap_err();
        assert!(
            e.contains("in tier 'fast'") && e.contains("node 'b'") && e.contains("short by 10"),
            "{e}"
        );
        let e = choose(&[&a, &b], "a", 1, Some("tape")).unwrap_err();
        assert!(e.contains("tier 'tape'"), "{e}");
        assert_eq!(choose(&[&a, &b], "a", 100, Some("slow")).unwrap(), "a");
        assert!(choose(&[], "a", 1, None).is_err());
    }

    const M: u64 = 1 << 20;

    #[test]
    fn spread_fills_in_placement_order_or_in_equal_shares() {
        let a = node("a", 100, &[("fast", 100 * M)], 0.0);
        let b = node("b", 100, &[("fast", 60 * M)], 0.0);
        let c = node("c", 100, &[("fast", 80 * M + 4096)], 0.0);
        let all = [&a, &b, &c];
        // Automatic: the asked node first, then the most free.
        let p = spread(&all, "a", 150 * M, Some("fast"), false).unwrap();
        assert_eq!(p, vec![("a".into(), 100 * M), ("c".into(), 50 * M)]);
        // --spread: equal shares over every node.
        let p = spread(&all, "b", 90 * M, Some("fast"), true).unwrap();
        assert_eq!(
            p,
            vec![
                ("b".into(), 30 * M),
                ("a".into(), 30 * M),
                ("c".into(), 30 * M)
            ]
        );
        // A share larger than a node's free space: the rest goes to the others.
        let p = spread(&all, "b", 210 * M, Some("fast"), true).unwrap();
        assert_eq!(p.iter().map(|(_, s)| s).sum::<u64>(), 210 * M);
        assert_eq!(p[0], ("b".into(), 60 * M));
        // The last part need not be aligned.
        let p = spread(&all, "a", 100 * M + 512, Some("fast"), false).unwrap();
        assert_eq!(p, vec![("a".into(), 100 * M), ("c".into(), 512)]);
    }

    #[test]
    fn spread_refusals_name_what_is_short() {
        let a = node("a", 100, &[("fast", 100 * M)], 0.0);
        let b = node("b", 100, &[("fast", 60 * M), ("slow", 10 * M)], 0.0);
        let e = spread(&[&a, &b], "a", 200 * M, Some("fast"), false).unwrap_err();
        assert!(
            e.contains("short by 41943040") && e.contains("'a' 104857600"),
            "{e}"
        );
        let e = spread(&[&a, &b], "a", 5 * M, Some("slow"), true).unwrap_err();
        assert!(e.contains("at least two nodes") && e.contains("'b'"), "{e}");
        let e = spread(&[&a, &b], "a", 5 * M, Some("tape"), false).unwrap_err();
        assert!(e.contains("no node that is up has tier 'tape'"), "{e}");
    }
}
