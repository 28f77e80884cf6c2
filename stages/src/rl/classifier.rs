//! Classifiers of a run's badness from the agent's own observation — the
//! baseline a data scientist on shift would build before an RL agent:
//! logistic regression (Newton's method with an L2 penalty on standardized
//! features) and gradient-boosted trees (logistic loss, second-order leaf
//! values, splits searched on per-feature quantile bins). Both give
//! P(bad | observation); the cost-sensitive decision on it is a rule of
//! [`super::rules`], tuned on development datasets like the expert rules.

use serde::{Deserialize, Serialize};

/// A fitted classifier: P(bad) of an observation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreModel {
    Logistic(Logistic),
    Boosted(Boosted),
}

impl ScoreModel {
    /// The model family's name (`logistic`, `boosted`).
    pub fn name(&self) -> &'static str {
        match self {
            ScoreModel::Logistic(_) => "logistic",
            ScoreModel::Boosted(_) => "boosted",
        }
    }

    /// P(bad | x).
    pub fn probability(&self, x: &[f32]) -> f64 {
        let logit = match self {
            ScoreModel::Logistic(m) => m.logit(x),
            ScoreModel::Boosted(m) => m.logit(x),
        };
        sigmoid(logit)
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Training samples: rows of features and their labels (true: bad).
#[derive(Debug, Default, Clone)]
pub struct Samples {
    pub x: Vec<Vec<f32>>,
    pub bad: Vec<bool>,
}

impl Samples {
    pub fn push(&mut self, x: Vec<f32>, bad: bool) {
        self.x.push(x);
        self.bad.push(bad);
    }
    pub fn len(&self) -> usize {
        self.x.len()
    }
    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }
    fn n_features(&self) -> usize {
        self.x.first().map_or(0, Vec::len)
    }
}

/// Logistic regression on standardized features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    pub weights: Vec<f64>,
    pub bias: f64,
}

impl Logistic {
    /// Fits by Newton's method (iteratively reweighted least squares) with
    /// an L2 penalty `l2` per sample on the weights (not the bias), until
    /// the step is below 1e-8 or after 50 iterations.
    pub fn fit(s: &Samples, l2: f64) -> Self {
        let (n, d) = (s.len(), s.n_features());
        let mut mean = vec![0.0; d];
        for x in &s.x {
            for (m, v) in mean.iter_mut().zip(x) {
                *m += f64::from(*v) / n as f64;
            }
        }
        let mut scale = vec![0.0; d];
        for x in &s.x {
            for j in 0..d {
                scale[j] += (f64::from(x[j]) - mean[j]).powi(2) / n as f64;
            }
        }
        // A constant feature keeps scale 1 (its weight stays 0 under L2).
        let scale: Vec<f64> = scale
            .into_iter()
            .map(|v| if v > 1e-12 { v.sqrt() } else { 1.0 })
            .collect();
        let z: Vec<Vec<f64>> =
            s.x.iter()
                .map(|x| {
                    let mut r: Vec<f64> = (0..d)
                        .map(|j| (f64::from(x[j]) - mean[j]) / scale[j])
                        .collect();
                    r.push(1.0);
                    r
                })
                .collect();
        let p = d + 1;
        let mut beta = vec![0.0; p];
        for _ in 0..50 {
            let mut grad = vec![0.0; p];
            let mut hess = vec![vec![0.0; p]; p];
            for (row, &bad) in z.iter().zip(&s.bad) {
                let eta: f64 = row.iter().zip(&beta).map(|(a, b)| a * b).sum();
                let mu = sigmoid(eta);
                let w = (mu * (1.0 - mu)).max(1e-10);
                let r = f64::from(u8::from(bad)) - mu;
                for a in 0..p {
                    grad[a] += r * row[a];
                    for b in 0..=a {
                        hess[a][b] += w * row[a] * row[b];
                    }
                }
            }
            for a in 0..p {
                let row = hess[a].clone();
                for (b, v) in row.iter().enumerate().take(a) {
                    hess[b][a] = *v;
                }
                if a < d {
                    grad[a] -= l2 * n as f64 * beta[a];
                    hess[a][a] += l2 * n as f64;
                }
            }
            let step = solve(hess, grad);
            let size = step.iter().map(|v| v.abs()).fold(0.0, f64::max);
            for (b, s) in beta.iter_mut().zip(&step) {
                *b += s;
            }
            if size < 1e-8 {
                break;
            }
        }
        Self {
            mean,
            scale,
            bias: beta[d],
            weights: beta[..d].to_vec(),
        }
    }

    fn logit(&self, x: &[f32]) -> f64 {
        self.bias
            + (0..self.weights.len())
                .map(|j| self.weights[j] * (f64::from(x[j]) - self.mean[j]) / self.scale[j])
                .sum::<f64>()
    }
}

