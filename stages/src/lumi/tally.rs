//! What `certify` counts of a set of certified LS (one run, or all runs of
//! a method): LS and luminosity tallies, their table columns.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array};
use arrow::datatypes::DataType;
use dqm_schemas::{column, nullable};

use crate::lumi::tables::LsKey;
use crate::stats::wilson;

/// One certified LS of one method.
#[derive(Debug, Clone)]
pub struct Decision {
    pub key: LsKey,
    pub rejected: bool,
}

/// Counts and luminosities of a set of LS (one run, or all).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub ls: u64,
    pub bad: u64,
    pub flagged: u64,
    pub true_positive: u64,
    pub lumi: f64,
    pub lumi_good: f64,
    /// Luminosity of the bad LS (summed as such, not lumi − lumi_good, so
    /// that a certificate keeping every bad LS lets exactly 1 through).
    pub lumi_bad: f64,
    pub lumi_kept: f64,
    pub lumi_bad_kept: f64,
    /// Kept by run-level certification (every LS of a run without bad LS).
    pub lumi_run_level: f64,
    /// Good luminosity of runs with a bad LS (what run-level rejection throws away).
    pub lumi_thrown: f64,
    /// Of that, what the certificate keeps.
    pub lumi_recovered: f64,
}

impl Tally {
    /// The tally of one run's decisions.
    pub fn of_run(run: &[&Decision]) -> Tally {
        let mut t = Tally::default();
        let run_has_bad = run.iter().any(|d| d.key.bad);
        for d in run {
            let (bad, lumi) = (d.key.bad, d.key.lumi);
            t.ls += 1;
            t.bad += u64::from(bad);
            t.flagged += u64::from(d.rejected);
            t.true_positive += u64::from(bad && d.rejected);
            t.lumi += lumi;
            if bad {
                t.lumi_bad += lumi;
            } else {
                t.lumi_good += lumi;
            }
            if !d.rejected {
                t.lumi_kept += lumi;
                if bad {
                    t.lumi_bad_kept += lumi;
                }
            }
            if !run_has_bad {
                t.lumi_run_level += lumi;
            } else if !bad {
                t.lumi_thrown += lumi;
                if !d.rejected {
                    t.lumi_recovered += lumi;
                }
            }
        }
        t
    }

    pub fn add(&mut self, o: &Tally) {
        self.ls += o.ls;
        self.bad += o.bad;
        self.flagged += o.flagged;
        self.true_positive += o.true_positive;
        self.lumi += o.lumi;
        self.lumi_good += o.lumi_good;
        self.lumi_bad += o.lumi_bad;
        self.lumi_kept += o.lumi_kept;
        self.lumi_bad_kept += o.lumi_bad_kept;
        self.lumi_run_level += o.lumi_run_level;
        self.lumi_thrown += o.lumi_thrown;
        self.lumi_recovered += o.lumi_recovered;
    }

    pub fn precision(&self) -> Option<f64> {
        (self.flagged > 0).then(|| self.true_positive as f64 / self.flagged as f64)
    }

    pub fn recall(&self) -> Option<f64> {
        (self.bad > 0).then(|| self.true_positive as f64 / self.bad as f64)
    }

    pub fn recovered_fraction(&self) -> Option<f64> {
        (self.lumi_thrown > 0.0).then(|| self.lumi_recovered / self.lumi_thrown)
    }

    /// Bad luminosity let through as a fraction of all bad luminosity.
    pub fn bad_let_through(&self) -> Option<f64> {
        (self.lumi_bad > 0.0).then(|| self.lumi_bad_kept / self.lumi_bad)
    }
}

