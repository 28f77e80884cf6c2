//! `graphstad_train`: trains the GraphSTAD autoencoder on healthy,
//! renormalized LS maps (paper sec. 4.2), optionally transferring blocks of
//! a source model trained on another subdetector (sec. 4.3, Table 2).
//!
//! The maps, in input order, are cut into a training part and a validation
//! part (the last `validation_fraction`, paper: 20 %). The training part is
//! cut into `streams` contiguous sequences run side by side; each epoch walks
//! them window by window (T LS) with the LSTM states carried from one window
//! to the next and cut from the graph between them (the paper: +50 % MSE
//! without state preservation). The loss is Eq. 8: MSE + λ·KL + ρ·‖W‖²; the
//! parameters of the epoch with the lowest validation MSE are kept. σ_i of
//! Eq. 6 is then measured on the training maps, for the model and for the
//! reference-map rule it is compared with.
//!
//! Outputs: `main` (one row: card JSON + safetensors weights) and `log` (per
//! epoch: train and validation MSE, learning rate, time); artifacts
//! `model.safetensors`, `model.json` and `mse.png`.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Schema, SchemaRef};

use crate::error::{Result, StageError, bad_param};
use crate::hcal::geometry::MapGeometry;
pub use crate::hcal::model::{Transfer, Tuned};
use crate::hcal::scoring::{Scaling, calibrate, fills};
// The parameters live with the training code `transfer_study` shares.
use crate::hcal::tables::{
    GraphStadCard, MapRow, ModelSpec, check_maps, check_renormalized, example_maps_schema,
    models_schema, read_all_rows, renormalized_fields, with_fields,
};
use crate::hcal::training::EpochLog;
pub use crate::hcal::training::GraphstadTrain;
use crate::nn::{Checkpoint, exclusive};
use crate::plots::{Series, lines};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};
use dqm_schemas::column;

impl StageConfig for GraphstadTrain {
    const KIND: &'static str = "graphstad_train";
    const VERSION: u32 = 4;
    const SUMMARY: &'static str = "Renormalized healthy LS maps -> GraphSTAD autoencoder (CNN + RBX-graph GCN + LSTM, variational), optional transfer of blocks from a source model";
    const INPUTS: (usize, usize) = (1, 2);
    const INPUT_ROLES: &'static str = "renormalized healthy maps, optional source model";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![with_fields(&example_maps_schema(), renormalized_fields())]
    }

    fn validate(&self) -> Result<()> {
        if self.window == 0 || self.streams == 0 || self.epochs == 0 {
            return bad_param("window", "window, streams and epochs must be ≥ 1");
        }
        if !(self.learning_rate > 0.0) {
            return bad_param("learning_rate", "must be > 0");
        }
        if !(self.kl_weight >= 0.0) || !(self.l2_weight >= 0.0) {
            return bad_param("kl_weight", "kl_weight and l2_weight must be ≥ 0");
        }
        if !(self.plateau_factor > 0.0 && self.plateau_factor < 1.0) {
            return bad_param("plateau_factor", "must be in (0, 1)");
        }
        if !(self.alpha_quantile > 0.0 && self.alpha_quantile < 1.0) {
            return bad_param("alpha_quantile", "must be in (0, 1)");
        }
        if !(self.validation_fraction > 0.0 && self.validation_fraction < 1.0) {
            return bad_param("validation_fraction", "must be in (0, 1)");
        }
        let a = &self.arch;
        if a.conv_channels
            .iter()
            .chain([&a.gcn_features, &a.embed, &a.lstm_hidden, &a.latent])
            .any(|&v| v < 1)
        {
            return bad_param("arch", "every layer size must be ≥ 1");
        }
        if let Some(t) = &self.transfer {
            if t.init.is_empty() && t.freeze.is_empty() {
                return bad_param("transfer", "name blocks under `init` and/or `freeze`");
            }
            if let Some(b) = t.init.iter().find(|b| t.freeze.contains(b)) {
                return bad_param(
                    "transfer",
                    format!("{b:?} is both in `init` (fine-tuned) and `freeze`"),
                );
            }
            if !t.tune.is_empty() && t.freeze.is_empty() {
                return bad_param(
                    "transfer",
                    "`tune` names parameters of the frozen blocks: name blocks under `freeze`",
                );
            }
        }
        Ok(())
    }
}

