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
        Arc::new(Float64Array::from(vec![0.0; n])),
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

/// Histograms of one ME (`shape`, 20 bins) whose centre moves with the
/// pile-up, 4 + μ/10: good run 1 (part `train`, 200 LS, μ from 20 to 60),
/// and run 9 (part `test`, 20 LS at μ = 40) whose LS 1–10 have the shape
/// of μ = 40 (good) and LS 11–20 the shape of μ = 20 (bad: a shape seen in
/// training, at the wrong pile-up).
pub fn pileup_shapes(dir: &std::path::Path) -> Input {
    use crate::lumi::tables::{LsHistogram, LsKey, histograms_batch};
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let shape = |centre: f64| -> Vec<f64> {
        let h: Vec<f64> = (0..20)
            .map(|b| (-(b as f64 - centre).powi(2) / 6.0).exp())
            .collect();
        let total: f64 = h.iter().sum();
        h.into_iter().map(|v| v / total).collect()
    };
    let mut rows = Vec::new();
    let mut push = |run: i64, ls: i64, mu: f64, centre: f64, bad: bool| {
        rows.push(LsHistogram {
            key: LsKey {
                run,
                ls,
                part: if run == 1 { "train" } else { "test" }.into(),
                events: 100,
                lumi: 0.1,
                truth: if bad { "wrong_pileup" } else { "good" }.into(),
                bad,
                pileup: mu,
            },
            me: "shape".into(),
            counts: shape(centre),
            entries: 100,
        });
    };
    for ls in 1..=200 {
        let mu = 20.0 + 40.0 * (ls - 1) as f64 / 199.0;
        push(
            1,
            ls,
            mu,
            4.0 + mu / 10.0 + rng.random_range(-0.1..0.1),
            false,
        );
    }
    for ls in 1..=20 {
        let bad = ls > 10;
        let centre = if bad { 6.0 } else { 8.0 } + rng.random_range(-0.1..0.1);
        push(9, ls, 40.0, centre, bad);
    }
    let batch = histograms_batch(&rows).unwrap();
    input_from_batch("histograms", &batch, &dir.join("pileup_shapes.parquet")).unwrap()
}
