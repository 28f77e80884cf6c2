//! `transfer_study`: the paper's Fig. 7 with repeated seeds and the amount
//! of target data as a second axis — does transfer learning lower the test
//! MSE of a barrel model, by how much, after how many epochs and with how
//! many target fills to train on?
//!
//! Every run (seed × target training fills × mode) trains one network with
//! `graphstad_train`'s recipe to the largest of `epochs`; after each listed
//! epoch count, the parameters it would have kept with that many epochs (the
//! lowest validation MSE so far) are scored on the healthy test maps, so one
//! run of 200 epochs gives the 20-, 75- and 200-epoch models exactly. A run
//! with `fills: n` trains on the first n fills of the training input (their
//! last `validation_fraction` for validation, as `graphstad_train` does).
//!
//! Outputs: `main`, one row per run and epoch count (test MSE beside the
//! reference-map rule's and the binomial noise floor); `summary`, per mode,
//! training fills and epochs, the mean over seeds with a Student-t 95 %
//! interval of the test MSE, of ΔMSE w.r.t. the first mode (paired by seed)
//! and of ΔMSE as a fraction of the first mode's reducible error (MSE −
//! floor). Artifacts: `fig7_test_mse.png`, `fig7_delta_mse.png`,
//! `fig7_reducible_delta.png`. Shardable by seed (a Slurm array).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, Schema, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::nn;

use crate::error::{Result, StageError, bad_param, within};
use crate::hcal::geometry::{MapGeometry, Subdetector};
use crate::hcal::model::{Block, GraphStad, Transfer, frozen_label};
use crate::hcal::scoring::{Scaling, fill_errors, fills, mse_floor, reference_map, reference_mse};
use crate::hcal::tables::{
    MapRow, ModelSpec, check_maps, check_renormalized, example_maps_schema, models_schema,
    read_all_rows, renormalized_fields, with_fields,
};
use crate::hcal::training::GraphstadTrain;
use crate::input::Input;
use crate::nn::{Checkpoint, exclusive};
use crate::plots::{Series, lines};
use crate::stage::{OutputSpec, OutputWriter, RunContext, Silent, Stage, StageConfig};
use crate::stats::mean_t95;
use dqm_schemas::{column, nullable};

/// One training mode of the study.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mode {
    /// Row name (e.g. `scratch`, `tl7_tl6`).
    pub name: String,
    /// Blocks taken from the source model (third input); absent: trained
    /// from scratch (T_init = RANDOM).
    #[serde(default)]
    pub transfer: Option<Transfer>,
}

/// Transfer learning over seeds, epochs and target training fills.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TransferStudy {
    /// The modes compared; the first is the reference of ΔMSE (default:
    /// from scratch, and TL-7 / TL-6).
    pub modes: Vec<Mode>,
    /// Seeds of the repeated runs (initialization and training draws).
    pub seeds: Vec<u64>,
    /// Epoch counts scored (snapshots of one run to the largest).
    pub epochs: Vec<usize>,
    /// Target training fills: a run with n trains on the first n fills of
    /// the training input.
    pub fills: Vec<usize>,
    /// The training recipe, `graphstad_train`'s parameters; its `epochs`,
    /// `seed` and `transfer` are set from the lists above.
    pub train: GraphstadTrain,
}

impl Default for TransferStudy {
    fn default() -> Self {
        Self {
            modes: vec![
                Mode {
                    name: "scratch".into(),
                    transfer: None,
                },
                Mode {
                    name: "tl7_tl6".into(),
                    transfer: Some(Transfer {
                        init: vec![Block::DecoderCnn],
                        freeze: vec![
                            Block::EncoderCnn,
                            Block::EncoderGcn,
                            Block::EncoderRnn,
                            Block::DecoderRnn,
                        ],
                        tune: vec![],
                    }),
                },
            ],
            seeds: vec![1, 2, 3, 4, 5],
            epochs: vec![20, 75, 200],
            fills: vec![1, 2, 8],
            train: GraphstadTrain::default(),
        }
    }
}

