//! The online regime's detector faults: drawn in advance for every run of
//! a dataset (so every policy meets the same fault at the same run), the
//! runs they redraw, and the record of what became of each fault (the
//! per-kind tables of `rl_evaluate`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::env_config::{FaultKind, Faults};
use crate::dinamo::generator::RunGenerator;
use crate::dinamo::reference::NormRun;
use crate::dinamo::tables::DatasetRuns;
use crate::error::Result;

/// A fault drawn in advance for the run where it would start.
#[derive(Debug, Clone)]
pub struct FaultDraw {
    /// Uniform in [0, 1): a fault starts at this run if < p_start.
    pub u: f64,
    pub kind: FaultKind,
    pub mu_shift: f64,
    pub sigma_shift: f64,
    pub dead: Vec<usize>,
    /// It lasts this one run (DINAMO's bad runs), else until an alarm.
    pub transient: bool,
}

impl FaultDraw {
    /// The fault's size in its kind's unit: |mean shift|, |width shift|,
    /// number of dead bins.
    pub fn size(&self) -> f64 {
        match self.kind {
            FaultKind::MeanShift => self.mu_shift.abs(),
            FaultKind::WidthShift => self.sigma_shift.abs(),
            FaultKind::DeadBins => self.dead.len() as f64,
        }
    }
}

/// What became of one fault in an episode.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRecord {
    pub kind: FaultKind,
    /// See [`FaultDraw::size`].
    pub size: f64,
    pub transient: bool,
    /// Run number where it started.
    pub run: i64,
    /// Runs from its start to the true alarm (0: alarmed on its first
    /// run); `None`: never alarmed.
    pub delay: Option<u64>,
    /// Faulty runs taken without an alarm.
    pub missed: u64,
}

/// Every run's fault draw, the generator that redraws a faulty run, and a
/// seed per run for the redraw.
pub struct FaultPlan {
    pub draws: Vec<FaultDraw>,
    pub generator: RunGenerator,
    pub seeds: Vec<u64>,
}

impl FaultPlan {
    /// Draws the faults of `data` from `seed`. The transient flags come
    /// from their own stream, so a setting without transient faults meets
    /// the same faults as before the flag existed.
    pub fn draw(f: &Faults, data: &DatasetRuns, seed: u64) -> Result<Self> {
        let truth = data.truth().ok_or_else(|| {
            data.error(
                "the online regime redraws runs under faults and needs the generator's \
                 columns `mu`, `sigma`, `lo`, `hi` (synth_runs writes them)"
                    .into(),
            )
        })?;
        let stream_seed = seed ^ (data.dataset as u64).rotate_left(32);
        let mut rng = ChaCha8Rng::seed_from_u64(stream_seed);
        let mut transient_rng = ChaCha8Rng::seed_from_u64(stream_seed ^ 0x7472_616e_7369_656e);
        let n_bins = data.n_bins();
        let uniform = |rng: &mut ChaCha8Rng, r: [f64; 2]| {
            if r[0] < r[1] {
                rng.random_range(r[0]..r[1])
            } else {
                r[0]
            }
        };
        let mut draws = Vec::with_capacity(data.len());
        let mut seeds = Vec::with_capacity(data.len());
        for _ in 0..data.len() {
            let u = rng.random::<f64>();
            let kind = f.kinds[rng.random_range(0..f.kinds.len())];
            let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            let mu_shift = sign * uniform(&mut rng, f.mean_shift);
            let sigma_shift = sign * uniform(&mut rng, f.width_shift);
            let n_dead = rng
                .random_range(f.dead_bins[0]..=f.dead_bins[1])
                .min(n_bins);
            let dead = rand::seq::index::sample(&mut rng, n_bins, n_dead).into_vec();
            draws.push(FaultDraw {
                u,
                kind,
                mu_shift,
                sigma_shift,
                dead,
                transient: transient_rng.random::<f64>() < f.transient,
            });
            seeds.push(rng.random::<u64>());
        }
        let generator = RunGenerator {
            n_bins,
            range: [truth.lo, truth.hi],
            p_binomial: f.p_binomial,
            ..Default::default()
        };
        Ok(Self {
            draws,
            generator,
            seeds,
        })
    }

