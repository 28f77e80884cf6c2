//! The HCAL channel geometry of the Delphes CMS card (module `HCal`,
//! `EtaPhiBins`), and our readout-box (RBX) map, written down as data.
//!
//! Delphes has one tower per (η ring, φ bin) and no longitudinal
//! segmentation, so a channel is (iη, iφ, depth = 1). The card lists ring
//! edges per φ granularity; a ring between two consecutive edges takes the φ
//! binning of its *upper* edge (Delphes `SimpleCalorimeter`):
//! - barrel `|η| < 1.653`: 38 rings × 72 iφ (5°) = 2736 channels,
//! - endcap `1.653 < |η| < 4.525`: 19 rings per side × 36 iφ (10°) = 1368,
//! - forward `4.525 < |η| < 5`: 2 rings per side × 18 iφ (20°) = 72.
//!
//! iη counts a subdetector's rings from 0 in increasing η (the endcap's minus
//! rings, then its plus rings); iφ counts φ bins from 0 at φ = −π. A tower's
//! η/φ are smeared *inside* the tower (`SmearTowerCenter`), so binning them
//! with these edges finds the tower exactly.
//!
//! Maps read from CMS DQM histograms ([`CmsRegion`]) use CMS's own
//! channel indices instead: rings are iη (−41…41 without 0, a ring's
//! "edges" iη ± 0.5 in iη units), iφ is the histogram's y bins (1…72), and
//! there are as many depths as the histograms give (up to 7).
//!
//! RBX map (ours, not CMS's cabling): per side (sign of η), 18 φ sectors of
//! 20°; an RBX holds every ring of its side in its sector. Barrel: 36 RBXes
//! of 4 iφ × 19 rings = 76 channels; endcap: 36 of 2 iφ × 19 = 38; forward:
//! 36 of 1 iφ × 2 = 2. The GraphSTAD graph links two channels exactly when
//! they share an RBX (paper Eq. 3).

use std::f64::consts::PI;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError};

/// Upper ring edges of the card's 5° towers (the barrel); the lowest ring's
/// lower edge, −1.653, is the last 10° edge.
const BARREL_EDGES: [f64; 39] = [
    -1.653, -1.566, -1.479, -1.392, -1.305, -1.218, -1.131, -1.044, -0.957, -0.87, -0.783, -0.696,
    -0.609, -0.522, -0.435, -0.348, -0.261, -0.174, -0.087, 0.0, 0.087, 0.174, 0.261, 0.348, 0.435,
    0.522, 0.609, 0.696, 0.783, 0.87, 0.957, 1.044, 1.131, 1.218, 1.305, 1.392, 1.479, 1.566,
    1.653,
];
/// Ring edges of the card's 10° towers on the minus side (−4.525 is the
/// last 20° edge); the plus side mirrors them.
const ENDCAP_MINUS_EDGES: [f64; 20] = [
    -4.525, -4.35, -4.175, -4.0, -3.825, -3.65, -3.475, -3.3, -3.125, -2.95, -2.868, -2.65, -2.5,
    -2.322, -2.172, -2.043, -1.93, -1.83, -1.74, -1.653,
];
/// Ring edges of the card's 20° towers on the minus side.
const FORWARD_MINUS_EDGES: [f64; 3] = [-5.0, -4.7, -4.525];
/// φ sectors of one side, each one RBX.
pub const RBX_SECTORS: usize = 18;

/// A part of the HCAL with its own φ granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Subdetector {
    /// HB: |η| < 1.653, 5° towers.
    Barrel,
    /// HE: 1.653 < |η| < 4.525, 10° towers.
    Endcap,
    /// HF: 4.525 < |η| < 5, 20° towers.
    Forward,
}

impl Subdetector {
    pub const ALL: [Subdetector; 3] = [Self::Barrel, Self::Endcap, Self::Forward];

