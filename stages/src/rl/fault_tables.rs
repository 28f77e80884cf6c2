//! What became of the online faults, per fault (`faults`) and per fault
//! kind and persistence (`by_kind`) for every policy `rl_evaluate` plays:
//! the question "does the agent catch every kind of fault at least as well
//! as the tuned baselines (hand rules, classifiers), calling as often?". A
//! policy's figure of a kind is set beside their frontier's at its calls:
//! the frontier mixture of rules (calls vs good efficiency) whose
//! efficiency is read there, with the same mixture of the rules' figures
//! of that kind.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, SchemaRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::comparison::{interval, mix_at_calls};
use super::env::Tally;
use super::env_config::FaultKind;
use super::tables::policy_key_fields;
use super::totals::Totals;
use crate::error::Result;
use dqm_schemas::{column, nullable, schema_of};

/// The columns that name a policy row (as in the summary).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyKey {
    pub policy: &'static str,
    pub offset: Option<f64>,
    pub consecutive: Option<i64>,
    pub rule: Option<String>,
}

/// One policy's episodes, one per dataset, in the same dataset order for
/// every policy.
pub struct PolicyEpisodes<'a> {
    pub key: PolicyKey,
    pub datasets: Vec<i64>,
    pub tallies: Vec<&'a Tally>,
}

fn key_arrays<'k>(keys: impl Iterator<Item = &'k PolicyKey> + Clone) -> Vec<ArrayRef> {
    vec![
        Arc::new(StringArray::from_iter_values(
            keys.clone().map(|k| k.policy),
        )),
        Arc::new(Float64Array::from_iter(keys.clone().map(|k| k.offset))),
        Arc::new(Int64Array::from_iter(keys.clone().map(|k| k.consecutive))),
        Arc::new(StringArray::from_iter(keys.map(|k| k.rule.clone()))),
    ]
}

/// One row per fault a policy met (online).
pub fn faults_schema() -> SchemaRef {
    let mut fields = policy_key_fields();
    fields.extend([
        column("dataset", DataType::Int64, "Dataset (seed)"),
        column(
            "kind",
            DataType::Utf8,
            "mean_shift, width_shift or dead_bins",
        ),
        column(
            "size",
            DataType::Float64,
            "|mean shift|, |width shift| (in units of the Gaussian's mean and width) or the number of dead bins",
        ),
        column(
            "transient",
            DataType::Boolean,
            "The fault spoiled one run only (else it lasted until an alarm)",
        ),
        column("run", DataType::Int64, "Run where it started"),
        column("detected", DataType::Boolean, "An alarm was raised on it"),
        nullable(
            "delay",
            DataType::Int64,
            "Runs from its start to the alarm (0: on its first run); null if never alarmed",
        ),
        column(
            "missed_runs",
            DataType::Int64,
            "Faulty runs taken without an alarm",
        ),
    ]);
    schema_of(fields)
}

