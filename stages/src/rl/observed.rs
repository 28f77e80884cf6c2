//! What a policy observed on its runs, and how well each observation
//! feature alone tells bad (faulty) runs from good ones: `rl_evaluate`'s
//! `features` table.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};

use super::env::observation_names;
use super::env_config::Regime;
use super::tables::features_schema;
use crate::error::Result;
use crate::stats::{auc_interval, roc_auc};

/// The observations a policy met and whether each run was bad.
#[derive(Default)]
pub struct Observed {
    features: Vec<Vec<f64>>,
    bad: Vec<bool>,
}

impl Observed {
    pub fn push(&mut self, obs: &[f32], bad: bool) {
        if self.features.is_empty() {
            self.features = vec![Vec::new(); obs.len()];
        }
        for (f, &v) in self.features.iter_mut().zip(obs) {
            f.push(f64::from(v));
        }
        self.bad.push(bad);
    }
}

/// Each feature's AUC for bad runs, per observed policy.
pub fn features_batch(regime: Regime, observed: &[(&str, &Observed)]) -> Result<RecordBatch> {
    let names = observation_names(regime);
    let (mut policy, mut feature, mut name, mut auc, mut lo, mut hi, mut sep, mut nb, mut ng) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for &(policy_name, o) in observed {
        let n_bad = o.bad.iter().filter(|&&b| b).count();
        let n_good = o.bad.len() - n_bad;
        for (i, values) in o.features.iter().enumerate() {
            let a = roc_auc(values, &o.bad);
            let interval = a.map(|a| auc_interval(a, n_bad, n_good));
            policy.push(policy_name);
            feature.push(i as i64);
            name.push(
                names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("feature_{i}")),
            );
            auc.push(a);
            lo.push(interval.map(|i| i.0));
            hi.push(interval.map(|i| i.1));
            sep.push(a.map(|a| a.max(1.0 - a)));
            nb.push(n_bad as i64);
            ng.push(n_good as i64);
        }
    }
    let n = policy.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(policy)),
        Arc::new(StringArray::from(vec![regime.name(); n])),
        Arc::new(Int64Array::from(feature)),
        Arc::new(StringArray::from(name)),
        Arc::new(Float64Array::from(auc)),
        Arc::new(Float64Array::from(lo)),
        Arc::new(Float64Array::from(hi)),
        Arc::new(Float64Array::from(sep)),
        Arc::new(Int64Array::from(nb)),
        Arc::new(Int64Array::from(ng)),
    ];
    Ok(RecordBatch::try_new(features_schema(), columns)?)
}