    pub fn name(self) -> &'static str {
        match self {
            Self::Barrel => "barrel",
            Self::Endcap => "endcap",
            Self::Forward => "forward",
        }
    }

    /// The subdetector's geometry.
    pub fn geometry(self) -> Geometry {
        let mirrored = |minus: &[f64]| -> Vec<(f64, f64)> {
            let minus_rings: Vec<(f64, f64)> = minus.windows(2).map(|w| (w[0], w[1])).collect();
            let plus_rings = minus_rings.iter().rev().map(|&(lo, hi)| (-hi, -lo));
            minus_rings.iter().copied().chain(plus_rings).collect()
        };
        let (rings, n_iphi) = match self {
            Self::Barrel => (BARREL_EDGES.windows(2).map(|w| (w[0], w[1])).collect(), 72),
            Self::Endcap => (mirrored(&ENDCAP_MINUS_EDGES), 36),
            Self::Forward => (mirrored(&FORWARD_MINUS_EDGES), 18),
        };
        Geometry {
            subdetector: self,
            rings,
            n_iphi,
            n_depth: 1,
        }
    }

    /// CMS's |iη| range of the subdetector: HB 1–16, HE 16–29, HF 29–41
    /// (iη 16 has HB and HE depths, 29 HE and HF).
    pub fn cms_ieta(self) -> [i64; 2] {
        match self {
            Self::Barrel => [1, 16],
            Self::Endcap => [16, 29],
            Self::Forward => [29, 41],
        }
    }
}

/// The channels of one subdetector: rings (η intervals) × φ bins × depths.
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    pub subdetector: Subdetector,
    /// `[lo, hi)` of each ring, in increasing η: ring index = iη. In iη
    /// units (iη ± 0.5) for maps of a [`CmsRegion`].
    pub rings: Vec<(f64, f64)>,
    pub n_iphi: usize,
    /// Depth segments: 1 for Delphes (no longitudinal segmentation; kept as
    /// an axis so the maps have the paper's (iη, iφ, depth) shape), up to 7
    /// for CMS DQM maps.
    pub n_depth: usize,
}

/// Where a channel sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    pub ieta: usize,
    pub iphi: usize,
    /// 0 for Delphes (one depth); CMS depth − 1 for DQM maps.
    pub depth: usize,
}

impl Geometry {
    pub fn n_ieta(&self) -> usize {
        self.rings.len()
    }

    pub fn n_channels(&self) -> usize {
        self.n_ieta() * self.n_iphi * self.n_depth
    }

    /// Map shape (iη, iφ, depth).
    pub fn shape(&self) -> [usize; 3] {
        [self.n_ieta(), self.n_iphi, self.n_depth]
    }

    /// Channel index of (iη, iφ, depth): row-major in (iη, iφ, depth).
    pub fn index(&self, c: Channel) -> usize {
        (c.ieta * self.n_iphi + c.iphi) * self.n_depth + c.depth
    }

    pub fn channel(&self, index: usize) -> Channel {
        let depth = index % self.n_depth;
        let cell = index / self.n_depth;
        Channel {
            ieta: cell / self.n_iphi,
            iphi: cell % self.n_iphi,
            depth,
        }
    }

    /// The channel a tower at (η, φ) belongs to, or `None` outside the
    /// subdetector. φ is taken modulo 2π.
    pub fn locate(&self, eta: f64, phi: f64) -> Option<usize> {
        let ieta = self
            .rings
            .iter()
            .position(|&(lo, hi)| eta >= lo && eta < hi)?;
        let step = 2.0 * PI / self.n_iphi as f64;
        let wrapped = (phi + PI).rem_euclid(2.0 * PI) - PI;
        let mut iphi = (((wrapped + PI) / step) as usize).min(self.n_iphi - 1);
        // The division can land one bin off right at an edge: settle it
        // against the edges as `phi_range` computes them.
        if iphi > 0 && wrapped < self.phi_range(iphi).0 {
            iphi -= 1;
        } else if iphi + 1 < self.n_iphi && wrapped >= self.phi_range(iphi).1 {
            iphi += 1;
        }
        Some(self.index(Channel {
            ieta,
            iphi,
            depth: 0,
        }))
    }