impl StageConfig for TransferStudy {
    const KIND: &'static str = "transfer_study";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Target training maps, healthy test maps, source model -> test MSE per mode × seed × training fills × epochs, beside the rule and the noise floor; ΔMSE with intervals over seeds (Fig. 7)";
    const INPUTS: (usize, usize) = (2, 3);
    const INPUT_ROLES: &'static str =
        "renormalized training maps, renormalized healthy test maps, optional source model";

    fn doc_inputs() -> Vec<SchemaRef> {
        let maps = with_fields(&example_maps_schema(), renormalized_fields());
        let spec = ModelSpec {
            arch: Default::default(),
            geometry: MapGeometry::of(Subdetector::Endcap),
            window: 5,
        };
        vec![maps.clone(), maps, models_schema(&spec)]
    }

    fn validate(&self) -> Result<()> {
        if self.modes.is_empty() || self.seeds.is_empty() {
            return bad_param("modes", "name at least one mode and one seed");
        }
        if self.epochs.is_empty() || self.epochs.contains(&0) {
            return bad_param("epochs", "list epoch counts ≥ 1");
        }
        if self.fills.is_empty() || self.fills.contains(&0) {
            return bad_param("fills", "list training fill counts ≥ 1");
        }
        if self.train.transfer.is_some() {
            return bad_param("train", "give `transfer` per mode (`modes[].transfer`)");
        }
        let train = GraphstadTrain {
            epochs: 1,
            ..self.train.clone()
        };
        within("train", train.validate())?;
        for (i, mode) in self.modes.iter().enumerate() {
            if self.modes[..i].iter().any(|m| m.name == mode.name) {
                return bad_param("modes", format!("mode `{}` is named twice", mode.name));
            }
            within(&format!("modes[{i}]"), self.recipe(mode, 1, 1).validate())?;
        }
        Ok(())
    }
}

/// One run's figures at one epoch count.
#[derive(Debug, Clone, PartialEq)]
struct RunRow {
    mode: String,
    seed: i64,
    train_fills: i64,
    epochs: i64,
    best_epoch: i64,
    trainable_params: i64,
    val_mse: f64,
    test_mse: f64,
    rule_mse: f64,
    noise_floor: Option<f64>,
}

fn runs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column("mode", DataType::Utf8, "Training mode (`modes[].name`)"),
        column(
            "init_blocks",
            DataType::Utf8,
            "Blocks initialized from the source and fine-tuned",
        ),
        column(
            "frozen_blocks",
            DataType::Utf8,
            "Blocks frozen at the source (`/[…]`: parameters tuned in them nevertheless)",
        ),
        column("seed", DataType::Int64, "Seed of the run"),
        column(
            "train_fills",
            DataType::Int64,
            "Target fills trained on (the first ones of the training input)",
        ),
        column("epochs", DataType::Int64, "Epoch budget of this row"),
        column(
            "best_epoch",
            DataType::Int64,
            "Epoch of the kept parameters (lowest validation MSE within the budget)",
        ),
        column("trainable_params", DataType::Int64, "Parameters trained"),
        column("val_mse", DataType::Float64, "Validation MSE at best_epoch"),
        column(
            "test_mse",
            DataType::Float64,
            "Mean reconstruction MSE on the healthy test maps (Eq. 7, model scale)",
        ),
        column(
            "rule_mse",
            DataType::Float64,
            "The reference-map rule's test MSE (mean of the same training maps)",
        ),
        nullable(
            "noise_floor",
            DataType::Float64,
            "Binomial noise floor of the test MSE (maps with the generator's truth)",
        ),
    ]))
}

