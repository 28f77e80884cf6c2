//! The frontier of a family of rules: what the best mixture of them
//! achieves at a given effort. Playing rule A on a fraction λ of the runs
//! and rule B on the rest lands on the straight line between their
//! operating points, so the frontier is the convex hull of the points, not
//! the best single rule of a grid.
//!
//! Points are (effort, value) with a larger value better (pass −missed to
//! minimise a rate). [`Frontier::at`] is the best value reachable with at
//! most a given effort, [`Frontier::effort_for`] the least effort that
//! reaches a given value; both say which two rules mix, and how, so any
//! other figure of those rules (their efficiency) can be mixed the same way.

/// A mixture of two of the input points: `(1 − weight) · a + weight · b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    pub a: usize,
    pub b: usize,
    pub weight: f64,
}

impl Mix {
    /// The same mixture of any other figure of the points.
    pub fn of(&self, figure: &[f64]) -> f64 {
        self.between(figure[self.a], figure[self.b])
    }

    /// The mixture of `a`'s and `b`'s values of a figure.
    pub fn between(&self, a: f64, b: f64) -> f64 {
        (1.0 - self.weight) * a + self.weight * b
    }
}

/// The upper concave hull of the points, cut where it stops rising: the
/// best value at each effort (more effort never has to be spent).
#[derive(Debug, Clone)]
pub struct Frontier {
    /// Indices of the hull's vertices into the input points, by effort.
    vertices: Vec<usize>,
    points: Vec<(f64, f64)>,
}

impl Frontier {
    /// The frontier of `points` (effort, value); non-finite points are
    /// left out. `None` without a finite point.
    pub fn new(points: &[(f64, f64)]) -> Option<Self> {
        let mut order: Vec<usize> = (0..points.len())
            .filter(|&i| points[i].0.is_finite() && points[i].1.is_finite())
            .collect();
        // By effort, the best value first among equal efforts.
        order.sort_by(|&i, &j| {
            points[i]
                .0
                .total_cmp(&points[j].0)
                .then(points[j].1.total_cmp(&points[i].1))
        });
        order.dedup_by(|j, i| points[*i].0 == points[*j].0);
        let mut hull: Vec<usize> = Vec::new();
        for i in order {
            // A point that is no better than the last vertex at more effort
            // is never worth it.
            if let Some(&last) = hull.last()
                && points[i].1 <= points[last].1
            {
                continue;
            }
            // Monotone chain: drop vertices under the chord to the new point.
            while hull.len() >= 2 {
                let (o, a) = (points[hull[hull.len() - 2]], points[hull[hull.len() - 1]]);
                let p = points[i];
                let cross = (a.0 - o.0) * (p.1 - o.1) - (a.1 - o.1) * (p.0 - o.0);
                if cross >= 0.0 {
                    hull.pop();
                } else {
                    break;
                }
            }
            hull.push(i);
        }
        (!hull.is_empty()).then(|| Self {
            vertices: hull,
            points: points.to_vec(),
        })
    }

    /// Indices of the rules on the frontier, by effort.
    pub fn vertices(&self) -> &[usize] {
        &self.vertices
    }

    /// The best mixture spending at most `effort`: `None` when every rule
    /// needs more.
    pub fn at(&self, effort: f64) -> Option<Mix> {
        let p = |k: usize| self.points[self.vertices[k]];
        if effort < p(0).0 {
            return None;
        }
        let last = self.vertices.len() - 1;
        if effort >= p(last).0 {
            return Some(self.vertex(last));
        }
        let k = (0..last).find(|&k| effort < p(k + 1).0).expect("within");
        let weight = (effort - p(k).0) / (p(k + 1).0 - p(k).0);
        Some(Mix {
            a: self.vertices[k],
            b: self.vertices[k + 1],
            weight,
        })
    }

    /// The least-effort mixture reaching `value`: `None` when no rule does.
    pub fn effort_for(&self, value: f64) -> Option<Mix> {
        let p = |k: usize| self.points[self.vertices[k]];
        if value <= p(0).1 {
            return Some(self.vertex(0));
        }
        let k = (1..self.vertices.len()).find(|&k| value <= p(k).1)?;
        let weight = (value - p(k - 1).1) / (p(k).1 - p(k - 1).1);
        Some(Mix {
            a: self.vertices[k - 1],
            b: self.vertices[k],
            weight,
        })
    }

    fn vertex(&self, k: usize) -> Mix {
        Mix {
            a: self.vertices[k],
            b: self.vertices[k],
            weight: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hull_and_mixtures_by_hand() {
        // (calls, efficiency): 1 is under the chord 0–2, 4 costs more than
        // 3 for less, 5 repeats 2's effort with less.
        let points = [
            (0.0, 0.0),
            (1.0, 0.2),
            (2.0, 0.8),
            (4.0, 1.0),
            (5.0, 0.9),
            (2.0, 0.5),
        ];
        let f = Frontier::new(&points).unwrap();
        assert_eq!(f.vertices(), &[0, 2, 3]);
        // Half-way between 0 and 2: 0.4, not rule 1's 0.2.
        let m = f.at(1.0).unwrap();
        assert_eq!((m.a, m.b, m.weight), (0, 2, 0.5));
        assert!((m.of(&points.map(|p| p.1)) - 0.4).abs() < 1e-12);
        // Beyond the last vertex more effort buys nothing.
        assert_eq!(f.at(9.0).unwrap().of(&points.map(|p| p.1)), 1.0);
        // Least effort for 0.9: between 2 and 3.
        let m = f.effort_for(0.9).unwrap();
        assert_eq!((m.a, m.b), (2, 3));
        assert!((m.of(&points.map(|p| p.0)) - 3.0).abs() < 1e-12);
        assert!(f.effort_for(1.1).is_none());
        assert_eq!(f.effort_for(-1.0).unwrap().of(&points.map(|p| p.0)), 0.0);
        // No rule spends less than the cheapest.
        let f = Frontier::new(&points[1..]).unwrap();
        assert!(f.at(0.5).is_none());
        assert!(Frontier::new(&[(f64::NAN, 1.0)]).is_none());
    }
}
