//! From renormalized maps to per-channel reconstruction errors, shared by
//! training (σ_i of Eq. 6) and scoring: the model's input scaling, a fill
//! reconstructed window by window with the LSTM states carried, the inverse
//! renormalization to γ/ξ, and the windowed MAE of Eq. 5.

use tch::{Device, Kind, Tensor};

use crate::error::{Result, StageError};
use crate::hcal::geometry::MapGeometry;
use crate::hcal::model::{Block, GraphStad};
use crate::hcal::renormalization::denormalize;
use crate::hcal::tables::{EXTRA_METHODS, MapRow};
use crate::hcal::window_scores::{
    LumiLine, PerLs, counts, rbx_median_corrected, rbx_window_score, signed_window_score,
    window_sum,
};
use crate::stats::quantile;

/// Per-channel min-max scaling of the renormalized occupancy (the paper
/// scales every channel into [0, 1] on the training maps).
#[derive(Debug, Clone)]
pub struct Scaling {
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

impl Scaling {
    /// Min and max of every channel over `rows`.
    pub fn fit(rows: &[&MapRow]) -> Self {
        let m = rows[0].occupancy.len();
        let (mut min, mut max) = (vec![f32::INFINITY; m], vec![f32::NEG_INFINITY; m]);
        for r in rows {
            for (c, &v) in norm(r).iter().enumerate() {
                min[c] = min[c].min(v as f32);
                max[c] = max[c].max(v as f32);
            }
        }
        Self { min, max }
    }

    /// max − min of channel `c` (1 for a constant channel).
    pub fn range(&self, c: usize) -> f32 {
        let r = self.max[c] - self.min[c];
        if r > 0.0 { r } else { 1.0 }
    }

    /// The model's input for one map.
    pub fn scale(&self, norm: &[f64]) -> Vec<f32> {
        norm.iter()
            .enumerate()
            .map(|(c, &v)| (v as f32 - self.min[c]) / self.range(c))
            .collect()
    }