fn summary_schema() -> SchemaRef {
    let f = |name: &str, doc: &str| nullable(name, DataType::Float64, doc);
    Arc::new(Schema::new(vec![
        column("mode", DataType::Utf8, "Training mode"),
        column("train_fills", DataType::Int64, "Target fills trained on"),
        column("epochs", DataType::Int64, "Epoch budget"),
        column("runs", DataType::Int64, "Seeds averaged"),
        column("trainable_params", DataType::Int64, "Parameters trained"),
        column(
            "delta_params",
            DataType::Float64,
            "ΔW: relative change of the trainable parameters w.r.t. the first mode",
        ),
        column("test_mse", DataType::Float64, "Mean test MSE over seeds"),
        f("test_mse_lo", "Student-t 95 % interval over seeds, lower"),
        f("test_mse_hi", "Same, upper"),
        column(
            "delta_mse",
            DataType::Float64,
            "ΔMSE: mean over seeds of test_mse / first mode's − 1 (paired by seed)",
        ),
        f("delta_mse_lo", "Student-t 95 % interval over seeds, lower"),
        f("delta_mse_hi", "Same, upper"),
        f(
            "reducible_delta",
            "Mean over seeds of (MSE − MSE_first) / (MSE_first − floor): the change as a fraction of the reducible error",
        ),
        f(
            "reducible_delta_lo",
            "Student-t 95 % interval over seeds, lower",
        ),
        f("reducible_delta_hi", "Same, upper"),
        column(
            "below_rule",
            DataType::Float64,
            "Fraction of seeds whose test MSE is ≤ the rule's",
        ),
        column(
            "rule_mse",
            DataType::Float64,
            "The reference-map rule's test MSE",
        ),
        f("noise_floor", "Binomial noise floor of the test MSE"),
    ]))
}

impl TransferStudy {
    /// `graphstad_train`'s parameters for one run.
    fn recipe(&self, mode: &Mode, seed: u64, epochs: usize) -> GraphstadTrain {
        GraphstadTrain {
            epochs: epochs.max(1),
            seed,
            transfer: mode.transfer.clone(),
            ..self.train.clone()
        }
    }

    fn max_epochs(&self) -> usize {
        self.epochs.iter().copied().max().unwrap_or(1)
    }

    fn needs_source(&self) -> bool {
        self.modes.iter().any(|m| m.transfer.is_some())
    }
}

/// What every run on the same training fills shares: the split, the
/// scaling and the rule's and the floor's test MSE.
struct TrainingSet<'r> {
    fills: usize,
    train: Vec<&'r MapRow>,
    val_fills: Vec<&'r [MapRow]>,
    scaling: Scaling,
    rule_mse: f64,
    noise_floor: Option<f64>,
}

