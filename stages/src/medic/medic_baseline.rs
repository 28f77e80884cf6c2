//! `medic_baseline`: the physics rule a MEDIC model must beat. Each MEDIC
//! class switches off the HCAL of one |η| region, so whether an event has a
//! hadronic tower (`Ehad > 0`) in the barrel, the endcap and the forward
//! region — 8 patterns — nearly names its configuration. The rule learns
//! the most frequent class of each pattern on the train block (a Bayes
//! decision with the empirical prior), calls every event of a window, and
//! counts: the window's predicted class fractions are the counts over W,
//! its vote the most called class. The output is a predictions table, so
//! `medic_metrics` scores rule and network the same way.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int8Array, Int32Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError, bad_param};
use crate::medic::batches::{self, WindowData};
use crate::medic::tables::{
    Blocks, WindowSpec, carried_metadata, example_window_inputs, predictions_schema,
};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use dqm_schemas::column;

/// Which towers of an event the rule looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TowerView {
    /// The `n_towers` of each window's draw: exactly what the network sees.
    #[default]
    Sampled,
    /// Every tower of the event (an upper reference: more than the network gets).
    All,
}

/// The HCAL-region rule with counting over the window, scored like a model.
///
/// Inputs: the window table, its `.order` table and the events table.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MedicBaseline {
    /// Which windows to score: test, train or all. The rule is learned on
    /// the train block either way.
    pub blocks: Blocks,
    /// |η| boundaries barrel/endcap and endcap/forward of the HCAL (Delphes
    /// CMS card: 1.653 and 4.525; forward up to |η| = 5).
    pub eta_edges: [f64; 2],
    /// Towers the rule looks at: `sampled` (the network's input) or `all`.
    pub towers: TowerView,
    /// Class index of the normal configuration: anomaly score 1 − p(normal).
    pub normal_class: usize,
    /// Seed of the tie-breaks between equally called classes (a rule that
    /// knew the label's lowest-index tie-break would beat the tie ceiling).
    pub seed: u64,
}

impl Default for MedicBaseline {
    fn default() -> Self {
        Self {
            blocks: Blocks::Test,
            eta_edges: [1.653, 4.525],
            towers: TowerView::Sampled,
            normal_class: 0,
            seed: 0,
        }
    }
}

impl StageConfig for MedicBaseline {
    const KIND: &'static str = "medic_baseline";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "MEDIC baseline: which HCAL regions (barrel/endcap/forward) have a hadronic tower, most frequent class per pattern on the train block, counted over each window; a predictions table for medic_metrics";
    const INPUTS: (usize, usize) = (3, 3);
    const INPUT_ROLES: &'static str = "windows, windows.order, events";

    fn doc_inputs() -> Vec<SchemaRef> {
        example_window_inputs()
    }

    fn validate(&self) -> Result<()> {
        let [a, b] = self.eta_edges;
        if !(a > 0.0 && a < b && b.is_finite()) {
            return bad_param("eta_edges", "must be two increasing positive |η| values");
        }
        Ok(())
    }
}

/// Number of tower patterns: one bit per HCAL region.
const PATTERNS: usize = 8;

/// Bit 0: a hadronic tower in the barrel, bit 1: in the endcap, bit 2: in
/// the forward region, from towers in row-major `values` with `f` features
/// (zero padding has `Ehad` 0 and counts for nothing).
pub fn pattern(values: &[f32], f: usize, (eta, ehad): (usize, usize), edges: [f64; 2]) -> usize {
    let mut bits = 0;
    for tower in values.chunks_exact(f) {
        if tower[ehad] > 0.0 {
            let a = (tower[eta] as f64).abs();
            bits |= if a < edges[0] {
                1
            } else if a < edges[1] {
                2
            } else {
                4
            };
        }
    }
    bits
}

/// The class decided for each pattern: the most frequent one among the
/// train events with it (lowest index on ties); a pattern never seen gets
/// the most frequent class overall.
pub fn decide(counts: &[Vec<u64>]) -> Vec<usize> {
    let best = |c: &[u64]| {
        (0..c.len())
            .max_by_key(|&k| (c[k], std::cmp::Reverse(k)))
            .unwrap_or(0)
    };
    let n_classes = counts.first().map_or(0, Vec::len);
    let overall: Vec<u64> = (0..n_classes)
        .map(|k| counts.iter().map(|c| c[k]).sum())
        .collect();
    counts
        .iter()
        .map(|c| {
            if c.iter().sum::<u64>() == 0 {
                best(&overall)
            } else {
                best(c)
            }
        })
        .collect()
}