    /// Back from the model's scale to renormalized occupancy.
    pub fn unscale(&self, x: &[f32]) -> Vec<f64> {
        x.iter()
            .enumerate()
            .map(|(c, &v)| f64::from(v * self.range(c) + self.min[c]))
            .collect()
    }
}

/// The reference-map rule's reconstruction MSE of one map in the model's
/// input scale (Eq. 7 for the rule): the yardstick a network must beat.
/// `scaled_reference` is the rule already in that scale ([`Scaling::scale`]).
pub fn reference_mse(scaling: &Scaling, scaled_reference: &[f32], row: &MapRow) -> f64 {
    let x = scaling.scale(norm(row));
    x.iter()
        .zip(scaled_reference)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum::<f64>()
        / x.len() as f64
}

/// The binomial noise floor of the MSE of one map in the model's input
/// scale: what a predictor that knew every channel's true rate would still
/// score, mean over channels of p(1 − p)/ξ ÷ (row median · channel range)²,
/// with p from the generator's expected counts (`None` without them).
pub fn mse_floor(scaling: &Scaling, row: &MapRow, geometry: &MapGeometry) -> Option<f64> {
    let expected = row.expected.as_ref()?;
    let xi = row.events.max(1) as f64;
    let median = row.median.as_deref().expect("renormalized maps");
    let ones = vec![1.0; expected.len()];
    let divisor = denormalize(&ones, median, geometry);
    let sum: f64 = expected
        .iter()
        .enumerate()
        .map(|(c, &e)| {
            let p = (e / xi).clamp(0.0, 1.0);
            let scale = divisor[c] * f64::from(scaling.range(c));
            p * (1.0 - p) / xi / (scale * scale)
        })
        .sum();
    Some(sum / expected.len() as f64)
}

/// The renormalized occupancy of a map (checked present by the stages).
pub fn norm(row: &MapRow) -> &[f64] {
    row.norm.as_deref().expect("renormalized maps")
}

/// γ/ξ of a map.
pub fn occupancy_per_event(row: &MapRow) -> Vec<f64> {
    let xi = row.events.max(1) as f64;
    row.occupancy.iter().map(|g| g / xi).collect()
}

/// What the model makes of one fill: per LS, |γ/ξ − reconstruction| per
/// channel and the MSE in the model's scale.
pub struct FillErrors {
    pub abs: Vec<Vec<f64>>,
    /// The reconstruction in γ/ξ.
    pub predicted: Vec<Vec<f64>>,
    pub mse: Vec<f64>,
}

/// Reconstructs the maps of one fill in windows of `window` LS, carrying
/// the LSTM states from window to window when `carry_state` (zero states
/// otherwise), and maps the reconstruction back to γ/ξ.
pub fn fill_errors(
    model: &GraphStad,
    scaling: &Scaling,
    rows: &[MapRow],
    window: usize,
    carry_state: bool,
    device: Device,
) -> Result<FillErrors> {
    let geometry: &MapGeometry = &model.geometry;
    let m = geometry.n_channels();
    let mut abs = Vec::with_capacity(rows.len());
    let mut predicted_all = Vec::with_capacity(rows.len());
    let mut mse = Vec::with_capacity(rows.len());
    let mut states = model.zero_states(1);
    for chunk in rows.chunks(window) {
        let x: Vec<f32> = chunk.iter().flat_map(|r| scaling.scale(norm(r))).collect();
        let x = Tensor::from_slice(&x)
            .view([1, chunk.len() as i64, m as i64])
            .to_device(device);
        let out = tch::no_grad(|| model.forward(&x, &states, false, &[] as &[Block]));
        states = if carry_state {
            out.states
        } else {
            model.zero_states(1)
        };
        let recon: Vec<f32> = Vec::<f32>::try_from(
            out.recon
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .reshape([-1]),
        )
        .map_err(|e| StageError::data(format!("reading the reconstruction: {e}")))?;
        for (k, row) in chunk.iter().enumerate() {
            let r = &recon[k * m..(k + 1) * m];
            let xs = scaling.scale(norm(row));
            mse.push(
                xs.iter()
                    .zip(r)
                    .map(|(a, b)| f64::from(a - b).powi(2))
                    .sum::<f64>()
                    / m as f64,
            );
            let median = row.median.as_deref().expect("renormalized maps");
            let predicted = denormalize(&scaling.unscale(r), median, geometry);
            let actual = occupancy_per_event(row);
            abs.push(
                actual
                    .iter()
                    .zip(&predicted)
                    .map(|(a, p)| (a - p).abs())
                    .collect(),
            );
            predicted_all.push(predicted);
        }
    }
    Ok(FillErrors {
        abs,
        predicted: predicted_all,
        mse,
    })
}

/// reference × row median per channel of every map of a fill, in γ/ξ: the
/// reference-map rule's prediction, renormalized the same way as the
/// model's input.
pub fn reference_predicted(
    reference: &[f32],
    rows: &[MapRow],
    geometry: &MapGeometry,
) -> Vec<Vec<f64>> {
    let reference: Vec<f64> = reference.iter().map(|&v| f64::from(v)).collect();
    rows.iter()
        .map(|row| {
            let median = row.median.as_deref().expect("renormalized maps");
            denormalize(&reference, median, geometry)
        })
        .collect()
}

/// |γ/ξ − prediction| per channel of every map.
fn abs_errors(rows: &[MapRow], predicted: &[Vec<f64>]) -> Vec<Vec<f64>> {
    rows.iter()
        .zip(predicted)
        .map(|(row, p)| {
            occupancy_per_event(row)
                .iter()
                .zip(p)
                .map(|(a, p)| (a - p).abs())
                .collect()
        })
        .collect()
}

/// e_i,MAE (Eq. 5) of every LS: the mean of its own and the previous
/// `window − 1` absolute errors within the fill (fewer at the fill's start).
pub fn windowed_mae(abs: &[Vec<f64>], window: usize) -> Vec<Vec<f64>> {
    window_sum(abs, window)
        .into_iter()
        .enumerate()
        .map(|(s, sum)| {
            let n = (s + 1).min(window) as f64;
            sum.into_iter().map(|v| v / n).collect()
        })
        .collect()
}

/// What one fill gives the scores: the model's errors (with its
/// reconstruction), e_i,MAE of the model and of the reference-map rule, and
/// the other score forms and baselines.
pub struct FillScores {
    pub errors: FillErrors,
    pub model_mae: Vec<Vec<f64>>,
    pub reference_mae: Vec<Vec<f64>>,
    /// In [`EXTRA_METHODS`] order; `None` where the card (luminosity line)
    /// or the maps (the generator's truth) cannot give the method.
    pub extra: Vec<Option<PerLs>>,
    /// Σ_w of the generator's expected counts, when the maps carry them.
    pub expected_window: Option<PerLs>,
}

/// The rules the model is compared with, as the card stores them.
pub struct Rules<'a> {
    /// Training mean of the renormalized occupancy per channel.
    pub reference: &'a [f32],
    /// Per-channel straight line in luminosity (may be unfitted).
    pub lumi: &'a LumiLine,
}