fn log_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        column("epoch", DataType::Int64, "Epoch, from 1"),
        column(
            "train_mse",
            DataType::Float64,
            "Mean training MSE over the epoch's windows (model input scale)",
        ),
        column(
            "train_loss",
            DataType::Float64,
            "Mean training loss MSE + λ·KL + ρ·‖W‖²",
        ),
        column(
            "val_mse",
            DataType::Float64,
            "Validation MSE, states carried over the validation sequence",
        ),
        column(
            "learning_rate",
            DataType::Float64,
            "Learning rate used in the epoch",
        ),
        column(
            "improved",
            DataType::Boolean,
            "Best validation MSE so far (these parameters are kept)",
        ),
    ]))
}

impl GraphstadTrain {
    fn spec(&self, geometry: MapGeometry) -> ModelSpec {
        ModelSpec {
            arch: self.arch.clone(),
            geometry,
            window: self.window,
        }
    }
}

impl Stage for GraphstadTrain {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        let geometry = check_maps(&inputs[0], "maps")?;
        check_renormalized(&inputs[0], "maps")?;
        match (inputs.len(), &self.transfer) {
            (1, None) => {}
            (2, Some(_)) => self.check_source(&ModelSpec::from_schema(&inputs[1], "source")?)?,
            (1, Some(_)) => {
                return Err(StageError::data(
                    "`transfer` needs the source model as second input (inputs: [maps, source])",
                ));
            }
            _ => {
                return Err(StageError::data(
                    "a second input (a source model) is only read with a `transfer` block",
                ));
            }
        }
        Ok(vec![
            OutputSpec {
                name: "main",
                schema: models_schema(&self.spec(geometry)),
            },
            OutputSpec {
                name: "log",
                schema: log_schema(),
            },
        ])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let input = &ctx.inputs[0];
        let geometry = check_maps(&input.schema, &input.name)?;
        check_renormalized(&input.schema, &input.name)?;
        let rows = read_all_rows(input, &geometry)?;
        let (train_rows, val_rows) = self.split(&rows, &input.name)?;
        let train_refs: Vec<&MapRow> = train_rows.iter().collect();
        let scaling = Scaling::fit(&train_refs);
        let device = self.device.resolve()?;
        let _torch = exclusive();
        let mut net = self.network(ctx.inputs.get(1), ctx.reporter, geometry, device)?;
        let val_fills = fills(val_rows);
        let progress = ctx.reporter.progress(self.epochs as u64, "epochs");
        let mut best = Checkpoint::new(ctx.artifacts.join("model.safetensors"));
        let log = self.train(
            &net,
            (&train_refs, &scaling),
            &val_fills,
            &mut best,
            ctx.reporter,
            device,
            &mut |_, _| {
                progress.inc(1);
                Ok(())
            },
        )?;
        best.restore(&mut net.vs)?;
        let cal = calibrate(
            &net.model,
            &scaling,
            (train_rows, &val_fills),
            (self.window, self.carry_state),
            self.alpha_quantile,
            device,
        )?;
        let card = GraphStadCard {
            spec: self.spec(geometry),
            carry_state: self.carry_state,
            min: scaling.min.clone(),
            max: scaling.max.clone(),
            sigma: cal.sigma,
            reference: cal.reference,
            sigma_reference: cal.sigma_reference,
            alpha: cal.alpha,
            reference_alpha: cal.reference_alpha,
            lumi_intercept: cal.lumi.intercept,
            lumi_slope: cal.lumi.slope,
            alphas: cal.alphas,
            trainable_params: net.trainable_params,
            total_params: net.total_params,
            init_blocks: net.init,
            frozen_blocks: net.freeze,
            tuned: net.tune,
            best_epoch: best.best_epoch,
            val_mse: best.best,
            val_curve: log.iter().map(|e| e.val_mse).collect(),
            train_maps: train_rows.len(),
            val_maps: val_rows.len(),
        };
        ctx.reporter.info(&format!(
            "best epoch {}: val MSE {:.3e}; {} of {} parameters trained; α = {:.2} (reference rule {:.2}) at the {} quantile of validation a_i",
            card.best_epoch,
            card.val_mse,
            card.trainable_params,
            card.total_params,
            card.alpha,
            card.reference_alpha,
            self.alpha_quantile
        ));
        self.write(ctx, &card, best.bytes()?, &log)
    }
}

