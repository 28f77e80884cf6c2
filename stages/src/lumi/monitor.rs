//! Monitored elements (MEs) of a lumisection and how a recorded event fills
//! them, pile-up included: what `ls_histograms` computes, on plain types.
//!
//! A recorded event is one simulated event with others overlaid on it
//! (pile-up). Overlaying adds what a detector adds: towers and jets are the
//! union of the events' (so per-object MEs — jet η and φ, tower η — are the
//! sum of the events' histograms), HT and tower E_T sums add, the number of
//! jets adds, the leading jet is the hardest of all, and MET is the length
//! of the vector sum of the events' missing-momentum vectors. Towers that
//! two overlaid events put in one cell are counted twice (no merging into
//! cells, no saturation): occupancy grows linearly with μ.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, bad_param};

/// The quantity an ME histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// Missing transverse energy (GeV), one value per event.
    Met,
    /// MET / √HT (√GeV): a proxy of the MET significance, one per event.
    MetSignificance,
    /// pT of the leading jet (GeV), events with a jet.
    LeadingJetPt,
    /// η of every jet.
    JetEta,
    /// φ of every jet.
    JetPhi,
    /// Number of jets per event.
    NJets,
    /// η of every ECAL tower (Eem > 0): the ECAL occupancy per η ring.
    EcalTowerEta,
    /// η of every HCAL tower (Ehad > 0): the HCAL occupancy per η ring.
    HcalTowerEta,
    /// Σ E_T (GeV) of the towers with |η| in `abs_eta`, one value per
    /// event: with `abs_eta: [4.525, 5]` the analogue of CMS's HF E_T sums.
    TowerSumEt,
}

impl Quantity {
    /// A value per object (jet, tower) rather than per event: a recorded
    /// event's histogram is then the sum of its overlaid events'.
    pub fn per_object(self) -> bool {
        matches!(
            self,
            Quantity::JetEta | Quantity::JetPhi | Quantity::EcalTowerEta | Quantity::HcalTowerEta
        )
    }

    /// Reads the events' towers.
    pub fn needs_towers(self) -> bool {
        matches!(
            self,
            Quantity::EcalTowerEta | Quantity::HcalTowerEta | Quantity::TowerSumEt
        )
    }
}

/// One monitored element: a quantity and its binning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorElement {
    /// Name in the `me` column.
    pub name: String,
    /// What it histograms.
    pub quantity: Quantity,
    /// Bins between `range`'s edges (under- and overflow come on top).
    pub bins: usize,
    /// `[lo, hi)`.
    pub range: [f64; 2],
    /// `[lo, hi)` of |η| of the towers summed (`tower_sum_et` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abs_eta: Option<[f64; 2]>,
}

/// An ME of `bins` bins over `range`.
pub fn me(name: &str, quantity: Quantity, bins: usize, range: [f64; 2]) -> MonitorElement {
    MonitorElement {
        name: name.into(),
        quantity,
        bins,
        range,
        abs_eta: None,
    }
}

impl MonitorElement {
    /// Checks the binning and that `abs_eta` goes with `tower_sum_et`.
    pub fn validate(&self) -> Result<()> {
        if self.bins == 0 || !(self.range[0] < self.range[1]) {
            return bad_param("range", "need bins ≥ 1 and range [lo, hi) with lo < hi");
        }
        match (self.quantity, self.abs_eta) {
            (Quantity::TowerSumEt, Some([lo, hi])) if 0.0 <= lo && lo < hi => Ok(()),
            (Quantity::TowerSumEt, _) => bad_param(
                "abs_eta",
                "`tower_sum_et` needs abs_eta: [lo, hi) with 0 ≤ lo < hi",
            ),
            (_, Some(_)) => bad_param("abs_eta", "only `tower_sum_et` takes abs_eta"),
            (_, None) => Ok(()),
        }
    }

    /// The bin of `v`: 0 underflow, 1..=bins, bins + 1 overflow.
    pub fn bin(&self, v: f64) -> usize {
        let [lo, hi] = self.range;
        if v < lo {
            0
        } else if v >= hi {
            self.bins + 1
        } else {
            1 + (((v - lo) / (hi - lo) * self.bins as f64) as usize).min(self.bins - 1)
        }
    }
}

/// What the MEs read of one simulated event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFeatures {
    pub met: f64,
    /// φ of the MET (for the vector sum under pile-up).
    pub met_phi: f64,
    pub ht: f64,
    pub jet_pt: Vec<f64>,
    pub jet_eta: Vec<f64>,
    pub jet_phi: Vec<f64>,
    /// Towers (empty when no ME reads them): E_T, η, and whether ECAL
    /// (Eem > 0) or HCAL (Ehad > 0) recorded it.
    pub tower_et: Vec<f64>,
    pub tower_eta: Vec<f64>,
    pub tower_ecal: Vec<bool>,
    pub tower_hcal: Vec<bool>,
}