impl<'r> TrainingSet<'r> {
    fn new(
        recipe: &GraphstadTrain,
        (rows, name): (&'r [MapRow], &str),
        fills_wanted: usize,
        test: &[MapRow],
        geometry: &MapGeometry,
    ) -> Result<Self> {
        let all_fills = fills(rows);
        if all_fills.len() < fills_wanted {
            return Err(StageError::data(format!(
                "input `{name}` holds {} fills: `fills` asks for {fills_wanted}",
                all_fills.len()
            )));
        }
        let n: usize = all_fills[..fills_wanted].iter().map(|f| f.len()).sum();
        let (train, val) = recipe.split(&rows[..n], name)?;
        let train: Vec<&MapRow> = train.iter().collect();
        let scaling = Scaling::fit(&train);
        // The rule as `calibrate` builds it: the mean training map.
        let reference: Vec<f64> = reference_map(train.iter().copied(), scaling.min.len())
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let scaled = scaling.scale(&reference);
        let rule_mse = test
            .iter()
            .map(|r| reference_mse(&scaling, &scaled, r))
            .sum::<f64>()
            / test.len() as f64;
        let floors: Option<Vec<f64>> = test
            .iter()
            .map(|r| mse_floor(&scaling, r, geometry))
            .collect();
        Ok(Self {
            fills: fills_wanted,
            val_fills: fills(val),
            train,
            scaling,
            rule_mse,
            noise_floor: floors.map(|f| f.iter().sum::<f64>() / f.len() as f64),
        })
    }
}

impl Stage for TransferStudy {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        let geometry = check_maps(&inputs[0], "training maps")?;
        check_renormalized(&inputs[0], "training maps")?;
        let test = check_maps(&inputs[1], "test maps")?;
        check_renormalized(&inputs[1], "test maps")?;
        geometry.check(&test, "input `test maps`")?;
        match (inputs.get(2), self.needs_source()) {
            (Some(source), true) => {
                let spec = ModelSpec::from_schema(source, "source")?;
                for mode in &self.modes {
                    self.recipe(mode, 1, 1).check_source(&spec)?;
                }
            }
            (None, true) => {
                return Err(StageError::data(
                    "a mode with `transfer` needs the source model as third input (inputs: [train maps, test maps, source])",
                ));
            }
            (Some(_), false) => {
                return Err(StageError::data(
                    "a third input (a source model) is only read by modes with `transfer`",
                ));
            }
            (None, false) => {}
        }
        Ok(vec![
            OutputSpec {
                name: "main",
                schema: runs_schema(),
            },
            OutputSpec {
                name: "summary",
                schema: summary_schema(),
            },
        ])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let geometry = check_maps(&ctx.inputs[0].schema, &ctx.inputs[0].name)?;
        let rows = read_all_rows(&ctx.inputs[0], &geometry)?;
        let test = read_all_rows(&ctx.inputs[1], &geometry)?;
        let test_fills = fills(&test);
        if test
            .iter()
            .any(|r| r.case.as_deref().is_some_and(|c| c != "none"))
        {
            return Err(StageError::data(format!(
                "input `{}` holds injected anomalies: the test MSE is on healthy maps",
                ctx.inputs[1].name
            )));
        }
        let recipe = self.recipe(&self.modes[0], 0, self.max_epochs());
        let sets: Vec<TrainingSet> = self
            .fills
            .iter()
            .map(|&n| TrainingSet::new(&recipe, (&rows, &ctx.inputs[0].name), n, &test, &geometry))
            .collect::<Result<_>>()?;
        let seeds = &self.seeds[ctx.shard.range(self.seeds.len())];
        let device = recipe.device.resolve()?;
        let _torch = exclusive();
        let progress = ctx.reporter.progress(
            (seeds.len() * sets.len() * self.modes.len() * self.max_epochs()) as u64,
            "epochs",
        );
        let mut out = Vec::new();
        for &seed in seeds {
            for set in &sets {
                for mode in &self.modes {
                    let recipe = self.recipe(mode, seed, self.max_epochs());
                    let net = recipe.network(ctx.inputs.get(2), &Silent, geometry, device)?;
                    let path = ctx.artifacts.join(format!("best_{seed}.safetensors"));
                    let mut best = Checkpoint::new(path.clone());
                    let mut snapshot = |epoch: usize, best: &Checkpoint| -> Result<()> {
                        progress.inc(1);
                        if !self.epochs.contains(&epoch) {
                            return Ok(());
                        }
                        let test_mse =
                            test_mse(&recipe, &path, (geometry, device), set, &test_fills)?;
                        out.push(RunRow {
                            mode: mode.name.clone(),
                            seed: seed as i64,
                            train_fills: set.fills as i64,
                            epochs: epoch as i64,
                            best_epoch: best.best_epoch as i64,
                            trainable_params: net.trainable_params,
                            val_mse: best.best,
                            test_mse,
                            rule_mse: set.rule_mse,
                            noise_floor: set.noise_floor,
                        });
                        Ok(())
                    };
                    recipe.train(
                        &net,
                        (&set.train, &set.scaling),
                        &set.val_fills,
                        &mut best,
                        &Silent,
                        device,
                        &mut |e, best| snapshot(e.epoch, best),
                    )?;
                    let _ = std::fs::remove_file(&path);
                    let last = out.last().expect("the largest budget is scored");
                    ctx.reporter.info(&format!(
                        "{} seed {seed}, {} fills: test MSE {:.4e} after {} epochs (rule {:.4e}, floor {})",
                        mode.name,
                        set.fills,
                        last.test_mse,
                        last.epochs,
                        set.rule_mse,
                        set.noise_floor.map_or("-".into(), |f| format!("{f:.4e}"))
                    ));
                }
            }
        }
        ctx.output.write("main", runs_batch(&out, &self.modes)?)?;
        let summary = summarize(&self.modes[0].name, &out)?;
        ctx.output.write("summary", summary_batch(&summary)?)?;
        // A shard's figures would show its seeds only (`recombine` draws).
        if ctx.shard.count == 1 {
            plot(ctx.artifacts, &self.modes[0].name, &summary)?;
        }
        Ok(())
    }