    /// φ bin edges `[lo, hi)` of iφ.
    pub fn phi_range(&self, iphi: usize) -> (f64, f64) {
        let step = 2.0 * PI / self.n_iphi as f64;
        (-PI + iphi as f64 * step, -PI + (iphi + 1) as f64 * step)
    }

    /// Number of RBXes (2 sides × 18 sectors).
    pub fn n_rbx(&self) -> usize {
        2 * RBX_SECTORS
    }

    /// The RBX of a channel: side (0 minus, 1 plus) × 18 + φ sector.
    pub fn rbx(&self, index: usize) -> usize {
        let c = self.channel(index);
        let (lo, hi) = self.rings[c.ieta];
        let side = usize::from(lo + hi > 0.0);
        side * RBX_SECTORS + c.iphi * RBX_SECTORS / self.n_iphi
    }

    /// The RBX of every channel, in channel order.
    pub fn rbx_map(&self) -> Vec<usize> {
        (0..self.n_channels()).map(|i| self.rbx(i)).collect()
    }

    /// The edges of the RBX graph as (i, j, weight) of the symmetric-
    /// normalized GCN adjacency D^-1/2 (A + I) D^-1/2, A binary with
    /// A(i, j) = 1 when i ≠ j share an RBX (paper Eq. 3). Self-loops included.
    pub fn gcn_adjacency(&self) -> Vec<(usize, usize, f64)> {
        let rbx = self.rbx_map();
        let mut members = vec![Vec::new(); self.n_rbx()];
        for (i, &r) in rbx.iter().enumerate() {
            members[r].push(i);
        }
        let mut edges = Vec::new();
        for m in &members {
            // Every member has degree |m| (its RBX mates plus its self-loop).
            let w = 1.0 / m.len() as f64;
            for &i in m {
                for &j in m {
                    edges.push((i, j, w));
                }
            }
        }
        edges
    }
}

/// The channels of maps read from CMS DQM histograms: iη from −hi to −lo
/// and from lo to hi (no iη 0), the histograms' iφ bins and depths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmsRegion {
    /// |iη| range, inclusive.
    pub ieta: [i64; 2],
}

impl CmsRegion {
    /// The iη of each ring, in increasing order.
    pub fn ietas(&self) -> Vec<i64> {
        let [lo, hi] = self.ieta;
        (-hi..=-lo).chain(lo..=hi).collect()
    }
}

/// Which channels a maps table holds (stored in its schema metadata,
/// [`crate::hcal::tables::read_geometry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapGeometry {
    pub subdetector: Subdetector,
    /// (iη, iφ, depth).
    pub shape: [usize; 3],
    /// CMS channel indices (maps from DQM histograms); absent: the Delphes
    /// card's rings (maps made from events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cms: Option<CmsRegion>,
}

impl MapGeometry {
    pub fn of(subdetector: Subdetector) -> Self {
        Self {
            subdetector,
            shape: subdetector.geometry().shape(),
            cms: None,
        }
    }

    /// The card's channels of `subdetector` with `n_depth` depth segments
    /// each (generated maps; Delphes itself has one).
    pub fn with_depths(subdetector: Subdetector, n_depth: usize) -> Self {
        let [n_ieta, n_iphi, _] = subdetector.geometry().shape();
        Self {
            subdetector,
            shape: [n_ieta, n_iphi, n_depth],
            cms: None,
        }
    }

    /// CMS channels of `region` with `n_iphi` iφ and `n_depth` depths,
    /// labelled as `subdetector`.
    pub fn cms(subdetector: Subdetector, region: CmsRegion, n_iphi: usize, n_depth: usize) -> Self {
        Self {
            subdetector,
            shape: [region.ietas().len(), n_iphi, n_depth],
            cms: Some(region),
        }
    }