impl EventFeatures {
    /// The values `m` takes in this event alone.
    pub fn values(&self, m: &MonitorElement) -> Vec<f64> {
        let towers = |ecal: bool| -> Vec<f64> {
            let flags = if ecal {
                &self.tower_ecal
            } else {
                &self.tower_hcal
            };
            self.tower_eta
                .iter()
                .zip(flags)
                .filter(|x| *x.1)
                .map(|x| *x.0)
                .collect()
        };
        match m.quantity {
            Quantity::Met => vec![self.met],
            Quantity::MetSignificance if self.ht > 0.0 => vec![self.met / self.ht.sqrt()],
            Quantity::MetSignificance => vec![],
            Quantity::LeadingJetPt => self
                .jet_pt
                .iter()
                .copied()
                .reduce(f64::max)
                .into_iter()
                .collect(),
            Quantity::JetEta => self.jet_eta.clone(),
            Quantity::JetPhi => self.jet_phi.clone(),
            Quantity::NJets => vec![self.jet_pt.len() as f64],
            Quantity::EcalTowerEta => towers(true),
            Quantity::HcalTowerEta => towers(false),
            Quantity::TowerSumEt => vec![self.sum_et(m.abs_eta.unwrap_or([0.0, f64::MAX]))],
        }
    }

    fn sum_et(&self, [lo, hi]: [f64; 2]) -> f64 {
        self.tower_et
            .iter()
            .zip(&self.tower_eta)
            .filter(|(_, eta)| (lo..hi).contains(&eta.abs()))
            .map(|(et, _)| et)
            .sum()
    }
}

/// What overlaying needs of one event, computed once per event: the
/// additive per-event sums and, per ME, the event's own bins.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    met: f64,
    met_xy: [f64; 2],
    ht: f64,
    leading_jet_pt: Option<f64>,
    n_jets: f64,
    /// Per ME: the Σ E_T of `tower_sum_et` MEs (0 for the others).
    sum_et: Vec<f64>,
    /// Per ME: (bin, count) of its values in this event alone.
    own: Vec<Vec<(usize, f64)>>,
}

impl Prepared {
    pub fn new(event: &EventFeatures, mes: &[MonitorElement]) -> Prepared {
        let own = mes
            .iter()
            .map(|m| {
                let mut bins: Vec<(usize, f64)> = Vec::new();
                for v in event.values(m) {
                    let b = m.bin(v);
                    match bins.iter_mut().find(|x| x.0 == b) {
                        Some(x) => x.1 += 1.0,
                        None => bins.push((b, 1.0)),
                    }
                }
                bins
            })
            .collect();
        Prepared {
            met: event.met,
            met_xy: [
                event.met * event.met_phi.cos(),
                event.met * event.met_phi.sin(),
            ],
            ht: event.ht,
            leading_jet_pt: event.jet_pt.iter().copied().reduce(f64::max),
            n_jets: event.jet_pt.len() as f64,
            sum_et: mes
                .iter()
                .map(|m| match (m.quantity, m.abs_eta) {
                    (Quantity::TowerSumEt, Some(region)) => event.sum_et(region),
                    _ => 0.0,
                })
                .collect(),
            own,
        }
    }
}

/// One ME's histogram of an LS being filled: bins (under/overflow
/// included) and entries.
#[derive(Debug, Clone, PartialEq)]
pub struct Filling {
    pub counts: Vec<f64>,
    pub entries: i64,
}