    fn shardable(&self) -> bool {
        true
    }

    fn recombined_outputs(&self) -> &'static [&'static str] {
        &["summary"]
    }

    /// The summary and the figures over every seed, from the shards' rows.
    fn recombine(
        &self,
        tables: &BTreeMap<String, Input>,
        output: &mut dyn OutputWriter,
        artifacts: &std::path::Path,
    ) -> Result<()> {
        let rows = read_runs(&tables["main"])?;
        let summary = summarize(&self.modes[0].name, &rows)?;
        output.write("summary", summary_batch(&summary)?)?;
        plot(artifacts, &self.modes[0].name, &summary)
    }
}

/// Mean test MSE of the parameters in `path` over the test fills.
fn test_mse(
    recipe: &GraphstadTrain,
    path: &std::path::Path,
    (geometry, device): (MapGeometry, tch::Device),
    set: &TrainingSet<'_>,
    test_fills: &[&[MapRow]],
) -> Result<f64> {
    let mut vs = nn::VarStore::new(device);
    let model = GraphStad::new(&vs.root(), recipe.arch.clone(), geometry);
    vs.load(path)
        .map_err(|e| StageError::data(format!("cannot reload {}: {e}", path.display())))?;
    let (mut sum, mut n) = (0.0, 0usize);
    for fill in test_fills {
        let errors = fill_errors(
            &model,
            &set.scaling,
            fill,
            recipe.window,
            recipe.carry_state,
            device,
        )?;
        sum += errors.mse.iter().sum::<f64>();
        n += errors.mse.len();
    }
    Ok(sum / n as f64)
}

fn runs_batch(rows: &[RunRow], modes: &[Mode]) -> Result<RecordBatch> {
    let int = |f: fn(&RunRow) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(f)))
    };
    let float = |f: fn(&RunRow) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(f)))
    };
    let transfer = |r: &RunRow| {
        modes
            .iter()
            .find(|m| m.name == r.mode)
            .and_then(|m| m.transfer.clone())
            .unwrap_or_default()
    };
    let label = |f: &dyn Fn(&Transfer) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| f(&transfer(r))),
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.mode.as_str()),
        )),
        label(&|t| Block::names(&t.init)),
        label(&|t| frozen_label(&t.freeze, &t.tune)),
        int(|r| r.seed),
        int(|r| r.train_fills),
        int(|r| r.epochs),
        int(|r| r.best_epoch),
        int(|r| r.trainable_params),
        float(|r| r.val_mse),
        float(|r| r.test_mse),
        float(|r| r.rule_mse),
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r.noise_floor).collect::<Vec<_>>(),
        )),
    ];
    Ok(RecordBatch::try_new(runs_schema(), columns)?)
}

/// The run rows of a written `main` table (the shards' concatenation).
fn read_runs(input: &Input) -> Result<Vec<RunRow>> {
    let mut rows = Vec::new();
    for batch in input.batches() {
        let batch = batch?;
        let col = |name: &str| batch.column_by_name(name).expect("declared output");
        let int = |name: &str, i: usize| col(name).as_primitive::<Int64Type>().value(i);
        let float = |name: &str, i: usize| col(name).as_primitive::<Float64Type>().value(i);
        let floor = col("noise_floor").as_primitive::<Float64Type>();
        for i in 0..batch.num_rows() {
            rows.push(RunRow {
                mode: col("mode").as_string::<i32>().value(i).to_string(),
                seed: int("seed", i),
                train_fills: int("train_fills", i),
                epochs: int("epochs", i),
                best_epoch: int("best_epoch", i),
                trainable_params: int("trainable_params", i),
                val_mse: float("val_mse", i),
                test_mse: float("test_mse", i),
                rule_mse: float("rule_mse", i),
                noise_floor: floor.is_valid(i).then(|| floor.value(i)),
            });
        }
    }
    Ok(rows)
}