/// Reconstructs one fill and scores it every way: the one path of training
/// (σ_i, α) and scoring.
pub fn fill_scores(
    model: &GraphStad,
    scaling: &Scaling,
    rules: &Rules<'_>,
    rows: &[MapRow],
    (window, carry_state): (usize, bool),
    device: Device,
) -> Result<FillScores> {
    let geometry = &model.geometry;
    let errors = fill_errors(model, scaling, rows, window, carry_state, device)?;
    let model_mae = windowed_mae(&errors.abs, window);
    let reference_per_event = reference_predicted(rules.reference, rows, geometry);
    let reference_mae = windowed_mae(&abs_errors(rows, &reference_per_event), window);

    let events: Vec<i64> = rows.iter().map(|r| r.events).collect();
    let x: Vec<&[f64]> = rows.iter().map(|r| r.occupancy.as_slice()).collect();
    let g = geometry.geometry();
    let (rbx, n_rbx) = (g.rbx_map(), g.n_rbx());
    let model_mu = counts(&errors.predicted, &events);
    let reference_mu = counts(&reference_per_event, &events);
    let lumi_mu = rules.lumi.is_fitted().then(|| {
        let predicted: Vec<Vec<f64>> = rows.iter().map(|r| rules.lumi.predict(r.lumi)).collect();
        counts(&predicted, &events)
    });
    let expected: Option<PerLs> = rows.iter().map(|r| r.expected.clone()).collect();
    let pull = |mu: &PerLs| signed_window_score(&x, mu, window);
    let extra = vec![
        Some(pull(&model_mu)),
        Some(rbx_window_score(&x, &model_mu, window, &rbx, n_rbx)),
        Some(pull(&reference_mu)),
        Some(rbx_window_score(&x, &reference_mu, window, &rbx, n_rbx)),
        Some(pull(&rbx_median_corrected(&x, &reference_mu, &rbx, n_rbx))),
        lumi_mu.as_ref().map(pull),
        expected.as_ref().map(pull),
    ];
    debug_assert_eq!(extra.len(), EXTRA_METHODS.len());
    let expected_window = expected.as_ref().map(|e| window_sum(e, window));
    Ok(FillScores {
        errors,
        model_mae,
        reference_mae,
        extra,
        expected_window,
    })
}

/// a_i = e_i / σ_i for every LS (Eq. 6).
pub fn standardized(mae: Vec<Vec<f64>>, sigma: &[f32]) -> Vec<Vec<f64>> {
    mae.into_iter()
        .map(|e| {
            e.iter()
                .zip(sigma)
                .map(|(v, &s)| v / f64::from(s))
                .collect()
        })
        .collect()
}

/// σ_i of per-channel values over many LS (population standard deviation),
/// floored so a channel that never varies cannot divide by zero.
pub fn channel_sigma(values: &[Vec<f64>]) -> Vec<f32> {
    let m = values[0].len();
    let n = values.len() as f64;
    (0..m)
        .map(|c| {
            let mean = values.iter().map(|v| v[c]).sum::<f64>() / n;
            let var = values.iter().map(|v| (v[c] - mean).powi(2)).sum::<f64>() / n;
            var.sqrt().max(1e-6) as f32
        })
        .collect()
}

/// Consecutive maps of the same fill, as slices of `rows`.
pub fn fills(rows: &[MapRow]) -> Vec<&[MapRow]> {
    rows.chunk_by(|a, b| a.fill == b.fill && a.case == b.case)
        .collect()
}

/// The reference-map rule: the mean renormalized occupancy of each of the
/// `channels` over the training maps.
pub fn reference_map<'a>(
    rows: impl ExactSizeIterator<Item = &'a MapRow>,
    channels: usize,
) -> Vec<f32> {
    let n = rows.len() as f64;
    let mut reference = vec![0.0f64; channels];
    for r in rows {
        for (acc, v) in reference.iter_mut().zip(norm(r)) {
            *acc += v / n;
        }
    }
    reference.iter().map(|&v| v as f32).collect()
}