fn rule_schema(n_classes: usize) -> SchemaRef {
    let mut fields = vec![
        column(
            "pattern",
            DataType::Int32,
            "Bits: 1 barrel, 2 endcap, 4 forward HCAL region with a hadronic tower",
        ),
        column(
            "barrel",
            DataType::Boolean,
            "A hadronic tower with |η| < eta_edges[0]",
        ),
        column(
            "endcap",
            DataType::Boolean,
            "A hadronic tower with eta_edges[0] ≤ |η| < eta_edges[1]",
        ),
        column(
            "forward",
            DataType::Boolean,
            "A hadronic tower with |η| ≥ eta_edges[1]",
        ),
    ];
    for c in 0..n_classes {
        fields.push(column(
            &format!("events_{c}"),
            DataType::Int64,
            &format!("Train-block events of class {c} with this pattern"),
        ));
    }
    fields.push(column(
        "class",
        DataType::Int8,
        "The class the rule calls for this pattern",
    ));
    Arc::new(Schema::new(fields))
}

impl MedicBaseline {
    /// Column indices of tower `Eta` and `Ehad` in the window tensors.
    fn features(&self, spec: &WindowSpec) -> Result<(usize, usize)> {
        let find = |name: &str| {
            spec.tower_features.iter().position(|f| f == name).ok_or_else(|| {
                StageError::param(
                    "towers",
                    format!(
                        "the rule needs tower feature `{name}`, missing from the window table's tower_features {:?}",
                        spec.tower_features
                    ),
                )
            })
        };
        Ok((find("Eta")?, find("Ehad")?))
    }

    /// The pattern of every event of window `row`, in window order.
    fn window_patterns(
        &self,
        data: &WindowData,
        row: usize,
        idx: (usize, usize),
    ) -> Result<Vec<usize>> {
        let cfg = &data.cfg;
        let f = cfg.tower_features.len();
        let w = &data.rows[row];
        let events = &data.order[w.start..w.start + cfg.window];
        match self.towers {
            TowerView::All => events
                .iter()
                .map(|&id| Ok(pattern(data.store.towers_of(id)?, f, idx, self.eta_edges)))
                .collect(),
            TowerView::Sampled => {
                let t = data.store.assemble(cfg, events, w.sample_seed)?;
                Ok(t.towers
                    .chunks_exact(cfg.n_towers * f)
                    .map(|towers| pattern(towers, f, idx, self.eta_edges))
                    .collect())
            }
        }
    }
}