    /// Run `k` of `data` as the detector records it under fault `fault`.
    /// The event count is drawn as the generator draws it: the recorded
    /// run's integral already carries its binomial systematic, and
    /// redrawing from it would apply that systematic twice, so the
    /// integral alone would tell a faulty run.
    pub fn redraw(
        &self,
        f: &Faults,
        data: &DatasetRuns,
        k: usize,
        fault: usize,
        epsilon: f64,
    ) -> NormRun {
        let draw = &self.draws[fault];
        let truth = data.truth().expect("checked in FaultPlan::draw");
        let mut rng = ChaCha8Rng::seed_from_u64(self.seeds[k]);
        let [lo, hi] = f.events;
        let n_events = if lo < hi {
            rng.random_range(lo..hi)
        } else {
            lo
        };
        let (mut mu, mut sigma) = (truth.mu[k], truth.sigma[k]);
        let mut dead: &[usize] = &[];
        match draw.kind {
            FaultKind::MeanShift => mu += draw.mu_shift,
            FaultKind::WidthShift => {
                sigma = if sigma + draw.sigma_shift > 0.05 {
                    sigma + draw.sigma_shift
                } else {
                    sigma - draw.sigma_shift
                }
            }
            FaultKind::DeadBins => dead = &draw.dead,
        }
        let counts = self
            .generator
            .sample_counts(&mut rng, n_events, mu, sigma, dead);
        NormRun::new(&counts, epsilon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::env::{Env, Tally};
    use crate::rl::env_config::{ACCEPT, ALARM, ASK, CONTINUE, EnvConfig, Regime};
    use crate::rl::test_support::{config, dataset};
    use std::sync::Arc;

    fn play(cfg: &EnvConfig, data: &Arc<DatasetRuns>, script: &[usize]) -> Tally {
        let mut env = Env::new(cfg, data.clone(), 7).unwrap();
        for (i, &a) in script.iter().enumerate() {
            env.step(a).unwrap_or_else(|e| panic!("step {i}: {e}"));
        }
        env.tally
    }

    /// A fault at every run (p_start 1): transient ones spoil one run each,
    /// alarmed or not, and need no repair; persistent ones last until the
    /// alarm and then under repair.
    #[test]
    fn transient_and_persistent_faults_by_hand() {
        let data = Arc::new(dataset(20, 5));
        let mut cfg = config(Regime::Online);
        cfg.faults.p_start = 1.0;
        cfg.faults.fix_delay = 1;
        cfg.faults.kinds = vec![FaultKind::DeadBins];
        cfg.faults.dead_bins = [7, 7];
        cfg.faults.transient = 1.0;
        let script = [CONTINUE, ALARM, CONTINUE, ALARM];
        // The run presented after the last step starts a fifth fault.
        let t = play(&cfg, &data, &script);
        assert_eq!((t.faults, t.true_alarms, t.missed_bad), (5, 2, 2));
        assert_eq!((t.redundant_calls, t.detection_delay), (0, 0));
        let got: Vec<(Option<u64>, u64, bool, f64)> = t
            .fault_log
            .iter()
            .map(|r| (r.delay, r.missed, r.transient, r.size))
            .collect();
        let one = |delay, missed| (delay, missed, true, 7.0);
        assert_eq!(
            got,
            [
                one(None, 1),
                one(Some(0), 0),
                one(None, 1),
                one(Some(0), 0),
                one(None, 0)
            ]
        );
        assert_eq!(t.fault_log[0].run, data.runs[5]);

        // Persistent: the first fault is missed once, alarmed a run after
        // its start, repaired over the next run; the next starts after.
        cfg.faults.transient = 0.0;
        let t = play(&cfg, &data, &script);
        assert_eq!((t.faults, t.true_alarms, t.missed_bad), (2, 2, 1));
        assert_eq!(t.fault_log[0].delay, Some(1));
        assert_eq!(t.fault_log[0].missed, 1);
        assert_eq!(t.fault_log[1].run, data.runs[8]);
        assert_eq!(
            (t.fault_log[1].delay, t.fault_log[1].transient),
            (Some(0), false)
        );
    }

    /// The transient flags have their own stream: turning them on changes
    /// no other draw, so settings differ only where they should.
    #[test]
    fn transient_flags_leave_the_other_draws_alone() {
        let data = dataset(300, 6);
        let mut f = config(Regime::Online).faults;
        let without = FaultPlan::draw(&f, &data, 3).unwrap();
        f.transient = 0.5;
        let with = FaultPlan::draw(&f, &data, 3).unwrap();
        assert_eq!(without.seeds, with.seeds);
        for (a, b) in without.draws.iter().zip(&with.draws) {
            assert_eq!(
                (a.u, a.kind, a.mu_shift, &a.dead),
                (b.u, b.kind, b.mu_shift, &b.dead)
            );
            assert!(!a.transient);
        }
        let n = with.draws.iter().filter(|d| d.transient).count();
        assert!((100..200).contains(&n), "{n} of 300 transient at p = 0.5");
        f.transient = 1.5;
        let e = f.validate(Regime::Online).unwrap_err().to_string();
        assert!(e.contains("transient"), "{e}");
    }

    /// Calls on good runs within 20 runs of a rapid change, by hand: 25
    /// runs after a 5-run warm-up, changes at runs 3 (warm-up: not met),
    /// 7 (position 2) and 20 (position 15).
    #[test]
    fn calls_after_a_rapid_change_by_hand() {
        let mut data = dataset(30, 8);
        let mut flags = vec![false; 30];
        for k in [3, 7, 20] {
            flags[k] = true;
        }
        data.set_rapid_changes(flags.clone());
        let data = Arc::new(data);
        let cfg = config(Regime::Offline);
        // Asking about every run: positions 2..=24 are within 20 runs of
        // the last change.
        let t = play(&cfg, &data, &[ASK; 25]);
        assert_eq!((t.rapid_changes, t.false_alarms_after_change), (2, 23));
        let t = play(&cfg, &data, &[ACCEPT; 25]);
        assert_eq!((t.rapid_changes, t.false_alarms_after_change), (2, 0));
        // Adaptation: never over while every good run is asked about; 0
        // runs when the change's own run is accepted; 4 when positions 2-5
        // are asked about and 6 accepted.
        assert_eq!((t.adaptations, t.adaptation_runs), (2, 0));
        let t = play(&cfg, &data, &[ASK; 25]);
        assert_eq!(t.adaptations, 0);
        let mut script = [ACCEPT; 25];
        script[2..6].fill(ASK);
        let t = play(&cfg, &data, &script);
        assert_eq!((t.adaptations, t.adaptation_runs), (2, 4));

        // Online, a change at a bad run (left out of the stream) counts at
        // the next run taken; alarms only on the 2 runs after it.
        let mut data = dataset(30, 8);
        data.good[9] = false;
        flags = vec![false; 30];
        flags[9] = true;
        data.set_rapid_changes(flags);
        let data = Arc::new(data);
        let mut cfg = config(Regime::Online);
        cfg.faults.p_start = 0.0;
        // Stream: runs 5-8, 10-29; run 10 is position 4.
        let mut script = [CONTINUE; 24];
        script[4] = ALARM;
        script[5] = ALARM;
        script[0] = ALARM;
        let t = play(&cfg, &data, &script);
        assert_eq!(
            (t.rapid_changes, t.false_alarms, t.false_alarms_after_change),
            (1, 3, 2)
        );
        assert_eq!((t.adaptations, t.adaptation_runs), (1, 2));
    }
}