/// Solves `a x = b` (symmetric positive definite) by Gaussian elimination
/// with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .expect("rows left");
        a.swap(col, pivot);
        b.swap(col, pivot);
        let d = a[col][col];
        if d.abs() < 1e-300 {
            continue;
        }
        let pivot_row = a[col].clone();
        for row in col + 1..n {
            let f = a[row][col] / d;
            if f != 0.0 {
                for (x, p) in a[row].iter_mut().zip(&pivot_row).skip(col) {
                    *x -= f * p;
                }
                b[row] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = if a[row][row].abs() < 1e-300 {
            0.0
        } else {
            (b[row] - s) / a[row][row]
        };
    }
    x
}

/// The boosted trees' settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BoostParams {
    /// Trees (boosting rounds).
    pub trees: usize,
    /// Depth of each tree.
    pub depth: usize,
    /// Shrinkage of each tree's leaf values.
    pub learning_rate: f64,
    /// L2 penalty on leaf values (λ of XGBoost).
    pub l2: f64,
    /// Smallest hessian sum of a leaf (XGBoost's min_child_weight).
    pub min_leaf_weight: f64,
    /// Candidate split points per feature (its quantiles).
    pub bins: usize,
}

impl Default for BoostParams {
    fn default() -> Self {
        Self {
            trees: 100,
            depth: 3,
            learning_rate: 0.1,
            l2: 1.0,
            min_leaf_weight: 5.0,
            bins: 32,
        }
    }
}

/// A node of a tree: a split (`x[feature] <= threshold` goes left) or a leaf.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Node {
    Split {
        feature: usize,
        threshold: f64,
        left: usize,
        right: usize,
    },
    Leaf(f64),
}

/// Gradient-boosted trees on the logistic loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Boosted {
    /// The prior's logit.
    pub base: f64,
    /// Each tree's nodes, the root first.
    pub trees: Vec<Vec<Node>>,
}

impl Boosted {
    pub fn fit(s: &Samples, p: &BoostParams) -> Self {
        let (n, d) = (s.len(), s.n_features());
        let y: Vec<f64> = s.bad.iter().map(|&b| f64::from(u8::from(b))).collect();
        let prior = (y.iter().sum::<f64>() / n.max(1) as f64).clamp(1e-6, 1.0 - 1e-6);
        let base = (prior / (1.0 - prior)).ln();
        // Candidate thresholds: distinct quantiles of each feature; each
        // sample's bin per feature, once.
        let cuts: Vec<Vec<f64>> = (0..d)
            .map(|j| {
                let mut v: Vec<f64> = s.x.iter().map(|x| f64::from(x[j])).collect();
                v.sort_by(f64::total_cmp);
                let mut c: Vec<f64> = (1..p.bins).map(|q| v[(q * (n - 1)) / p.bins]).collect();
                c.dedup();
                c
            })
            .collect();
        let binned: Vec<Vec<u16>> =
            s.x.iter()
                .map(|x| {
                    (0..d)
                        .map(|j| cuts[j].partition_point(|&c| c < f64::from(x[j])) as u16)
                        .collect()
                })
                .collect();
        let mut logit = vec![base; n];
        let mut trees = Vec::with_capacity(p.trees);
        for _ in 0..p.trees {
            let (g, h): (Vec<f64>, Vec<f64>) = logit
                .iter()
                .zip(&y)
                .map(|(&z, &y)| {
                    let m = sigmoid(z);
                    (m - y, (m * (1.0 - m)).max(1e-12))
                })
                .unzip();
            let mut nodes = Vec::new();
            let all: Vec<u32> = (0..n as u32).collect();
            grow(&mut nodes, &all, 0, &binned, &cuts, &g, &h, p);
            for (i, z) in logit.iter_mut().enumerate() {
                *z += leaf_of(&nodes, &s.x[i]);
            }
            trees.push(nodes);
        }
        Self { base, trees }
    }

    fn logit(&self, x: &[f32]) -> f64 {
        self.base + self.trees.iter().map(|t| leaf_of(t, x)).sum::<f64>()
    }
}

fn leaf_of(nodes: &[Node], x: &[f32]) -> f64 {
    let mut k = 0;
    loop {
        match nodes[k] {
            Node::Leaf(v) => return v,
            Node::Split {
                feature,
                threshold,
                left,
                right,
            } => {
                k = if f64::from(x[feature]) <= threshold {
                    left
                } else {
                    right
                }
            }
        }
    }
}