/// One summary row: a mode at (training fills, epochs), over seeds.
struct SummaryRow {
    key: (String, i64, i64),
    runs: usize,
    trainable_params: i64,
    delta_params: f64,
    test_mse: (f64, Option<(f64, f64)>),
    delta_mse: (f64, Option<(f64, f64)>),
    reducible: Option<(f64, Option<(f64, f64)>)>,
    below_rule: f64,
    rule_mse: f64,
    noise_floor: Option<f64>,
}

/// (mode, training fills, epochs).
type GroupKey = (String, i64, i64);

/// The runs of one group by seed.
type BySeed<'a> = BTreeMap<i64, &'a RunRow>;

/// Rows grouped by (mode, training fills, epochs), ordered by fills and
/// epochs (modes in first-seen order), with each group's runs by seed.
fn groups(rows: &[RunRow]) -> Vec<(GroupKey, BySeed<'_>)> {
    let mut out: Vec<(GroupKey, BySeed<'_>)> = Vec::new();
    for r in rows {
        let key = (r.mode.clone(), r.train_fills, r.epochs);
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, runs)) => {
                runs.insert(r.seed, r);
            }
            None => out.push((key, BTreeMap::from([(r.seed, r)]))),
        }
    }
    out.sort_by_key(|(key, _)| (key.1, key.2));
    out
}

fn summarize(base_mode: &str, rows: &[RunRow]) -> Result<Vec<SummaryRow>> {
    let groups = groups(rows);
    let mut out = Vec::new();
    for (key, runs) in &groups {
        let base = groups
            .iter()
            .find(|(k, _)| *k == (base_mode.to_string(), key.1, key.2))
            .map(|(_, r)| r)
            .ok_or_else(|| {
                StageError::data(format!(
                    "no run of the first mode `{base_mode}` to compare with"
                ))
            })?;
        let paired: Vec<(&RunRow, &RunRow)> = runs
            .iter()
            .filter_map(|(seed, r)| base.get(seed).map(|b| (*r, *b)))
            .collect();
        let first = runs.values().next().expect("a group has a run");
        let ratios: Vec<f64> = paired
            .iter()
            .map(|(r, b)| r.test_mse / b.test_mse - 1.0)
            .collect();
        let reducible: Option<Vec<f64>> = paired
            .iter()
            .map(|(r, b)| {
                b.noise_floor
                    .map(|f| (r.test_mse - b.test_mse) / (b.test_mse - f))
            })
            .collect();
        let mse: Vec<f64> = runs.values().map(|r| r.test_mse).collect();
        let base_params = base
            .values()
            .next()
            .expect("a group has a run")
            .trainable_params;
        out.push(SummaryRow {
            key: key.clone(),
            runs: runs.len(),
            trainable_params: first.trainable_params,
            delta_params: first.trainable_params as f64 / base_params as f64 - 1.0,
            test_mse: mean_t95(&mse),
            delta_mse: mean_t95(&ratios),
            reducible: reducible.filter(|v| !v.is_empty()).map(|v| mean_t95(&v)),
            below_rule: runs.values().filter(|r| r.test_mse <= r.rule_mse).count() as f64
                / runs.len() as f64,
            rule_mse: first.rule_mse,
            noise_floor: first.noise_floor,
        });
    }
    Ok(out)
}

