//! What a DINAMO score table shows a shifter (the paper's Figures 4 and 6),
//! for one dataset: the score ln χ²/ndf of every run with the threshold,
//! the runs labelled bad and the end of the historical regime; and chosen
//! runs over their reference band (μ ± σ per bin) with the per-bin pulls.
//! `dinamo_s` and `dinamo_ml` draw their worst runs, `dqm_compare` one run
//! of each outcome (passed, false alarm, caught, missed).

use std::path::Path;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};

use crate::arrow_util::{cast_column, list_rows};
use crate::error::{Result, StageError};
use crate::plots::{ReferencePanel, reference_panels, score_vs_run};

/// Runs of the continual regime `dinamo_s`/`dinamo_ml` draw over their
/// reference.
pub const WORST_RUNS: usize = 4;

/// The per-run scalars of one dataset's score table, in run order.
pub struct Scores {
    pub dataset: i64,
    pub run: Vec<f64>,
    pub bad: Vec<bool>,
    pub score: Vec<f64>,
    pub flagged: Vec<bool>,
    pub historical: Vec<bool>,
    pub threshold: f64,
    /// Row of the batch for each position in run order.
    row: Vec<usize>,
}

/// Which runs of the continual regime to draw over their reference.
pub enum Picks {
    /// The `n` highest scores.
    Worst(usize),
    /// The first run of each outcome: passed, false alarm, caught, missed.
    Outcomes,
}