/// Grows the subtree of samples `idx` at `depth`; returns its node index.
#[allow(clippy::too_many_arguments)]
fn grow(
    nodes: &mut Vec<Node>,
    idx: &[u32],
    depth: usize,
    binned: &[Vec<u16>],
    cuts: &[Vec<f64>],
    g: &[f64],
    h: &[f64],
    p: &BoostParams,
) -> usize {
    let (gs, hs) = idx.iter().fold((0.0, 0.0), |(a, b), &i| {
        (a + g[i as usize], b + h[i as usize])
    });
    let here = nodes.len();
    nodes.push(Node::Leaf(-p.learning_rate * gs / (hs + p.l2)));
    if depth >= p.depth || hs < 2.0 * p.min_leaf_weight {
        return here;
    }
    let score = |g: f64, h: f64| g * g / (h + p.l2);
    let parent = score(gs, hs);
    // (gain, feature, last bin going left)
    let mut best: Option<(f64, usize, usize)> = None;
    for (j, c) in cuts.iter().enumerate() {
        let mut hist = vec![(0.0, 0.0); c.len() + 1];
        for &i in idx {
            let b = binned[i as usize][j] as usize;
            hist[b].0 += g[i as usize];
            hist[b].1 += h[i as usize];
        }
        let (mut gl, mut hl) = (0.0, 0.0);
        for (b, &(gb, hb)) in hist.iter().enumerate().take(c.len()) {
            gl += gb;
            hl += hb;
            let (gr, hr) = (gs - gl, hs - hl);
            if hl < p.min_leaf_weight || hr < p.min_leaf_weight {
                continue;
            }
            let gain = score(gl, hl) + score(gr, hr) - parent;
            if gain > 1e-9 && best.is_none_or(|(bg, _, _)| gain > bg) {
                best = Some((gain, j, b));
            }
        }
    }
    let Some((_, feature, bin)) = best else {
        return here;
    };
    let (left_idx, right_idx): (Vec<u32>, Vec<u32>) = idx
        .iter()
        .partition(|&&i| binned[i as usize][feature] as usize <= bin);
    let left = grow(nodes, &left_idx, depth + 1, binned, cuts, g, h, p);
    let right = grow(nodes, &right_idx, depth + 1, binned, cuts, g, h, p);
    nodes[here] = Node::Split {
        feature,
        threshold: cuts[feature][bin],
        left,
        right,
    };
    here
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Labels drawn from a known logistic model: the fit recovers its
    /// weights (within the sampling error of 20,000 samples).
    #[test]
    fn logistic_recovers_a_known_model() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut s = Samples::default();
        for _ in 0..20_000 {
            let x: Vec<f32> = (0..3).map(|_| rng.random_range(-2.0..2.0)).collect();
            let z = -1.0 + 2.0 * f64::from(x[0]) - 1.0 * f64::from(x[1]);
            s.push(x, rng.random_bool(sigmoid(z)));
        }
        let m = Logistic::fit(&s, 0.0);
        // Back to the raw features' weights.
        let w: Vec<f64> = (0..3).map(|j| m.weights[j] / m.scale[j]).collect();
        let b = m.bias - (0..3).map(|j| w[j] * m.mean[j]).sum::<f64>();
        assert!((w[0] - 2.0).abs() < 0.1, "{w:?}");
        assert!((w[1] + 1.0).abs() < 0.1, "{w:?}");
        assert!(w[2].abs() < 0.1, "{w:?}");
        assert!((b + 1.0).abs() < 0.1, "{b}");
        let model = ScoreModel::Logistic(m);
        assert!((model.probability(&[1.0, 0.0, 0.0]) - sigmoid(1.0)).abs() < 0.03);
    }

    /// A target no line separates (bad inside a band of x0, or when x1 is
    /// large): the trees learn it, logistic regression cannot; a
    /// tree's leaf values are by hand for one split.
    #[test]
    fn boosted_trees_learn_what_a_line_cannot() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut s = Samples::default();
        for _ in 0..5_000 {
            let x: Vec<f32> = (0..2).map(|_| rng.random_range(-3.0..3.0)).collect();
            let bad = x[0].abs() < 1.0 || x[1] > 2.0;
            s.push(x, bad);
        }
        let boosted = ScoreModel::Boosted(Boosted::fit(&s, &BoostParams::default()));
        let logistic = ScoreModel::Logistic(Logistic::fit(&s, 1e-4));
        let accuracy = |m: &ScoreModel| {
            s.x.iter()
                .zip(&s.bad)
                .filter(|(x, b)| (m.probability(x) > 0.5) == **b)
                .count() as f64
                / s.len() as f64
        };
        assert!(accuracy(&boosted) > 0.97, "{}", accuracy(&boosted));
        assert!(accuracy(&logistic) < 0.75, "{}", accuracy(&logistic));

        // One tree of depth 1 on x0 ≤ 0 (4 samples): leaf = −lr·G/(H + λ).
        let s = Samples {
            x: vec![vec![-1.0], vec![-2.0], vec![1.0], vec![2.0]],
            bad: vec![true, true, false, false],
        };
        let p = BoostParams {
            trees: 1,
            depth: 1,
            learning_rate: 1.0,
            l2: 0.0,
            min_leaf_weight: 0.1,
            bins: 4,
        };
        let m = Boosted::fit(&s, &p);
        // Prior 0.5: base logit 0, g = 0.5 − y, h = 0.25 per sample.
        assert_eq!(m.base, 0.0);
        let left = -(2.0 * -0.5) / (2.0 * 0.25);
        assert_eq!(leaf_of(&m.trees[0], &[-1.5]), left);
        assert_eq!(leaf_of(&m.trees[0], &[1.5]), -left);
        let json = serde_json::to_string(&ScoreModel::Boosted(m.clone())).unwrap();
        let back: ScoreModel = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ScoreModel::Boosted(m));
    }
}