/// What the trained model is calibrated with on the training and
/// validation maps.
pub struct Calibration {
    /// The reference-map rule: mean renormalized occupancy per channel.
    pub reference: Vec<f32>,
    /// σ_i of Eq. 6, for the model and for the rule.
    pub sigma: Vec<f32>,
    pub sigma_reference: Vec<f32>,
    /// The `alpha_quantile` of the validation a_i, for the model and the rule.
    pub alpha: f64,
    pub reference_alpha: f64,
    /// The luminosity-regression rule, fitted on the training maps.
    pub lumi: LumiLine,
    /// α of the other scores by method name (those the maps can give).
    pub alphas: std::collections::BTreeMap<String, f64>,
}

/// σ_i of Eq. 6 on the training maps (`window` LS, LSTM states carried
/// or not), for the model and the reference-map rule, and α: a quantile of a_i = e_i / σ_i over the
/// validation maps.
pub fn calibrate(
    model: &GraphStad,
    scaling: &Scaling,
    (train_rows, val_fills): (&[MapRow], &[&[MapRow]]),
    (window, carry_state): (usize, bool),
    alpha_quantile: f64,
    device: Device,
) -> Result<Calibration> {
    let reference = reference_map(train_rows.iter(), model.geometry.n_channels());
    let lumi = LumiLine::fit(
        &train_rows
            .iter()
            .map(|r| (r.lumi, occupancy_per_event(r)))
            .collect::<Vec<_>>(),
    );
    let rules = Rules {
        reference: &reference,
        lumi: &lumi,
    };
    let score = |fills: &[&[MapRow]]| -> Result<Vec<FillScores>> {
        fills
            .iter()
            .map(|fill| fill_scores(model, scaling, &rules, fill, (window, carry_state), device))
            .collect()
    };
    let concat = |scores: &mut Vec<FillScores>, pick: fn(&mut FillScores) -> PerLs| -> PerLs {
        scores.iter_mut().flat_map(pick).collect()
    };
    let mut train = score(&fills(train_rows))?;
    let sigma = channel_sigma(&concat(&mut train, |f| std::mem::take(&mut f.model_mae)));
    let sigma_reference = channel_sigma(&concat(&mut train, |f| {
        std::mem::take(&mut f.reference_mae)
    }));
    drop(train);
    let mut val = score(val_fills)?;
    let flat = |a: Vec<Vec<f64>>| a.into_iter().flatten().collect::<Vec<f64>>();
    let alpha_of = |mut v: Vec<f64>| {
        v.sort_unstable_by(f64::total_cmp);
        quantile(&v, alpha_quantile).unwrap_or(f64::INFINITY)
    };
    let a_model = flat(standardized(
        concat(&mut val, |f| std::mem::take(&mut f.model_mae)),
        &sigma,
    ));
    let a_reference = flat(standardized(
        concat(&mut val, |f| std::mem::take(&mut f.reference_mae)),
        &sigma_reference,
    ));
    let mut alphas = std::collections::BTreeMap::new();
    for (k, method) in EXTRA_METHODS.iter().enumerate() {
        let values: Option<Vec<PerLs>> = val.iter_mut().map(|f| f.extra[k].take()).collect();
        if let Some(values) = values {
            alphas.insert(
                method.name.to_string(),
                alpha_of(values.into_iter().flatten().flatten().collect()),
            );
        }
    }
    Ok(Calibration {
        reference,
        sigma,
        sigma_reference,
        alpha: alpha_of(a_model),
        reference_alpha: alpha_of(a_reference),
        lumi,
        alphas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windowed_mae_by_hand() {
        let abs = vec![
            vec![1.0, 0.0],
            vec![3.0, 0.0],
            vec![5.0, 6.0],
            vec![7.0, 0.0],
        ];
        let e = windowed_mae(&abs, 2);
        assert_eq!(
            e,
            vec![
                vec![1.0, 0.0],
                vec![2.0, 0.0],
                vec![4.0, 3.0],
                vec![6.0, 3.0]
            ]
        );
    }

    #[test]
    fn sigma_is_the_population_deviation_floored() {
        let s = channel_sigma(&[vec![1.0, 2.0], vec![3.0, 2.0]]);
        assert_eq!(s, vec![1.0, 1e-6]);
    }
}