impl Stage for MedicBaseline {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        let windows = batches::check_inputs(inputs)?;
        self.features(&windows)?;
        if self.normal_class >= windows.n_classes {
            return bad_param(
                "normal_class",
                format!(
                    "must be below the {} classes of the windows",
                    windows.n_classes
                ),
            );
        }
        Ok(vec![
            OutputSpec {
                name: "main",
                schema: predictions_schema(
                    windows.n_classes,
                    carried_metadata(&inputs[0], &inputs[0]),
                ),
            },
            OutputSpec {
                name: "rule",
                schema: rule_schema(windows.n_classes),
            },
        ])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let data = WindowData::load(ctx.inputs)?;
        let idx = self.features(&data.cfg)?;
        let nc = data.cfg.n_classes;
        // Learn: class counts per pattern over the train block's events
        // (sampled view: every event of every train window, as drawn there).
        let mut counts = vec![vec![0u64; nc]; PATTERNS];
        match self.towers {
            TowerView::All => {
                let f = data.cfg.tower_features.len();
                for &id in &data.order[..data.n_train_events] {
                    let p = pattern(data.store.towers_of(id)?, f, idx, self.eta_edges);
                    counts[p][data.store.class_of(id)? as usize] += 1;
                }
            }
            TowerView::Sampled => {
                let train = data.block(false);
                let per_window: Vec<Vec<usize>> = train
                    .par_iter()
                    .map(|&r| self.window_patterns(&data, r, idx))
                    .collect::<Result<_>>()?;
                for (&r, patterns) in train.iter().zip(&per_window) {
                    let start = data.rows[r].start;
                    for (k, &p) in patterns.iter().enumerate() {
                        let class = data.store.class_of(data.order[start + k])?;
                        counts[p][class as usize] += 1;
                    }
                }
            }
        }
        if counts.iter().flatten().sum::<u64>() == 0 {
            return Err(StageError::data(format!(
                "input `{}`: the train block has no events to learn the rule from",
                ctx.inputs[0].name
            )));
        }
        let decision = decide(&counts);
        // Score: each event called, counted over its window.
        let rows = data.scored_rows(self.blocks, &ctx.inputs[0].name)?;
        let called: Vec<Vec<usize>> = rows
            .par_iter()
            .map(|&r| self.window_patterns(&data, r, idx))
            .collect::<Result<_>>()?;
        let w = data.cfg.window as f64;
        let (mut prob, mut vote, mut share) = (Vec::new(), Vec::new(), Vec::new());
        for (&r, patterns) in rows.iter().zip(&called) {
            let mut n = vec![0usize; nc];
            for &p in patterns {
                n[decision[p]] += 1;
            }
            let top = *n.iter().max().expect("at least one class");
            let tied: Vec<usize> = (0..nc).filter(|&c| n[c] == top).collect();
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ data.rows[r].sample_seed);
            vote.push(tied[rng.random_range(0..tied.len())] as i8);
            share.push(top as f64 / w);
            prob.extend(n.iter().map(|&k| k as f64 / w));
        }
        let schema = predictions_schema(
            nc,
            carried_metadata(&ctx.inputs[0].schema, &ctx.inputs[0].schema),
        );
        let batch = data.predictions(schema, &rows, &prob, (vote, share), self.normal_class)?;
        ctx.output.write("main", batch)?;

        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(Int32Array::from_iter_values(0..PATTERNS as i32))];
        for bit in [1, 2, 4] {
            columns.push(Arc::new(BooleanArray::from_iter(
                (0..PATTERNS).map(|p| Some(p & bit != 0)),
            )));
        }
        for c in 0..nc {
            columns.push(Arc::new(Int64Array::from_iter_values(
                counts.iter().map(|k| k[c] as i64),
            )));
        }
        columns.push(Arc::new(Int8Array::from_iter_values(
            decision.iter().map(|&c| c as i8),
        )));
        ctx.output
            .write("rule", RecordBatch::try_new(rule_schema(nc), columns)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_memory::run_in_memory;
    use crate::medic::metrics::figures;
    use crate::medic::tables::read_predictions;
    use crate::medic::test_support::model_inputs_with;
    use arrow::array::AsArray;
    use arrow::datatypes::Int8Type;

    #[test]
    fn patterns_and_decisions_of_hand_made_towers() {
        // Features (Eta, Ehad, ET): towers as rows.
        let idx = (0, 1);
        let edges = [1.653, 4.525];
        let towers = [
            0.5, 3.0, 1.0, // barrel, hadronic
            -2.0, 0.0, 1.0, // endcap, electromagnetic only: no bit
            -4.8, 1.0, 1.0, // forward, hadronic
            0.0, 0.0, 0.0, // padding
        ];
        assert_eq!(pattern(&towers, 3, idx, edges), 1 | 4);
        assert_eq!(pattern(&towers[3..6], 3, idx, edges), 0);
        assert_eq!(pattern(&[1.66, 2.0, 0.0], 3, idx, edges), 2);
        assert_eq!(pattern(&[-1.64, 2.0, 0.0], 3, idx, edges), 1);
        assert_eq!(pattern(&[], 3, idx, edges), 0);
        // Pattern 0 mostly class 2, pattern 1 a tie of 0 and 3, pattern 2 unseen.
        let mut counts = vec![vec![0u64; 4]; 3];
        counts[0] = vec![1, 0, 6, 0];
        counts[1] = vec![4, 0, 0, 4];
        assert_eq!(decide(&counts), vec![2, 0, 2]);
    }

    #[test]
    fn the_rule_names_the_dead_region_and_is_scored_like_a_model() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = model_inputs_with(
            dir.path(),
            WindowSpec {
                window: 5,
                seed: 2,
                folds: 2,
                ..Default::default()
            },
        );
        for (view, least) in [(TowerView::All, 0.9), (TowerView::Sampled, 0.75)] {
            let stage = MedicBaseline {
                towers: view,
                ..Default::default()
            };
            let out = run_in_memory(&stage, &inputs).unwrap();
            let rule = out.table("rule");
            let class = rule
                .column_by_name("class")
                .unwrap()
                .as_primitive::<Int8Type>();
            // normal (0) and barrel off (1) only: all three regions → normal,
            // endcap and forward but no barrel → barrel off.
            assert_eq!(class.value(7), 0, "{view:?}");
            assert_eq!(class.value(2 | 4), 1, "{view:?}");
            let predictions = out.table("main");
            let dir2 = tempfile::tempdir().unwrap();
            let input = crate::in_memory::input_from_batch(
                "predictions",
                &predictions,
                &dir2.path().join("p.parquet"),
            )
            .unwrap();
            let p = read_predictions(&input).unwrap();
            let f = figures(&p, 0);
            assert!(f.accuracy > least, "{view:?}: {}", f.accuracy);
            assert!(f.binary_auc.unwrap() > 0.9, "{view:?}: {:?}", f.binary_auc);
            // Deterministic.
            assert_eq!(
                run_in_memory(&stage, &inputs).unwrap().table("main"),
                predictions
            );
        }
        // A window table without tower Ehad is refused at plan time.
        let schemas: Vec<SchemaRef> = example_window_inputs();
        let spec = WindowSpec {
            tower_features: vec!["ET".into(), "Eta".into()],
            ..Default::default()
        };
        let schemas = [
            crate::medic::tables::windows_schema(&spec),
            schemas[1].clone(),
            schemas[2].clone(),
        ];
        let err = MedicBaseline::default()
            .outputs(&schemas)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Ehad") && err.contains("towers"), "{err}");
    }
}