/// The `faults` table of the policies' episodes.
pub fn faults_batch(policies: &[PolicyEpisodes<'_>]) -> Result<RecordBatch> {
    let mut keys = Vec::new();
    let (mut dataset, mut kind, mut size, mut transient) = (vec![], vec![], vec![], vec![]);
    let (mut run, mut detected, mut delay, mut missed) = (vec![], vec![], vec![], vec![]);
    for p in policies {
        for (&d, t) in p.datasets.iter().zip(&p.tallies) {
            for f in &t.fault_log {
                keys.push(&p.key);
                dataset.push(d);
                kind.push(f.kind.name());
                size.push(f.size);
                transient.push(f.transient);
                run.push(f.run);
                detected.push(f.delay.is_some());
                delay.push(f.delay.map(|d| d as i64));
                missed.push(f.missed as i64);
            }
        }
    }
    let mut columns = key_arrays(keys.iter().copied());
    columns.extend([
        Arc::new(Int64Array::from(dataset)) as ArrayRef,
        Arc::new(StringArray::from(kind)),
        Arc::new(Float64Array::from(size)),
        Arc::new(BooleanArray::from(transient)),
        Arc::new(Int64Array::from(run)),
        Arc::new(BooleanArray::from(detected)),
        Arc::new(Int64Array::from(delay)),
        Arc::new(Int64Array::from(missed)),
    ]);
    Ok(RecordBatch::try_new(faults_schema(), columns)?)
}

/// A fault kind and persistence: the rows of `by_kind`.
const CELLS: usize = 6;

fn cell(kind: FaultKind, transient: bool) -> usize {
    let k = FaultKind::ALL
        .iter()
        .position(|&x| x == kind)
        .expect("every kind");
    2 * k + usize::from(transient)
}

/// Sums of one cell: faults, detected, missed runs, delay of the detected.
#[derive(Debug, Default, Clone, Copy)]
struct CellSums {
    faults: f64,
    detected: f64,
    missed: f64,
    delay: f64,
}

impl CellSums {
    fn missed_per_fault(&self) -> Option<f64> {
        (self.faults > 0.0).then(|| self.missed / self.faults)
    }
    fn detected_fraction(&self) -> Option<f64> {
        (self.faults > 0.0).then(|| self.detected / self.faults)
    }
    fn mean_delay(&self) -> Option<f64> {
        (self.detected > 0.0).then(|| self.delay / self.detected)
    }
}

fn cells_of(t: &Tally) -> [CellSums; CELLS] {
    let mut out = [CellSums::default(); CELLS];
    for f in &t.fault_log {
        let c = &mut out[cell(f.kind, f.transient)];
        c.faults += 1.0;
        c.missed += f.missed as f64;
        if let Some(d) = f.delay {
            c.detected += 1.0;
            c.delay += d as f64;
        }
    }
    out
}

/// Every policy's totals and cells over a pick of datasets.
fn sums(
    per: &[Vec<(Totals, [CellSums; CELLS])>],
    pick: &[usize],
) -> (Vec<Totals>, Vec<[CellSums; CELLS]>) {
    per.iter()
        .map(|p| {
            let mut t = Totals::default();
            let mut c = [CellSums::default(); CELLS];
            for &d in pick {
                let (pt, pc) = &p[d];
                t.merge(pt);
                for (a, b) in c.iter_mut().zip(pc) {
                    a.faults += b.faults;
                    a.detected += b.detected;
                    a.missed += b.missed;
                    a.delay += b.delay;
                }
            }
            (t, c)
        })
        .unzip()
}

/// The frontier's missed runs per fault of cell `c` at policy `k`'s calls
/// (`None`: every frontier rule calls more, or one of the two mixed has
/// no fault of that cell).
fn frontier_missed(
    totals: &[Totals],
    cells: &[[CellSums; CELLS]],
    frontier: &[usize],
    k: usize,
    c: usize,
) -> Option<f64> {
    let mix = mix_at_calls(totals, frontier, totals[k].calls_per_1000()?)?;
    let a = cells[frontier[mix.a]][c].missed_per_fault()?;
    let b = cells[frontier[mix.b]][c].missed_per_fault()?;
    Some(mix.between(a, b))
}

/// A figure of every policy's totals and cells (on all datasets or a
/// resample).
type Figure<'a> = dyn Fn(&[Totals], &[[CellSums; CELLS]]) -> Option<f64> + 'a;

/// One row per policy × fault kind × persistence (online; no rows
/// offline, where bad runs are the generator's own).
pub fn by_kind_schema() -> SchemaRef {
    let mut fields = policy_key_fields();
    fields.extend([
        column(
            "kind",
            DataType::Utf8,
            "mean_shift, width_shift or dead_bins",
        ),
        column(
            "persistence",
            DataType::Utf8,
            "persistent (until an alarm) or transient (one run)",
        ),
        column(
            "faults",
            DataType::Int64,
            "Faults of this kind the policy met, all datasets",
        ),
    ]);
    for (name, doc) in [
        ("detected_fraction", "Faults alarmed on / faults"),
        (
            "missed_runs_per_fault",
            "Faulty runs taken without an alarm / faults",
        ),
    ] {
        fields.push(nullable(name, DataType::Float64, doc));
        fields.push(nullable(
            &format!("{name}_lo"),
            DataType::Float64,
            "Lower end of its 95 % bootstrap interval over datasets",
        ));
        fields.push(nullable(
            &format!("{name}_hi"),
            DataType::Float64,
            "Upper end",
        ));
    }
    fields.push(nullable(
        "mean_delay",
        DataType::Float64,
        "Mean runs from start to alarm of the detected faults",
    ));
    fields.push(nullable(
        "best_missed_runs_per_fault_at_same_calls",
        DataType::Float64,
        "The missed runs per fault of this kind of the frontier of every tuned baseline (hand rules and classifiers) at this policy's calls per 1000 (the frontier mixture of rules, calls vs good efficiency, read at the policy's calls; null without rules tables or when every frontier rule calls more)",
    ));
    fields.push(nullable(
        "missed_runs_diff",
        DataType::Float64,
        "missed_runs_per_fault − best_missed_runs_per_fault_at_same_calls (≤ 0: the policy misses no more than the best tuned baselines calling as often)",
    ));
    fields.push(nullable("missed_runs_diff_lo", DataType::Float64, "Lower end of its 95 % paired bootstrap interval over datasets (the frontier recomputed on each resample)"));
    fields.push(nullable(
        "missed_runs_diff_hi",
        DataType::Float64,
        "Upper end",
    ));
    schema_of(fields)
}

/// The `by_kind` table: `frontier` indexes the baselines' frontier rules in
/// `policies`; bootstrap over datasets with `bootstrap` resamples.
pub fn by_kind_batch(
    policies: &[PolicyEpisodes<'_>],
    frontier: &[usize],
    bootstrap: usize,
    seed: u64,
) -> Result<RecordBatch> {
    let per: Vec<Vec<(Totals, [CellSums; CELLS])>> = policies
        .iter()
        .map(|p| {
            p.tallies
                .iter()
                .map(|t| {
                    let mut s = Totals::default();
                    s.add(t);
                    (s, cells_of(t))
                })
                .collect()
        })
        .collect();
    let n_data = per.first().map_or(0, Vec::len);
    let all: Vec<usize> = (0..n_data).collect();
    let (totals, cells) = sums(&per, &all);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b69_6e64);
    let boot: Vec<_> = (0..bootstrap)
        .map(|_| {
            let pick: Vec<usize> = (0..n_data).map(|_| rng.random_range(0..n_data)).collect();
            sums(&per, &pick)
        })
        .collect();
    let drawn: Vec<bool> = (0..CELLS)
        .map(|c| cells.iter().any(|cs| cs[c].faults > 0.0))
        .collect();
    let mut keys = Vec::new();
    let (mut kind, mut persistence, mut faults) = (vec![], vec![], vec![]);
    let mut floats: Vec<Vec<Option<f64>>> = vec![Vec::new(); 11];
    for (k, p) in policies.iter().enumerate() {
        for c in 0..CELLS {
            // Kinds the setting never drew give no row.
            if !drawn[c] {
                continue;
            }
            let here = &cells[k][c];
            keys.push(&p.key);
            kind.push(FaultKind::ALL[c / 2].name());
            persistence.push(if c % 2 == 1 {
                "transient"
            } else {
                "persistent"
            });
            faults.push(here.faults as i64);
            let diff = |t: &[Totals], cs: &[[CellSums; CELLS]]| {
                Some(cs[k][c].missed_per_fault()? - frontier_missed(t, cs, frontier, k, c)?)
            };
            let figures: [&Figure<'_>; 3] = [
                &|_, cs| cs[k][c].detected_fraction(),
                &|_, cs| cs[k][c].missed_per_fault(),
                &diff,
            ];
            let mut with_interval = Vec::new();
            for f in figures {
                let point = f(&totals, &cells);
                let replicas: Vec<f64> = boot.iter().filter_map(|(t, cs)| f(t, cs)).collect();
                let [lo, hi] = interval(replicas, bootstrap, point);
                with_interval.push([point, lo, hi]);
            }
            let values = [
                with_interval[0][0],
                with_interval[0][1],
                with_interval[0][2],
                with_interval[1][0],
                with_interval[1][1],
                with_interval[1][2],
                here.mean_delay(),
                frontier_missed(&totals, &cells, frontier, k, c),
                with_interval[2][0],
                with_interval[2][1],
                with_interval[2][2],
            ];
            for (col, v) in floats.iter_mut().zip(values) {
                col.push(v);
            }
        }
    }
    let mut columns = key_arrays(keys.iter().copied());
    columns.push(Arc::new(StringArray::from(kind)));
    columns.push(Arc::new(StringArray::from(persistence)));
    columns.push(Arc::new(Int64Array::from(faults)));
    columns.extend(
        floats
            .into_iter()
            .map(|c| Arc::new(Float64Array::from(c)) as ArrayRef),
    );
    Ok(RecordBatch::try_new(by_kind_schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::faults::FaultRecord;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Float64Type;

    fn record(kind: FaultKind, transient: bool, delay: Option<u64>, missed: u64) -> FaultRecord {
        FaultRecord {
            kind,
            size: 1.0,
            transient,
            run: 0,
            delay,
            missed,
        }
    }

    fn tally(calls: u64, kept: u64, log: Vec<FaultRecord>) -> Tally {
        Tally {
            runs: 1000,
            calls,
            good_kept: kept,
            fault_log: log,
            ..Default::default()
        }
    }

    fn key(policy: &'static str) -> PolicyKey {
        PolicyKey {
            policy,
            offset: None,
            consecutive: None,
            rule: None,
        }
    }

    /// Two expert rules (10 and 30 calls per 1000) and a policy calling
    /// 20: the frontier at 20 calls is half of each, so its missed runs per
    /// mean-shift fault are the mean of theirs.
    #[test]
    fn by_kind_against_the_frontier_by_hand() {
        use FaultKind::*;
        let cheap = tally(10, 900, vec![record(MeanShift, false, Some(4), 4)]);
        let dear = tally(30, 950, vec![record(MeanShift, false, Some(0), 0)]);
        let policy = tally(
            20,
            940,
            vec![
                record(MeanShift, false, Some(1), 1),
                record(MeanShift, false, None, 2),
                record(DeadBins, true, Some(0), 0),
            ],
        );
        let policies = vec![
            PolicyEpisodes {
                key: key("expert_frontier"),
                datasets: vec![1],
                tallies: vec![&cheap],
            },
            PolicyEpisodes {
                key: key("expert_frontier"),
                datasets: vec![1],
                tallies: vec![&dear],
            },
            PolicyEpisodes {
                key: key("agent"),
                datasets: vec![1],
                tallies: vec![&policy],
            },
        ];
        let faults = faults_batch(&policies).unwrap();
        assert_eq!(faults.num_rows(), 5);
        let out = by_kind_batch(&policies, &[0, 1], 100, 0).unwrap();
        // 2 cells drawn (persistent mean shift, transient dead bins) x 3 policies.
        assert_eq!(out.num_rows(), 6);
        let f = |name: &str| {
            out.column_by_name(name)
                .unwrap()
                .as_primitive::<Float64Type>()
                .clone()
        };
        let policy = out.column(0).as_string::<i32>();
        let kind = out.column_by_name("kind").unwrap().as_string::<i32>();
        let row = (0..6)
            .find(|&i| policy.value(i) == "agent" && kind.value(i) == "mean_shift")
            .unwrap();
        assert_eq!(f("missed_runs_per_fault").value(row), 1.5);
        assert_eq!(f("detected_fraction").value(row), 0.5);
        assert_eq!(f("mean_delay").value(row), 1.0);
        assert_eq!(
            f("best_missed_runs_per_fault_at_same_calls").value(row),
            2.0
        );
        assert_eq!(f("missed_runs_diff").value(row), -0.5);
        // One dataset: every resample is the same dataset.
        assert_eq!(f("missed_runs_diff_lo").value(row), -0.5);
        // The frontier rules met no dead-bin fault: no comparison.
        let dead = (0..6)
            .find(|&i| policy.value(i) == "agent" && kind.value(i) == "dead_bins")
            .unwrap();
        assert!(f("missed_runs_diff").is_null(dead));
        assert_eq!(f("detected_fraction").value(dead), 1.0);
    }
}
