//! Lumisection lists as CMS writes them, as a library: the Golden and
//! DCS-only JSON files (`{"355100": [[1, 37], [40, 112]], ...}`: run numbers
//! as strings, inclusive LS ranges), a certificate's kept ranges, their
//! intersection, and the JSON written back in the same format.

use std::collections::BTreeMap;

/// Inclusive LS ranges per run, sorted and merged (touching ranges join).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LsRanges {
    runs: BTreeMap<i64, Vec<(i64, i64)>>,
}

impl LsRanges {
    /// Adds `first..=last` of `run`; the caller checks 1 ≤ first ≤ last.
    pub fn insert(&mut self, run: i64, first: i64, last: i64) {
        let ranges = self.runs.entry(run).or_default();
        ranges.push((first, last));
        ranges.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
        for &(a, b) in ranges.iter() {
            match merged.last_mut() {
                Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        *ranges = merged;
    }

    /// Parses a CMS JSON file's text; an error names the offending run.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let object = value
            .as_object()
            .ok_or("expected an object of run numbers, e.g. {\"355100\": [[1, 37]]}")?;
        let mut out = Self::default();
        for (key, ranges) in object {
            let run: i64 = key
                .parse()
                .ok()
                .filter(|r| *r > 0)
                .ok_or_else(|| format!("key `{key}` is not a run number"))?;
            let ranges = ranges
                .as_array()
                .ok_or_else(|| format!("run {run}: expected a list of [first, last] ranges"))?;
            for r in ranges {
                let pair: Option<(i64, i64)> = r.as_array().and_then(|p| match p.as_slice() {
                    [a, b] => Some((a.as_i64()?, b.as_i64()?)),
                    _ => None,
                });
                let (a, b) = pair.ok_or_else(|| {
                    format!("run {run}: `{r}` is not a [first, last] pair of LS numbers")
                })?;
                if !(1 <= a && a <= b) {
                    return Err(format!("run {run}: [{a}, {b}] is not a range of LS ≥ 1"));
                }
                out.insert(run, a, b);
            }
        }
        Ok(out)
    }

    /// The CMS JSON text: runs in order, one line per run.
    pub fn to_json(&self) -> String {
        let lines: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(run, ranges)| {
                let r: Vec<String> = ranges.iter().map(|(a, b)| format!("[{a}, {b}]")).collect();
                format!("  \"{run}\": [{}]", r.join(", "))
            })
            .collect();
        if lines.is_empty() {
            return "{}\n".into();
        }
        format!("{{\n{}\n}}\n", lines.join(",\n"))
    }

    pub fn contains(&self, run: i64, ls: i64) -> bool {
        self.runs
            .get(&run)
            .is_some_and(|r| r.iter().any(|&(a, b)| (a..=b).contains(&ls)))
    }

    /// The LS in both lists.
    pub fn intersect(&self, other: &LsRanges) -> LsRanges {
        let mut out = LsRanges::default();
        for (run, mine) in &self.runs {
            let Some(theirs) = other.runs.get(run) else {
                continue;
            };
            for &(a, b) in mine {
                for &(c, d) in theirs {
                    let (lo, hi) = (a.max(c), b.min(d));
                    if lo <= hi {
                        out.insert(*run, lo, hi);
                    }
                }
            }
        }
        out
    }

    /// (run, first, last) of every range, in order.
    pub fn ranges(&self) -> impl Iterator<Item = (i64, i64, i64)> + '_ {
        self.runs
            .iter()
            .flat_map(|(run, r)| r.iter().map(move |&(a, b)| (*run, a, b)))
    }

    /// How many LS the list holds.
    pub fn ls_count(&self) -> i64 {
        self.ranges().map(|(_, a, b)| b - a + 1).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_merge_intersect_and_write_back() {
        let golden =
            LsRanges::from_json(r#"{"355100": [[1, 10], [11, 20], [30, 40]], "355101": [[5, 5]]}"#)
                .unwrap();
        assert_eq!(
            golden.ranges().collect::<Vec<_>>(),
            [(355100, 1, 20), (355100, 30, 40), (355101, 5, 5)]
        );
        assert_eq!(golden.ls_count(), 20 + 11 + 1);
        assert!(golden.contains(355100, 35) && !golden.contains(355100, 25));
        let dcs = LsRanges::from_json(r#"{"355100": [[15, 33]]}"#).unwrap();
        let both = golden.intersect(&dcs);
        assert_eq!(
            both.ranges().collect::<Vec<_>>(),
            [(355100, 15, 20), (355100, 30, 33)]
        );
        let text = both.to_json();
        assert_eq!(text, "{\n  \"355100\": [[15, 20], [30, 33]]\n}\n");
        assert_eq!(LsRanges::from_json(&text).unwrap(), both);
        assert_eq!(LsRanges::default().to_json(), "{}\n");
    }

    #[test]
    fn files_that_are_not_cms_lists_are_refused_with_the_reason() {
        for (text, why) in [
            ("[1, 2]", "expected an object"),
            (r#"{"run1": [[1, 2]]}"#, "`run1` is not a run number"),
            (r#"{"1": [[3, 2]]}"#, "[3, 2] is not a range"),
            (r#"{"1": [[1, 2, 3]]}"#, "not a [first, last] pair"),
            (r#"{"1": "all"}"#, "list of [first, last] ranges"),
            ("{", "not JSON"),
        ] {
            let err = LsRanges::from_json(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