/// Fills every ME with one recorded event: `primary` with `overlaid` on it.
/// Without overlay the values are the event's own, bit for bit.
pub fn fill_recorded(
    mes: &[MonitorElement],
    fillings: &mut [Filling],
    primary: &Prepared,
    overlaid: &[&Prepared],
) {
    let all = || std::iter::once(primary).chain(overlaid.iter().copied());
    // Per-event quantities of the overlay, summed once for every ME.
    let (met, ht, leading, n_jets) = if overlaid.is_empty() {
        (
            primary.met,
            primary.ht,
            primary.leading_jet_pt,
            primary.n_jets,
        )
    } else {
        let (x, y) = all().fold((0.0, 0.0), |a, e| (a.0 + e.met_xy[0], a.1 + e.met_xy[1]));
        (
            x.hypot(y),
            all().map(|e| e.ht).sum(),
            all().filter_map(|e| e.leading_jet_pt).reduce(f64::max),
            all().map(|e| e.n_jets).sum(),
        )
    };
    for (k, (m, f)) in mes.iter().zip(fillings.iter_mut()).enumerate() {
        let value = match m.quantity {
            q if q.per_object() => {
                for e in all() {
                    for &(b, c) in &e.own[k] {
                        f.counts[b] += c;
                        f.entries += c as i64;
                    }
                }
                continue;
            }
            Quantity::Met => Some(met),
            Quantity::MetSignificance => (ht > 0.0).then(|| met / ht.sqrt()),
            Quantity::LeadingJetPt => leading,
            Quantity::NJets => Some(n_jets),
            Quantity::TowerSumEt => Some(all().map(|e| e.sum_et[k]).sum()),
            _ => unreachable!("per-object quantities are handled above"),
        };
        if let Some(v) = value {
            f.counts[m.bin(v)] += 1.0;
            f.entries += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_keep_under_and_overflow() {
        let m = me("x", Quantity::Met, 4, [0.0, 8.0]);
        let bins: Vec<usize> = [-1.0, 0.0, 1.9, 2.0, 7.99, 8.0, 100.0]
            .iter()
            .map(|&v| m.bin(v))
            .collect();
        assert_eq!(bins, [0, 1, 1, 2, 4, 5, 5]);
    }

    fn event() -> EventFeatures {
        EventFeatures {
            met: 30.0,
            met_phi: 0.0,
            ht: 900.0,
            jet_pt: vec![120.0, 340.0],
            jet_eta: vec![0.5, -1.0],
            jet_phi: vec![1.0, -2.0],
            tower_et: vec![1.0, 2.0, 4.0, 8.0],
            tower_eta: vec![0.1, -4.7, 4.8, 2.0],
            tower_ecal: vec![true, false, true, false],
            tower_hcal: vec![false, true, false, true],
        }
    }

    #[test]
    fn each_quantity_by_hand() {
        let e = event();
        let v = |q: Quantity| e.values(&me("x", q, 10, [0.0, 1.0]));
        assert_eq!(v(Quantity::Met), [30.0]);
        assert_eq!(v(Quantity::MetSignificance), [1.0]);
        assert_eq!(v(Quantity::LeadingJetPt), [340.0]);
        assert_eq!(v(Quantity::JetEta), [0.5, -1.0]);
        assert_eq!(v(Quantity::NJets), [2.0]);
        assert_eq!(v(Quantity::EcalTowerEta), [0.1, 4.8]);
        assert_eq!(v(Quantity::HcalTowerEta), [-4.7, 2.0]);
        let forward = MonitorElement {
            abs_eta: Some([4.5, 5.0]),
            ..me("hf", Quantity::TowerSumEt, 10, [0.0, 100.0])
        };
        assert_eq!(e.values(&forward), [6.0], "towers at η −4.7 and 4.8");
        let none = EventFeatures::default();
        let w = |q: Quantity| none.values(&me("x", q, 10, [0.0, 1.0]));
        assert!(w(Quantity::LeadingJetPt).is_empty());
        assert!(w(Quantity::MetSignificance).is_empty(), "HT = 0: undefined");
        assert!(
            me("x", Quantity::TowerSumEt, 10, [0.0, 1.0])
                .validate()
                .is_err()
        );
        assert!(forward.validate().is_ok());
    }

    /// Two events overlaid, by hand: MET the vector sum, HT and jets and
    /// towers added, the leading jet the hardest; alone, the event's own.
    #[test]
    fn an_overlay_adds_what_a_detector_adds() {
        let mes = vec![
            me("met", Quantity::Met, 100, [0.0, 100.0]),
            me("sig", Quantity::MetSignificance, 100, [0.0, 10.0]),
            me("lead", Quantity::LeadingJetPt, 100, [0.0, 1000.0]),
            me("n", Quantity::NJets, 10, [0.0, 10.0]),
            me("hcal", Quantity::HcalTowerEta, 10, [-5.0, 5.0]),
            MonitorElement {
                abs_eta: Some([4.5, 5.0]),
                ..me("hf", Quantity::TowerSumEt, 100, [0.0, 100.0])
            },
        ];
        let a = event();
        let b = EventFeatures {
            met: 40.0,
            met_phi: std::f64::consts::FRAC_PI_2,
            ht: 700.0,
            jet_pt: vec![500.0],
            jet_eta: vec![0.0],
            jet_phi: vec![0.0],
            tower_et: vec![3.0],
            tower_eta: vec![4.6],
            tower_ecal: vec![false],
            tower_hcal: vec![true],
        };
        let (pa, pb) = (Prepared::new(&a, &mes), Prepared::new(&b, &mes));
        let empty = || -> Vec<Filling> {
            mes.iter()
                .map(|m| Filling {
                    counts: vec![0.0; m.bins + 2],
                    entries: 0,
                })
                .collect()
        };
        let mut f = empty();
        fill_recorded(&mes, &mut f, &pa, &[&pb]);
        let bin_of = |k: usize| f[k].counts.iter().position(|&c| c > 0.0).unwrap();
        assert_eq!(bin_of(0), mes[0].bin(50.0), "|(30, 0) + (0, 40)| = 50");
        assert_eq!(bin_of(1), mes[1].bin(50.0 / 1600f64.sqrt()));
        assert_eq!(bin_of(2), mes[2].bin(500.0));
        assert_eq!(bin_of(3), mes[3].bin(3.0));
        assert_eq!(f[4].entries, 3, "two HCAL towers of a, one of b");
        assert_eq!(bin_of(5), mes[5].bin(6.0 + 3.0));
        let mut alone = empty();
        fill_recorded(&mes, &mut alone, &pa, &[]);
        for (k, m) in mes.iter().enumerate() {
            let mut own = vec![0.0; m.bins + 2];
            a.values(m).iter().for_each(|&v| own[m.bin(v)] += 1.0);
            assert_eq!(alone[k].counts, own, "{}", m.name);
        }
    }
}
