//! From renormalized maps to per-channel reconstruction errors, shared by
//! training (σ_i of Eq. 6) and scoring: the model's input scaling, a fill
//! reconstructed window by window with the LSTM states carried, the inverse
//! renormalization to γ/ξ, and the windowed MAE of Eq. 5.

use tch::{Device, Kind, Tensor};

use crate::error::{Result, StageError};
use crate::hcal::geometry::MapGeometry;
use crate::hcal::model::{Block, GraphStad};
use crate::hcal::renormalization::denormalize;
use crate::hcal::tables::MapRow;
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

    fn range(&self, c: usize) -> f32 {
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

/// |γ/ξ − reference × row median| per channel of every map of a fill: the
/// reference-map rule, renormalized the same way as the model's input.
pub fn reference_errors(
    reference: &[f32],
    rows: &[MapRow],
    geometry: &MapGeometry,
) -> Vec<Vec<f64>> {
    let reference: Vec<f64> = reference.iter().map(|&v| f64::from(v)).collect();
    rows.iter()
        .map(|row| {
            let median = row.median.as_deref().expect("renormalized maps");
            let predicted = denormalize(&reference, median, geometry);
            occupancy_per_event(row)
                .iter()
                .zip(&predicted)
                .map(|(a, p)| (a - p).abs())
                .collect()
        })
        .collect()
}

/// e_i,MAE (Eq. 5) of every LS: the mean of its own and the previous
/// `window − 1` absolute errors within the fill (fewer at the fill's start).
pub fn windowed_mae(abs: &[Vec<f64>], window: usize) -> Vec<Vec<f64>> {
    let m = abs.first().map_or(0, Vec::len);
    let mut sum = vec![0.0; m];
    let mut out = Vec::with_capacity(abs.len());
    for (s, e) in abs.iter().enumerate() {
        for (acc, v) in sum.iter_mut().zip(e) {
            *acc += v;
        }
        if s >= window {
            for (acc, v) in sum.iter_mut().zip(&abs[s - window]) {
                *acc -= v;
            }
        }
        let n = (s + 1).min(window) as f64;
        out.push(sum.iter().map(|v| v / n).collect());
    }
    out
}

/// What one fill gives the scores: the model's errors (with its
/// reconstruction) and e_i,MAE of the model and of the reference-map rule.
pub struct FillScores {
    pub errors: FillErrors,
    pub model_mae: Vec<Vec<f64>>,
    pub reference_mae: Vec<Vec<f64>>,
}

/// Reconstructs one fill and takes the windowed MAE of the model and of the
/// reference-map rule: the one path of training (σ_i, α) and scoring.
pub fn fill_scores(
    model: &GraphStad,
    scaling: &Scaling,
    reference: &[f32],
    rows: &[MapRow],
    (window, carry_state): (usize, bool),
    device: Device,
) -> Result<FillScores> {
    let errors = fill_errors(model, scaling, rows, window, carry_state, device)?;
    let model_mae = windowed_mae(&errors.abs, window);
    let reference_mae = windowed_mae(&reference_errors(reference, rows, &model.geometry), window);
    Ok(FillScores {
        errors,
        model_mae,
        reference_mae,
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

/// Per-channel values of every LS.
type PerLs = Vec<Vec<f64>>;

/// Consecutive maps of the same fill, as slices of `rows`.
pub fn fills(rows: &[MapRow]) -> Vec<&[MapRow]> {
    rows.chunk_by(|a, b| a.fill == b.fill && a.case == b.case)
        .collect()
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
    let m = model.geometry.n_channels();
    let mut reference = vec![0.0f64; m];
    for r in train_rows {
        for (acc, v) in reference.iter_mut().zip(norm(r)) {
            *acc += v / train_rows.len() as f64;
        }
    }
    let reference: Vec<f32> = reference.iter().map(|&v| v as f32).collect();
    let mae = |fills: &[&[MapRow]]| -> Result<(PerLs, PerLs)> {
        let (mut model_mae, mut reference_mae) = (Vec::new(), Vec::new());
        for fill in fills {
            let f = fill_scores(
                model,
                scaling,
                &reference,
                fill,
                (window, carry_state),
                device,
            )?;
            model_mae.extend(f.model_mae);
            reference_mae.extend(f.reference_mae);
        }
        Ok((model_mae, reference_mae))
    };
    let (model_mae, reference_mae) = mae(&fills(train_rows))?;
    let sigma = channel_sigma(&model_mae);
    let sigma_reference = channel_sigma(&reference_mae);
    let (val_model, val_reference) = mae(val_fills)?;
    let flat = |a: Vec<Vec<f64>>| a.into_iter().flatten().collect::<Vec<f64>>();
    let a_model = flat(standardized(val_model, &sigma));
    let a_reference = flat(standardized(val_reference, &sigma_reference));
    let alpha_of = |mut v: Vec<f64>| {
        v.sort_unstable_by(f64::total_cmp);
        quantile(&v, alpha_quantile).unwrap_or(f64::INFINITY)
    };
    Ok(Calibration {
        reference,
        sigma,
        sigma_reference,
        alpha: alpha_of(a_model),
        reference_alpha: alpha_of(a_reference),
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