pub fn tally_fields(with_intervals: bool) -> Vec<arrow::datatypes::Field> {
    let mut fields = vec![
        column("ls", DataType::Int64, "LS certified"),
        column("bad_ls", DataType::Int64, "Truly bad LS"),
        column("flagged", DataType::Int64, "LS rejected"),
        column("true_positive", DataType::Int64, "Bad LS rejected"),
        column("false_positive", DataType::Int64, "Good LS rejected"),
        column("false_negative", DataType::Int64, "Bad LS kept"),
        nullable(
            "precision",
            DataType::Float64,
            "true_positive / flagged (null: nothing flagged)",
        ),
        nullable(
            "recall",
            DataType::Float64,
            "true_positive / bad_ls (null: no bad LS)",
        ),
    ];
    if with_intervals {
        fields.extend([
            nullable(
                "precision_lo",
                DataType::Float64,
                "Wilson 95 % interval of precision, low",
            ),
            nullable("precision_hi", DataType::Float64, "… high"),
            nullable(
                "recall_lo",
                DataType::Float64,
                "Wilson 95 % interval of recall, low",
            ),
            nullable("recall_hi", DataType::Float64, "… high"),
        ]);
    }
    fields.extend([
        column(
            "lumi",
            DataType::Float64,
            "Luminosity of the LS (in `lumi_unit` of the totals)",
        ),
        column("lumi_good", DataType::Float64, "Luminosity of the good LS"),
        column(
            "lumi_kept",
            DataType::Float64,
            "Luminosity the certificate keeps",
        ),
        column(
            "lumi_bad_kept",
            DataType::Float64,
            "Luminosity of bad LS the certificate lets through",
        ),
        column(
            "lumi_run_level",
            DataType::Float64,
            "Luminosity run-level certification keeps (runs without a bad LS)",
        ),
        column(
            "lumi_thrown",
            DataType::Float64,
            "Good luminosity run-level rejection throws away (good LS of runs with a bad LS)",
        ),
        column(
            "lumi_recovered",
            DataType::Float64,
            "Of lumi_thrown, what the certificate keeps",
        ),
        nullable(
            "recovered_fraction",
            DataType::Float64,
            "lumi_recovered / lumi_thrown (the poster's figure of merit)",
        ),
        nullable(
            "bad_let_through",
            DataType::Float64,
            "lumi_bad_kept / (lumi − lumi_good): the fraction of the bad luminosity the certificate lets through (null: no bad LS)",
        ),
    ]);
    fields
}

pub fn opt_f64(v: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from_iter(v))
}

pub fn tally_columns(tallies: &[&Tally], with_intervals: bool) -> Vec<ArrayRef> {
    let int = |f: &dyn Fn(&Tally) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            tallies.iter().map(|t| f(t) as i64),
        ))
    };
    let float = |f: &dyn Fn(&Tally) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(tallies.iter().map(|t| f(t))))
    };
    let mut columns = vec![
        int(&|t| t.ls),
        int(&|t| t.bad),
        int(&|t| t.flagged),
        int(&|t| t.true_positive),
        int(&|t| t.flagged - t.true_positive),
        int(&|t| t.bad - t.true_positive),
        opt_f64(tallies.iter().map(|t| t.precision())),
        opt_f64(tallies.iter().map(|t| t.recall())),
    ];
    if with_intervals {
        let p = |t: &Tally| wilson(t.true_positive, t.flagged);
        let r = |t: &Tally| wilson(t.true_positive, t.bad);
        columns.extend([
            opt_f64(tallies.iter().map(|t| p(t).map(|i| i.0))),
            opt_f64(tallies.iter().map(|t| p(t).map(|i| i.1))),
            opt_f64(tallies.iter().map(|t| r(t).map(|i| i.0))),
            opt_f64(tallies.iter().map(|t| r(t).map(|i| i.1))),
        ]);
    }
    columns.extend([
        float(&|t| t.lumi),
        float(&|t| t.lumi_good),
        float(&|t| t.lumi_kept),
        float(&|t| t.lumi_bad_kept),
        float(&|t| t.lumi_run_level),
        float(&|t| t.lumi_thrown),
        float(&|t| t.lumi_recovered),
        opt_f64(tallies.iter().map(|t| t.recovered_fraction())),
        opt_f64(tallies.iter().map(|t| t.bad_let_through())),
    ]);
    columns
}