impl GraphstadTrain {
    fn write(
        &self,
        ctx: &mut RunContext<'_>,
        card: &GraphStadCard,
        weights: Vec<u8>,
        log: &[EpochLog],
    ) -> Result<()> {
        let card_json = serde_json::to_string(card).expect("plain data serializes");
        let card_path = ctx.artifacts.join("model.json");
        std::fs::write(&card_path, &card_json).map_err(|e| StageError::io(&card_path, e))?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![
                card.spec.geometry.subdetector.name(),
            ])),
            Arc::new(Int64Array::from(vec![card.best_epoch as i64])),
            Arc::new(Int64Array::from(vec![log.len() as i64])),
            Arc::new(Float64Array::from(vec![card.val_mse])),
            Arc::new(Int64Array::from(vec![card.trainable_params])),
            Arc::new(Int64Array::from(vec![card.total_params])),
            Arc::new(StringArray::from(vec![card_json])),
            Arc::new(BinaryArray::from(vec![weights.as_slice()])),
        ];
        ctx.output.write(
            "main",
            RecordBatch::try_new(models_schema(&card.spec), columns)?,
        )?;
        let float = |f: fn(&EpochLog) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(log.iter().map(f)))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                log.iter().map(|e| e.epoch as i64),
            )),
            float(|e| e.train_mse),
            float(|e| e.train_loss),
            float(|e| e.val_mse),
            float(|e| e.learning_rate),
            Arc::new(BooleanArray::from(
                log.iter().map(|e| e.improved).collect::<Vec<_>>(),
            )),
        ];
        ctx.output
            .write("log", RecordBatch::try_new(log_schema(), columns)?)?;
        let series = |name: &str, f: fn(&EpochLog) -> f64| Series {
            name: name.into(),
            points: log.iter().map(|e| (e.epoch as f64, f(e).log10())).collect(),
        };
        lines(
            &ctx.artifacts.join("mse.png"),
            &format!(
                "GraphSTAD {} MSE per epoch{}",
                card.spec.geometry.subdetector.name(),
                if card.frozen_blocks.is_empty() && card.init_blocks.is_empty() {
                    String::new()
                } else {
                    " (transfer)".into()
                }
            ),
            "epoch",
            "log10 MSE",
            &[
                series("train", |e| e.train_mse),
                series("validation", |e| e.val_mse),
            ],
            false,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hcal::channel_metrics::ChannelMetrics;
    use crate::hcal::geometry::Subdetector;
    use crate::hcal::graphstad_score::GraphstadScore;
    use crate::hcal::inject_anomalies::{Anomaly, InjectAnomalies};
    use crate::hcal::model::{Block, GraphStadArch};
    use crate::hcal::tables::ModelSpec;
    use crate::hcal::test_support::{maps, maps_input, small_arch, small_train};
    use crate::in_memory::{input_from_batch, run_in_memory};
    use crate::input::Input;
    use arrow::array::AsArray;

    /// Trains `stage` and returns (models table as an input, its weights).
    fn train(
        dir: &std::path::Path,
        stage: &GraphstadTrain,
        inputs: &[Input],
        name: &str,
    ) -> (Input, safetensors::tensor::SafeTensors<'static>) {
        let out = run_in_memory(stage, inputs).unwrap();
        let models = out.table("main");
        assert_eq!(out.table("log").num_rows(), stage.epochs);
        let weights = models
            .column_by_name("weights")
            .unwrap()
            .as_binary::<i32>()
            .value(0)
            .to_vec();
        let leaked: &'static [u8] = Box::leak(weights.into_boxed_slice());
        let input = input_from_batch(name, &models, &dir.join(format!("{name}.parquet"))).unwrap();
        (
            input,
            safetensors::SafeTensors::deserialize(leaked).unwrap(),
        )
    }

    #[test]
    fn trains_scores_and_finds_dead_and_hot_channels_on_unseen_fills() {
        let dir = tempfile::tempdir().unwrap();
        let train_maps = maps_input(dir.path(), "train", &maps(Subdetector::Barrel, 3, 1), None);
        let stage = GraphstadTrain {
            epochs: 4,
            learning_rate: 3e-3,
            ..small_train()
        };
        let (model, _) = train(dir.path(), &stage, &[train_maps], "model");
        let inject = InjectAnomalies {
            cases: vec![Anomaly::Dead, Anomaly::FullyHot],
            targets_per_fill: 2,
            channels: 10,
            ..Default::default()
        };
        let test_maps = maps_input(
            dir.path(),
            "test",
            &maps(Subdetector::Barrel, 2, 2),
            Some(&inject),
        );
        let scores = run_in_memory(&GraphstadScore::default(), &[test_maps, model])
            .unwrap()
            .table("main");
        assert_eq!(scores.num_rows(), 2 * 2 * 40, "2 cases × 2 fills × 40 LS");
        let scores =
            input_from_batch("scores", &scores, &dir.path().join("scores.parquet")).unwrap();
        let table = run_in_memory(&ChannelMetrics::default(), &[scores])
            .unwrap()
            .table("main");
        let text = |name: &str| {
            table
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        let (method, case, positives) = (text("method"), text("case"), text("positives"));
        let auc = crate::hcal::tables::f64_column(&table, "auc");
        let targets = table
            .column_by_name("target_maps")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        let mut methods: Vec<&str> = (0..table.num_rows()).map(|i| method.value(i)).collect();
        methods.dedup();
        assert_eq!(methods.len(), 9, "{methods:?}");
        for (i, auc) in auc.iter().enumerate() {
            assert_eq!(targets.value(i), 4, "2 windows per fill × 2 fills");
            // An RBX sum dilutes a single channel among its RBX's others; a
            // channel compared with its RBX's median cannot see the RBX.
            let rbx_sum = ["graphstad_rbx", "reference_rbx"].contains(&method.value(i));
            if (rbx_sum && positives.value(i) != "rbx")
                || (method.value(i) == "rbx_median" && positives.value(i) != "single")
            {
                continue;
            }
            // Dead: 0 where ~45 hits are expected; fully hot: ξ. Even a
            // briefly trained model and the rules separate them cleanly.
            assert!(
                *auc > 0.99,
                "{} {}: AUC {auc}",
                method.value(i),
                case.value(i)
            );
        }
    }

    #[test]
    fn seeded_training_is_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let m = maps_input(dir.path(), "train", &maps(Subdetector::Forward, 2, 3), None);
        let stage = small_train();
        let (_, a) = train(dir.path(), &stage, std::slice::from_ref(&m), "a");
        let (_, b) = train(dir.path(), &stage, std::slice::from_ref(&m), "b");
        let (_, c) = train(dir.path(), &GraphstadTrain { seed: 9, ..stage }, &[m], "c");
        let bytes = |s: &safetensors::SafeTensors, n: &str| s.tensor(n).unwrap().data().to_vec();
        for name in a.names() {
            assert_eq!(bytes(&a, name), bytes(&b, name), "{name}");
        }
        assert_ne!(bytes(&a, "enc_fc.weight"), bytes(&c, "enc_fc.weight"));
    }

    #[test]
    fn frozen_blocks_keep_the_source_weights_and_init_blocks_start_there() {
        let dir = tempfile::tempdir().unwrap();
        let source_maps = maps_input(dir.path(), "endcap", &maps(Subdetector::Endcap, 2, 4), None);
        let (source, src) = train(dir.path(), &small_train(), &[source_maps], "source");
        let target_maps = maps_input(dir.path(), "barrel", &maps(Subdetector::Barrel, 2, 5), None);
        let stage = GraphstadTrain {
            transfer: Some(Transfer {
                init: vec![Block::DecoderRnn],
                freeze: vec![Block::EncoderCnn, Block::EncoderGcn],
                tune: vec![],
            }),
            seed: 6,
            ..small_train()
        };
        let out = run_in_memory(&stage, &[target_maps.clone(), source.clone()]).unwrap();
        let models = out.table("main");
        let weights = models
            .column_by_name("weights")
            .unwrap()
            .as_binary::<i32>()
            .value(0)
            .to_vec();
        let dst = safetensors::SafeTensors::deserialize(&weights).unwrap();
        let bytes = |s: &safetensors::SafeTensors, n: &str| s.tensor(n).unwrap().data().to_vec();
        let mut frozen_numel = 0;
        for name in dst.names() {
            let block = Block::of(name);
            if matches!(block, Some(Block::EncoderCnn | Block::EncoderGcn)) {
                // Weights, biases and batch-norm statistics: untouched by training.
                assert_eq!(bytes(&dst, name), bytes(&src, name), "{name} changed");
                if !name.contains("running_") {
                    frozen_numel += dst.tensor(name).unwrap().shape().iter().product::<usize>();
                }
            } else if block == Some(Block::DecoderRnn) || name == "enc_rnn.weight_ih_l0" {
                // Fine-tuned from the source, or trained from scratch: moved.
                assert_ne!(bytes(&dst, name), bytes(&src, name), "{name} did not train");
            }
        }
        let col = |n: &str| {
            models
                .column_by_name(n)
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0)
        };
        assert_eq!(
            col("total_params") - col("trainable_params"),
            frozen_numel as i64
        );
        // A source of another architecture is refused before anything runs.
        let other = GraphstadTrain {
            arch: GraphStadArch {
                conv_channels: [6, 8],
                ..small_arch()
            },
            ..stage.clone()
        };
        let err = other
            .outputs(&[target_maps.schema.clone(), source.schema.clone()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("another architecture") && err.contains("EncoderCnn"),
            "{err}"
        );
    }

    #[test]
    fn batch_norms_and_biases_named_in_tune_train_inside_a_frozen_decoder() {
        // Table 4: TL-2_d (decoder CNN frozen), /[BN], /[BN, BIAS].
        let dir = tempfile::tempdir().unwrap();
        let source_maps = maps_input(dir.path(), "endcap", &maps(Subdetector::Endcap, 2, 4), None);
        let (source, src) = train(dir.path(), &small_train(), &[source_maps], "source");
        let target = maps_input(dir.path(), "barrel", &maps(Subdetector::Barrel, 2, 5), None);
        let run = |tune: Vec<Tuned>, name: &str| {
            let stage = GraphstadTrain {
                transfer: Some(Transfer {
                    init: vec![Block::EncoderCnn, Block::EncoderGcn],
                    freeze: vec![Block::DecoderCnn],
                    tune,
                }),
                seed: 6,
                ..small_train()
            };
            let (models, weights) =
                train(dir.path(), &stage, &[target.clone(), source.clone()], name);
            let table = models.batches().next().unwrap().unwrap();
            let trainable = table
                .column_by_name("trainable_params")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0);
            (trainable, weights)
        };
        let (p0, _) = run(vec![], "tl2d");
        let (p1, bn) = run(vec![Tuned::BatchNorm], "tl2d_bn");
        let (p2, bn_bias) = run(vec![Tuned::BatchNorm, Tuned::Bias], "tl2d_bn_bias");
        let bytes = |s: &safetensors::SafeTensors, n: &str| s.tensor(n).unwrap().data().to_vec();
        let numel = |n: &str| src.tensor(n).unwrap().shape().iter().product::<usize>() as i64;
        let (mut bn_params, mut bias_params) = (0, 0);
        for name in src.names() {
            if Block::of(name) != Some(Block::DecoderCnn) {
                continue;
            }
            let is_bn = Tuned::BatchNorm.covers(name);
            let is_bias = Tuned::Bias.covers(name);
            if is_bn && !name.contains("num_batches") {
                // Scales, shifts and running statistics: re-estimated.
                assert_ne!(bytes(&bn, name), bytes(&src, name), "{name} kept");
            } else if !is_bn {
                assert_eq!(bytes(&bn, name), bytes(&src, name), "{name} trained");
            }
            if is_bias {
                assert_ne!(bytes(&bn_bias, name), bytes(&src, name), "{name} kept");
            } else if !is_bn {
                assert_eq!(bytes(&bn_bias, name), bytes(&src, name), "{name} trained");
            }
            if is_bn && !name.contains("running_") && !name.contains("num_batches") {
                bn_params += numel(name);
            }
            if is_bias {
                bias_params += numel(name);
            }
        }
        assert!(bn_params > 0 && bias_params > 0);
        assert_eq!(p1 - p0, bn_params);
        assert_eq!(p2 - p1, bias_params);
        // `tune` without a frozen block is refused.
        let stage = GraphstadTrain {
            transfer: Some(Transfer {
                init: vec![Block::EncoderCnn],
                freeze: vec![],
                tune: vec![Tuned::Bias],
            }),
            ..small_train()
        };
        assert!(stage.validate().unwrap_err().to_string().contains("frozen"));
    }

    #[test]
    fn maps_of_another_geometry_than_the_model_are_refused_at_planning() {
        let spec = ModelSpec {
            arch: small_arch(),
            geometry: MapGeometry::of(Subdetector::Barrel),
            window: 5,
        };
        let maps = with_fields(
            &crate::hcal::tables::maps_schema(MapGeometry::of(Subdetector::Endcap)),
            renormalized_fields(),
        );
        let err = GraphstadScore::default()
            .outputs(&[maps.clone(), models_schema(&spec)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("endcap maps") && err.contains("trained on barrel"),
            "{err}"
        );
        // Maps not renormalized are refused by training, with the fix.
        let raw = crate::hcal::tables::maps_schema(MapGeometry::of(Subdetector::Barrel));
        let err = small_train().outputs(&[raw]).unwrap_err().to_string();
        assert!(err.contains("renormalize_occupancy"), "{err}");
    }

    #[test]
    fn transfer_parameters_are_checked() {
        let both = GraphstadTrain {
            transfer: Some(Transfer {
                init: vec![Block::EncoderCnn],
                freeze: vec![Block::EncoderCnn],
                tune: vec![],
            }),
            ..Default::default()
        };
        assert!(both.validate().unwrap_err().to_string().contains("both"));
        let unknown: std::result::Result<GraphstadTrain, _> =
            serde_json::from_str(r#"{"transfer": {"init": ["encoder_lstm"]}}"#);
        assert!(unknown.unwrap_err().to_string().contains("unknown variant"));
        let maps = with_fields(&example_maps_schema(), renormalized_fields());
        let err = GraphstadTrain {
            transfer: Some(Transfer {
                init: vec![Block::EncoderCnn],
                freeze: vec![],
                tune: vec![],
            }),
            ..Default::default()
        }
        .outputs(&[maps])
        .unwrap_err()
        .to_string();
        assert!(err.contains("source model as second input"), "{err}");
    }
}
