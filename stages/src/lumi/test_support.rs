//! The lumisection family's test fixtures: synthetic per-LS histograms with
//! a good and a bad run, and a small autoencoder trainer for them.

use crate::in_memory::input_from_batch;
use crate::input::Input;
use crate::lumi::lumi_ae_train::LumiAeTrain;
use crate::lumi::model::LumiAeArch;
use crate::lumi::tables::histograms_schema;

/// Per-LS histograms of `mes` with `bins` bins: Gaussian-ish unit-area
/// shapes whose centre wanders a little from LS to LS (good run 1, 120 LS,
/// part `train`), and shifted ones (run 9, 10 bad LS, part `test`).
pub fn lumi_shapes(dir: &std::path::Path, mes: &[&str], bins: usize) -> Input {
    use arrow::array::{
        ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    };
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let mut rows = Vec::new();
    for (run, n_ls, centre) in [(1i64, 120, 8.0), (9, 10, 13.0)] {
        for ls in 1..=n_ls {
            for &me in mes {
                let c = centre + rng.random_range(-0.5..0.5);
                let h: Vec<f64> = (0..bins)
                    .map(|b| (-(b as f64 - c).powi(2) / 8.0).exp())
                    .collect();
                let total: f64 = h.iter().sum();
                rows.push((
                    run,
                    ls,
                    me,
                    h.into_iter().map(|v| v / total).collect::<Vec<_>>(),
                ));
            }
        }
    }
    let n = rows.len();
    let bad = |r: &(i64, i64, &str, Vec<f64>)| r.0 == 9;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| if bad(r) { "test" } else { "train" }),
        )),
        Arc::new(Int64Array::from(vec![50; n])),
        Arc::new(Float64Array::from(vec![0.1; n])),
        Arc::new(StringArray::from_iter_values(
            rows.iter()
                .map(|r| if bad(r) { "hcal_barrel_off" } else { "good" }),
        )),
        Arc::new(BooleanArray::from(rows.iter().map(bad).collect::<Vec<_>>())),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(crate::arrow_util::f64_lists(
            rows.iter().map(|r| r.3.as_slice()),
        )),
        Arc::new(Int64Array::from(vec![50; n])),
    ];
    let batch = RecordBatch::try_new(histograms_schema(), columns).unwrap();
    input_from_batch("histograms", &batch, &dir.join(format!("h_{bins}.parquet"))).unwrap()
}

/// A small autoencoder trainer for [`lumi_shapes`]: hidden [16, 4, 16], CPU,
/// no early stop before `epochs`.
pub fn small_lumi_ae(epochs: usize) -> LumiAeTrain {
    LumiAeTrain {
        epochs,
        patience: epochs,
        learning_rate: 3e-3,
        arch: LumiAeArch {
            hidden: vec![16, 4, 16],
            activity_l2: 1e-7,
        },
        device: crate::nn::DeviceChoice::Cpu,
        ..Default::default()
    }
}