    pub fn n_channels(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn geometry(&self) -> Geometry {
        match self.cms {
            None => Geometry {
                n_depth: self.shape[2],
                ..self.subdetector.geometry()
            },
            Some(region) => Geometry {
                subdetector: self.subdetector,
                rings: region
                    .ietas()
                    .into_iter()
                    .map(|i| (i as f64 - 0.5, i as f64 + 0.5))
                    .collect(),
                n_iphi: self.shape[1],
                n_depth: self.shape[2],
            },
        }
    }

    /// Refuses maps of another geometry than `self` (a model's).
    pub fn check(&self, maps: &MapGeometry, what: &str) -> Result<()> {
        if self != maps {
            return Err(StageError::data(format!(
                "{what}: the maps are {}, the model was trained on {}",
                maps.describe(),
                self.describe()
            )));
        }
        Ok(())
    }

    /// `barrel maps of shape [38, 72, 1]` or, for CMS channels, `barrel
    /// maps of CMS |iη| 1-16, shape [32, 72, 4]`.
    pub fn describe(&self) -> String {
        match self.cms {
            None => format!("{} maps of shape {:?}", self.subdetector.name(), self.shape),
            Some(r) => format!(
                "{} maps of CMS |iη| {}-{}, shape {:?}",
                self.subdetector.name(),
                r.ieta[0],
                r.ieta[1],
                self.shape
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_counts_match_the_card() {
        let counts: Vec<usize> = Subdetector::ALL
            .iter()
            .map(|s| s.geometry().n_channels())
            .collect();
        // DATA.md: 2736 barrel, 1368 endcap, 72 forward towers.
        assert_eq!(counts, [2736, 1368, 72]);
        let b = Subdetector::Barrel.geometry();
        assert_eq!(b.shape(), [38, 72, 1]);
        let e = Subdetector::Endcap.geometry();
        assert_eq!(e.shape(), [38, 36, 1]);
        assert_eq!(e.rings[18], (-1.74, -1.653));
        assert_eq!(e.rings[19], (1.653, 1.74));
        assert_eq!(e.rings[37], (4.35, 4.525));
    }

    #[test]
    fn rings_tile_eta_without_gaps_or_overlaps() {
        let mut rings: Vec<(f64, f64)> = Subdetector::ALL
            .iter()
            .flat_map(|s| s.geometry().rings)
            .collect();
        rings.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(rings.first().unwrap().0, -5.0);
        assert_eq!(rings.last().unwrap().1, 5.0);
        for w in rings.windows(2) {
            assert_eq!(w[0].1, w[1].0, "{w:?}");
            assert!(w[0].0 < w[0].1);
        }
    }

    #[test]
    fn locate_inverts_index_and_respects_edges() {
        let g = Subdetector::Barrel.geometry();
        for index in [0, 1, 71, 72, 1000, 2735] {
            let c = g.channel(index);
            let (lo, hi) = g.rings[c.ieta];
            let (plo, phi) = g.phi_range(c.iphi);
            let mid = g.locate((lo + hi) / 2.0, (plo + phi) / 2.0);
            assert_eq!(mid, Some(index));
            assert_eq!(
                g.locate(lo, plo),
                Some(index),
                "lower edges belong to the channel"
            );
        }
        assert_eq!(g.locate(1.653, 0.0), None);
        assert_eq!(g.locate(-1.7, 0.0), None);
        // φ = π wraps to the first bin, as −π.
        assert_eq!(g.locate(0.01, PI), g.locate(0.01, -PI));
    }

    #[test]
    fn rbxes_follow_the_written_map() {
        for (sub, per_rbx) in [
            (Subdetector::Barrel, 76),
            (Subdetector::Endcap, 38),
            (Subdetector::Forward, 2),
        ] {
            let g = sub.geometry();
            let mut sizes = vec![0; g.n_rbx()];
            for r in g.rbx_map() {
                sizes[r] += 1;
            }
            assert_eq!(sizes, vec![per_rbx; 36], "{sub:?}");
        }
        let g = Subdetector::Barrel.geometry();
        let at = |ieta, iphi| {
            g.rbx(g.index(Channel {
                ieta,
                iphi,
                depth: 0,
            }))
        };
        assert_eq!(at(0, 0), 0);
        assert_eq!(at(18, 3), 0, "4 iφ per barrel sector, minus side");
        assert_eq!(at(18, 4), 1);
        assert_eq!(at(19, 0), 18, "η > 0 is the plus side");
        assert_eq!(at(37, 71), 35);
    }

    #[test]
    fn gcn_adjacency_is_symmetric_normalized_and_per_rbx() {
        let g = Subdetector::Endcap.geometry();
        let rbx = g.rbx_map();
        let n = g.n_channels();
        let mut dense = vec![0.0; n * n];
        for (i, j, w) in g.gcn_adjacency() {
            assert_eq!(rbx[i], rbx[j], "an edge across RBXes: {i} {j}");
            dense[i * n + j] += w;
        }
        for i in 0..n {
            let row_sum: f64 = dense[i * n..(i + 1) * n].iter().sum();
            assert!((row_sum - 1.0).abs() < 1e-12, "row {i}: {row_sum}");
            assert!(dense[i * n + i] > 0.0, "self-loop");
            for j in 0..n {
                assert_eq!(dense[i * n + j], dense[j * n + i]);
                // D^-1/2 (A+I) D^-1/2 with every degree 38: 1/38 inside an RBX.
                let expect = if rbx[i] == rbx[j] { 1.0 / 38.0 } else { 0.0 };
                assert_eq!(dense[i * n + j], expect);
            }
        }
    }

    /// CMS channels: rings are iη without 0, depths are the fastest index,
    /// and the RBX sides and 4-iφ sectors follow iη's sign and iφ.
    #[test]
    fn cms_channels_index_depths_and_sides() {
        let region = CmsRegion { ieta: [1, 16] };
        assert_eq!(region.ietas().len(), 32);
        assert!(!region.ietas().contains(&0));
        let maps = MapGeometry::cms(Subdetector::Barrel, region, 72, 4);
        assert_eq!(maps.shape, [32, 72, 4]);
        assert_eq!(maps.n_channels(), 32 * 72 * 4);
        let g = maps.geometry();
        assert_eq!(g.n_channels(), maps.n_channels());
        assert_eq!(g.rings[15], (-1.5, -0.5), "iη −1");
        assert_eq!(g.rings[16], (0.5, 1.5), "iη +1");
        let c = Channel {
            ieta: 16,
            iphi: 5,
            depth: 3,
        };
        let i = g.index(c);
        assert_eq!(i, (16 * 72 + 5) * 4 + 3);
        assert_eq!(g.channel(i), c);
        assert_eq!(g.rbx(i), 18 + 1, "plus side, iφ 5 in the second sector");
        let mut sizes = vec![0; g.n_rbx()];
        for r in g.rbx_map() {
            sizes[r] += 1;
        }
        assert_eq!(sizes, vec![16 * 4 * 4; 36]);
        // The geometry travels in the metadata; maps of the card are not
        // maps of CMS channels.
        let json = serde_json::to_string(&maps).unwrap();
        assert_eq!(serde_json::from_str::<MapGeometry>(&json).unwrap(), maps);
        let card = MapGeometry::of(Subdetector::Barrel);
        assert!(!serde_json::to_string(&card).unwrap().contains("cms"));
        let e = maps.check(&card, "scores").unwrap_err().to_string();
        assert!(e.contains("CMS |iη| 1-16"), "{e}");
    }
}