impl Scores {
    /// Reads the scalars of a score table holding one dataset.
    pub fn read(batch: &RecordBatch, dataset: i64, input: &str) -> Result<Self> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| StageError::data(format!("input `{input}` has no column `{name}`")))
        };
        let f64s = |name: &str| -> Result<Vec<f64>> {
            let c = cast_column(column(name)?, &DataType::Float64, input, name)?;
            Ok(c.as_primitive::<Float64Type>().values().to_vec())
        };
        let bools = |name: &str| -> Result<Vec<bool>> {
            let c = column(name)?.as_boolean();
            Ok((0..c.len()).map(|i| c.value(i)).collect())
        };
        let (run, label, score) = (f64s("run")?, f64s("label")?, f64s("score")?);
        let (flagged, historical) = (bools("flagged")?, bools("historical")?);
        let threshold = f64s("threshold")?.first().copied().unwrap_or(f64::NAN);
        let mut row: Vec<usize> = (0..run.len()).collect();
        row.sort_by(|&a, &b| run[a].total_cmp(&run[b]));
        let pick = |v: &[f64]| row.iter().map(|&i| v[i]).collect::<Vec<_>>();
        let pick_bool = |v: &[bool]| row.iter().map(|&i| v[i]).collect::<Vec<_>>();
        Ok(Self {
            dataset,
            run: pick(&run),
            bad: pick(&label).iter().map(|&l| l != 0.0).collect(),
            score: pick(&score),
            flagged: pick_bool(&flagged),
            historical: pick_bool(&historical),
            threshold,
            row,
        })
    }

    /// Score per run, threshold and end of the historical regime.
    pub fn draw_score_vs_run(&self, path: &Path, method: &str) -> Result<()> {
        let n = self.run.len();
        let points: Vec<(f64, f64, bool)> = (0..n)
            .map(|k| (self.run[k], self.score[k], self.bad[k]))
            .collect();
        let boundary = (0..n)
            .position(|k| !self.historical[k])
            .filter(|&k| k > 0)
            .map(|k| (self.run[k - 1] + self.run[k]) / 2.0);
        let flags = self.flagged.iter().filter(|&&f| f).count();
        score_vs_run(
            path,
            &format!(
                "{method}, dataset {}: {flags} of {n} runs flagged (red: labelled bad)",
                self.dataset
            ),
            &points,
            self.threshold,
            boundary,
        )
    }

    /// Positions (in run order) and captions of the runs to draw; `None`
    /// where no run of that outcome is in the continual regime.
    fn picks(&self, picks: &Picks) -> Vec<(Option<usize>, String)> {
        let continual = (0..self.run.len()).filter(|&k| !self.historical[k]);
        match picks {
            Picks::Worst(n) => {
                let mut worst: Vec<usize> =
                    continual.filter(|&k| self.score[k].is_finite()).collect();
                worst.sort_by(|&a, &b| self.score[b].total_cmp(&self.score[a]));
                worst.truncate(*n);
                worst
                    .into_iter()
                    .map(|k| {
                        let what = match (self.flagged[k], self.bad[k]) {
                            (true, true) => ", flagged, labelled bad",
                            (true, false) => ", flagged",
                            (false, true) => ", labelled bad",
                            (false, false) => "",
                        };
                        (
                            Some(k),
                            format!("run {}: score {:.2}{what}", self.run[k], self.score[k]),
                        )
                    })
                    .collect()
            }
            Picks::Outcomes => [
                (false, false, "good run, correctly passed"),
                (false, true, "good run, wrongly flagged"),
                (true, true, "bad run, correctly flagged"),
                (true, false, "bad run, missed"),
            ]
            .into_iter()
            .map(|(bad, flagged, what)| {
                let k = continual
                    .clone()
                    .find(|&k| self.bad[k] == bad && self.flagged[k] == flagged);
                match k {
                    Some(k) => (
                        Some(k),
                        format!("{what}: run {} (score {:.2})", self.run[k], self.score[k]),
                    ),
                    None => (None, format!("{what}: none in the continual regime")),
                }
            })
            .collect(),
        }
    }

    /// The chosen runs over their reference ± σ with their pulls, from the
    /// per-run vectors of `batch` (`counts`, `ref_mu`, `ref_sigma`, `pull`).
    /// Draws nothing when the table has no per-run vectors or no run fits.
    pub fn draw_references(
        &self,
        batch: &RecordBatch,
        input: &str,
        picks: &Picks,
        path: &Path,
        title: &str,
    ) -> Result<bool> {
        let names = ["counts", "ref_mu", "ref_sigma", "pull"];
        if names.iter().any(|n| batch.column_by_name(n).is_none()) {
            return Ok(false);
        }
        let picked = self.picks(picks);
        if picked.iter().all(|p| p.0.is_none()) {
            return Ok(false);
        }
        let lists =
            |name: &str| list_rows(batch.column_by_name(name).expect("checked"), input, name);
        let (counts, mu, sigma, pulls) = (
            lists("counts")?,
            lists("ref_mu")?,
            lists("ref_sigma")?,
            lists("pull")?,
        );
        let panels: Vec<ReferencePanel> = picked
            .into_iter()
            .map(|(k, title)| match k.map(|k| self.row[k]) {
                Some(i) => {
                    let total: f64 = counts[i].iter().sum();
                    ReferencePanel {
                        title,
                        x: counts[i]
                            .iter()
                            .map(|c| c / total.max(f64::MIN_POSITIVE))
                            .collect(),
                        mu: mu[i].clone(),
                        sigma: sigma[i].clone(),
                        pulls: pulls[i].clone(),
                    }
                }
                None => ReferencePanel {
                    title,
                    x: vec![],
                    mu: vec![],
                    sigma: vec![],
                    pulls: vec![],
                },
            })
            .collect();
        reference_panels(path, title, &panels)?;
        Ok(true)
    }
}

/// What `dinamo_s` and `dinamo_ml` draw for a dataset:
/// `score_vs_run_<dataset>.png` and `worst_runs_<dataset>.png` in `dir`.
pub fn draw_shifter_plots(
    batch: &RecordBatch,
    dataset: i64,
    method: &str,
    dir: &Path,
) -> Result<()> {
    if batch.num_rows() == 0 {
        return Ok(());
    }
    let scores = Scores::read(batch, dataset, method)?;
    scores.draw_score_vs_run(&dir.join(format!("score_vs_run_{dataset}.png")), method)?;
    scores.draw_references(
        batch,
        method,
        &Picks::Worst(WORST_RUNS),
        &dir.join(format!("worst_runs_{dataset}.png")),
        &format!(
            "{method}, dataset {dataset}: the highest-scoring runs of the continual regime over their reference"
        ),
    )?;
    Ok(())
}