fn summary_batch(s: &[SummaryRow]) -> Result<RecordBatch> {
    let float = |f: &dyn Fn(&SummaryRow) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from(s.iter().map(f).collect::<Vec<_>>()))
    };
    let lo = |v: &(f64, Option<(f64, f64)>)| v.1.map(|i| i.0);
    let hi = |v: &(f64, Option<(f64, f64)>)| v.1.map(|i| i.1);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            s.iter().map(|r| r.key.0.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(s.iter().map(|r| r.key.1))),
        Arc::new(Int64Array::from_iter_values(s.iter().map(|r| r.key.2))),
        Arc::new(Int64Array::from_iter_values(
            s.iter().map(|r| r.runs as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            s.iter().map(|r| r.trainable_params),
        )),
        float(&|r| Some(r.delta_params)),
        float(&|r| Some(r.test_mse.0)),
        float(&|r| lo(&r.test_mse)),
        float(&|r| hi(&r.test_mse)),
        float(&|r| Some(r.delta_mse.0)),
        float(&|r| lo(&r.delta_mse)),
        float(&|r| hi(&r.delta_mse)),
        float(&|r| r.reducible.map(|v| v.0)),
        float(&|r| r.reducible.as_ref().and_then(lo)),
        float(&|r| r.reducible.as_ref().and_then(hi)),
        float(&|r| Some(r.below_rule)),
        float(&|r| Some(r.rule_mse)),
        float(&|r| r.noise_floor),
    ];
    Ok(RecordBatch::try_new(summary_schema(), columns)?)
}

/// Fig. 7: test MSE over epochs (a), ΔMSE (b) and its share of the
/// reducible error, one line per mode and training fills.
fn plot(dir: &std::path::Path, base_mode: &str, summary: &[SummaryRow]) -> Result<()> {
    let mut series: [BTreeMap<String, Vec<(f64, f64)>>; 3] = Default::default();
    for r in summary {
        let (mode, fills, epochs) = (&r.key.0, r.key.1, r.key.2 as f64);
        let name = format!("{mode}, {fills} fills");
        series[0]
            .entry(name.clone())
            .or_default()
            .push((epochs, r.test_mse.0));
        if mode == base_mode {
            let rule = format!("rule, {fills} fills");
            series[0]
                .entry(rule)
                .or_default()
                .push((epochs, r.rule_mse));
            continue;
        }
        series[1]
            .entry(name.clone())
            .or_default()
            .push((epochs, 100.0 * r.delta_mse.0));
        if let Some((v, _)) = r.reducible {
            series[2].entry(name).or_default().push((epochs, 100.0 * v));
        }
    }
    let as_series = |m: &BTreeMap<String, Vec<(f64, f64)>>| -> Vec<Series> {
        m.iter()
            .map(|(name, points)| Series {
                name: name.clone(),
                points: points.clone(),
            })
            .collect()
    };
    let figures = [
        (
            "fig7_test_mse.png",
            "Test MSE on healthy maps (mean over seeds)".to_string(),
            "test MSE",
        ),
        (
            "fig7_delta_mse.png",
            format!("ΔMSE w.r.t. {base_mode} (mean over seeds)"),
            "ΔMSE (%)",
        ),
        (
            "fig7_reducible_delta.png",
            format!("ΔMSE as a share of {base_mode}'s reducible error"),
            "ΔMSE / (MSE − floor) (%)",
        ),
    ];
    for ((file, title, y), s) in figures.iter().zip(&series) {
        if !s.is_empty() {
            lines(&dir.join(file), title, "epochs", y, &as_series(s), false)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hcal::graphstad_score::GraphstadScore;
    use crate::hcal::model::Block;
    use crate::hcal::tables::f64_column;
    use crate::hcal::test_support::{maps, maps_input, small_train};
    use crate::in_memory::{input_from_batch, run_in_memory};

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    #[test]
    fn a_snapshot_is_the_model_graphstad_train_keeps_with_that_many_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let train = maps_input(dir.path(), "train", &maps(Subdetector::Barrel, 2, 1), None);
        let test = maps_input(dir.path(), "test", &maps(Subdetector::Barrel, 1, 2), None);
        let study = TransferStudy {
            modes: vec![Mode {
                name: "scratch".into(),
                transfer: None,
            }],
            seeds: vec![3, 4],
            epochs: vec![1, 2],
            fills: vec![1, 2],
            train: small_train(),
        };
        let out = run_in_memory(&study, &[train.clone(), test.clone()]).unwrap();
        let runs = read_runs(
            &input_from_batch("runs", &out.table("main"), &dir.path().join("runs.parquet"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(runs.len(), 2 * 2 * 2, "seeds × fills × epoch budgets");
        // The same recipe through the stages a user would chain.
        let single = GraphstadTrain {
            epochs: 2,
            seed: 4,
            ..small_train()
        };
        let models = run_in_memory(&single, &[train]).unwrap().table("main");
        let models = input_from_batch("m", &models, &dir.path().join("m.parquet")).unwrap();
        let scores = run_in_memory(&GraphstadScore::default(), &[test, models])
            .unwrap()
            .table("main");
        let row = runs
            .iter()
            .find(|r| (r.seed, r.train_fills, r.epochs) == (4, 2, 2))
            .unwrap();
        let (mse, rule) = (
            mean(&f64_column(&scores, "mse")),
            mean(&f64_column(&scores, "reference_mse")),
        );
        assert!(
            (row.test_mse - mse).abs() <= 1e-9 * mse,
            "{} vs {mse}",
            row.test_mse
        );
        assert!(
            (row.rule_mse - rule).abs() <= 1e-9 * rule,
            "{} vs {rule}",
            row.rule_mse
        );
        let floor = mean(&f64_column(&scores, "mse_floor"));
        assert!((row.noise_floor.unwrap() - floor).abs() <= 1e-9 * floor);
        // One fill trains on less: another rule, another model.
        let one = runs
            .iter()
            .find(|r| (r.seed, r.train_fills, r.epochs) == (4, 1, 2))
            .unwrap();
        assert_ne!(one.rule_mse, row.rule_mse);
        assert_ne!(one.test_mse, row.test_mse);
        // The summary: one mode, 2 fills × 2 budgets, each over both seeds,
        // compared with itself.
        let summary = summarize("scratch", &runs).unwrap();
        assert_eq!(summary.len(), 4);
        for s in &summary {
            assert_eq!(s.runs, 2);
            assert_eq!(s.delta_mse.0, 0.0);
            let (lo, hi) = s.test_mse.1.unwrap();
            assert!(lo < s.test_mse.0 && s.test_mse.0 < hi);
        }
    }

    #[test]
    fn transfer_modes_need_the_source_and_a_frozen_encoder_trains_fewer_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let source_maps = maps_input(dir.path(), "endcap", &maps(Subdetector::Endcap, 2, 4), None);
        let source = run_in_memory(&small_train(), &[source_maps])
            .unwrap()
            .table("main");
        let source = input_from_batch("source", &source, &dir.path().join("s.parquet")).unwrap();
        let train = maps_input(dir.path(), "train", &maps(Subdetector::Barrel, 1, 5), None);
        let test = maps_input(dir.path(), "test", &maps(Subdetector::Barrel, 1, 6), None);
        let frozen = Transfer {
            init: vec![Block::DecoderCnn],
            freeze: vec![Block::EncoderCnn, Block::EncoderGcn],
            tune: vec![],
        };
        let study = TransferStudy {
            modes: vec![
                Mode {
                    name: "scratch".into(),
                    transfer: None,
                },
                Mode {
                    name: "tl4_tl3".into(),
                    transfer: Some(frozen),
                },
            ],
            seeds: vec![1, 2],
            epochs: vec![2],
            fills: vec![1],
            train: small_train(),
        };
        let schemas = [train.schema.clone(), test.schema.clone()];
        let err = study.outputs(&schemas).unwrap_err().to_string();
        assert!(err.contains("source model as third input"), "{err}");
        let out = run_in_memory(&study, &[train, test, source]).unwrap();
        let summary = out.table("summary");
        assert_eq!(summary.num_rows(), 2);
        let delta_params = f64_column(&summary, "delta_params");
        assert_eq!(delta_params[0], 0.0);
        assert!(delta_params[1] < 0.0, "{delta_params:?}");
        let delta = f64_column(&summary, "delta_mse");
        assert!(delta[1].is_finite() && delta[1] != 0.0, "{delta:?}");
        let frozen = out.table("main");
        let label = frozen
            .column_by_name("frozen_blocks")
            .unwrap()
            .as_string::<i32>()
            .value(frozen.num_rows() - 1)
            .to_string();
        assert_eq!(label, "enc_cnn,enc_gcn");
    }
}
