//! The events a window table points into, held in memory so any window's
//! tensors can be assembled on demand: `[W, n_tracks, F_track]`,
//! `[W, n_towers, F_tower]` and `[W, F_met]`, each event's objects re-sampled
//! afresh per window from the window's seed. Used by `sliding_windows`
//! (materialized windows) and by the model stages through [`crate::medic::batches`].

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, Float32Array, RecordBatch};
use arrow::datatypes::{Float32Type, Int8Type, Int64Type};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Result, StageError};
use crate::input::Input;
use crate::medic::tables::{FeatureStats, WindowSpec};

/// One event's objects, row-major (object x feature).
#[derive(Debug, Clone)]
struct Objects {
    n: usize,
    values: Vec<f32>,
}

/// Events in memory, in a form the window assembler can index quickly.
#[derive(Debug, Clone)]
pub struct EventStore {
    pub event_ids: Vec<i64>,
    pub classes: Vec<i8>,
    /// Physics-event group of each event (the `group_by` column, else the
    /// event id): detector copies of one generated event share it.
    pub groups: Vec<i64>,
    tracks: Vec<Objects>,
    towers: Vec<Objects>,
    met: Vec<Vec<f32>>,
    index: HashMap<i64, usize>,
    n_track_features: usize,
    n_tower_features: usize,
}

/// The tensors of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowTensors {
    /// `[W, n_tracks, F_track]`, row-major.
    pub tracks: Vec<f32>,
    /// `[W, n_towers, F_tower]`, row-major.
    pub towers: Vec<f32>,
    /// `[W, F_met]`, row-major.
    pub met: Vec<f32>,
}

fn objects(
    batch: &RecordBatch,
    input: &str,
    columns: &[String],
    n_rows: usize,
) -> Result<Vec<Objects>> {
    let lists: Vec<_> = columns
        .iter()
        .map(|c| {
            let idx = batch
                .schema()
                .index_of(c)
                .map_err(|_| StageError::missing_column(input, c, "a window tensor feature"))?;
            Ok(batch.column(idx).as_list::<i32>().clone())
        })
        .collect::<Result<_>>()?;
    let f = columns.len();
    let mut out = Vec::with_capacity(n_rows);
    for row in 0..n_rows {
        let per: Vec<ArrayRef> = lists.iter().map(|l| l.value(row)).collect();
        let n = per[0].len();
        if let Some(k) = per.iter().position(|a| a.len() != n) {
            return Err(StageError::data(format!(
                "input `{input}`: row {row}: column `{}` has {} objects, `{}` has {n}",
                columns[k],
                per[k].len(),
                columns[0]
            )));
        }
        let mut values = vec![0.0f32; n * f];
        for (j, a) in per.iter().enumerate() {
            let a = a.as_primitive::<Float32Type>();
            for i in 0..n {
                values[i * f + j] = a.value(i);
            }
        }
        out.push(Objects { n, values });
    }
    Ok(out)
}

/// Mean and standard deviation (a constant feature gets 1) of row-major
/// `values` with `f` features.
fn moments<'a>(rows: impl Iterator<Item = &'a [f32]>, f: usize) -> (Vec<f32>, Vec<f32>) {
    if f == 0 {
        return (Vec::new(), Vec::new());
    }
    let (mut n, mut sum, mut sq) = (0f64, vec![0f64; f], vec![0f64; f]);
    for values in rows {
        for obj in values.chunks_exact(f) {
            n += 1.0;
            for j in 0..f {
                let v = obj[j] as f64;
                sum[j] += v;
                sq[j] += v * v;
            }
        }
    }
    let n = n.max(1.0);
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| {
            let var = (q / n - m * m).max(0.0);
            if var > 1e-12 { var.sqrt() as f32 } else { 1.0 }
        })
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

impl EventStore {
    /// Loads the events table into memory for window assembly.
    pub fn load(spec: &WindowSpec, input: &Input) -> Result<EventStore> {
        spec.check_events_schema(&input.schema, &input.name)?;
        let batch = arrow::compute::concat_batches(&input.schema, &input.read_all()?)?;
        let n = batch.num_rows();
        let col = |name: &str| batch.column_by_name(name).expect("checked");
        let event_ids = col("event_id")
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        let classes = col("class").as_primitive::<Int8Type>().values().to_vec();
        let groups = match &spec.group_by {
            Some(name) => col(name).as_primitive::<Int64Type>().values().to_vec(),
            None => event_ids.clone(),
        };
        if let Some(c) = classes
            .iter()
            .find(|&&c| c < 0 || c as usize >= spec.n_classes)
        {
            return Err(StageError::data(format!(
                "input `{}`: class {c} outside 0..{}",
                input.name, spec.n_classes
            )));
        }
        let (tr, tw, met) = spec.column_names();
        let met_cols: Vec<Float32Array> = met
            .iter()
            .map(|c| col(c).as_primitive::<Float32Type>().clone())
            .collect();
        let mut index = HashMap::with_capacity(n);
        for (i, &id) in event_ids.iter().enumerate() {
            if index.insert(id, i).is_some() {
                return Err(StageError::data(format!(
                    "input `{}`: event_id {id} appears twice",
                    input.name
                )));
            }
        }
        Ok(EventStore {
            tracks: objects(&batch, &input.name, &tr, n)?,
            towers: objects(&batch, &input.name, &tw, n)?,
            met: (0..n)
                .map(|i| met_cols.iter().map(|c| c.value(i)).collect())
                .collect(),
            event_ids,
            classes,
            groups,
            index,
            n_track_features: tr.len(),
            n_tower_features: tw.len(),
        })
    }

    /// The row of event `id`.
    fn row(&self, id: i64) -> Result<usize> {
        self.index
            .get(&id)
            .copied()
            .ok_or_else(|| StageError::data(format!("event_id {id} is not in the events table")))
    }

    /// All towers of event `id`, row-major (tower × tower feature).
    pub fn towers_of(&self, id: i64) -> Result<&[f32]> {
        Ok(&self.towers[self.row(id)?].values)
    }

    /// The class of event `id`.
    pub fn class_of(&self, id: i64) -> Result<i8> {
        Ok(self.classes[self.row(id)?])
    }

    /// Feature statistics over the objects of `events` (e.g. the train block).
    pub fn feature_stats(&self, events: &[i64]) -> Result<FeatureStats> {
        let idx: Vec<usize> = events
            .iter()
            .map(|&id| self.row(id))
            .collect::<Result<_>>()?;
        let (track_mean, track_std) = moments(
            idx.iter().map(|&e| self.tracks[e].values.as_slice()),
            self.n_track_features,
        );
        let (tower_mean, tower_std) = moments(
            idx.iter().map(|&e| self.towers[e].values.as_slice()),
            self.n_tower_features,
        );
        let fm = self.met.first().map_or(0, Vec::len);
        let (met_mean, met_std) = moments(idx.iter().map(|&e| self.met[e].as_slice()), fm);
        Ok(FeatureStats {
            track_mean,
            track_std,
            tower_mean,
            tower_std,
            met_mean,
            met_std,
        })
    }

    /// Standardizes every real object in place, so padding stays exactly zero.
    pub fn standardize(&mut self, stats: &FeatureStats) {
        self.map_objects(|kind, obj| {
            let (mean, std) = match kind {
                ObjectKind::Track => (&stats.track_mean, &stats.track_std),
                ObjectKind::Tower => (&stats.tower_mean, &stats.tower_std),
                ObjectKind::Met => (&stats.met_mean, &stats.met_std),
            };
            for ((v, m), s) in obj.iter_mut().zip(mean).zip(std) {
                *v = (*v - m) / s;
            }
        });
    }

    /// Calls `f` on the features of every real object (each track, tower
    /// and MET row), in place.
    fn map_objects(&mut self, mut f: impl FnMut(ObjectKind, &mut [f32])) {
        let sets = [
            (ObjectKind::Track, self.n_track_features, &mut self.tracks),
            (ObjectKind::Tower, self.n_tower_features, &mut self.towers),
        ];
        for (kind, width, set) in sets {
            for o in set.iter_mut().filter(|_| width > 0) {
                o.values
                    .chunks_exact_mut(width)
                    .for_each(|obj| f(kind, obj));
            }
        }
        for met in self.met.iter_mut().filter(|m| !m.is_empty()) {
            f(ObjectKind::Met, met);
        }
    }

    /// Assembles a window's tensors from its events (in window order) and
    /// sampling seed: each event keeps up to n objects chosen uniformly
    /// without replacement, zero-padded (the paper's per-window re-sampling:
    /// one random stream for the whole window).
    pub fn assemble(
        &self,
        cfg: &WindowSpec,
        events: &[i64],
        sample_seed: u64,
    ) -> Result<WindowTensors> {
        self.assemble_with(cfg, events, Draw::Window(sample_seed))
    }

    /// Assembles single events, each drawn from its own stream
    /// `event_draw_seed(seed, id)`: the same event always gets the same
    /// objects for one `seed`, whatever batch or window it is assembled in
    /// (the encode-once mode). Shapes as [`Self::assemble`] with W = events.
    pub fn assemble_events(
        &self,
        cfg: &WindowSpec,
        events: &[i64],
        seed: u64,
    ) -> Result<WindowTensors> {
        self.assemble_with(cfg, events, Draw::PerEvent(seed))
    }

    fn assemble_with(&self, cfg: &WindowSpec, events: &[i64], draw: Draw) -> Result<WindowTensors> {
        let mut rng = ChaCha8Rng::seed_from_u64(match draw {
            Draw::Window(seed) => seed,
            Draw::PerEvent(_) => 0,
        });
        let (ft, fw, fm) = (
            self.n_track_features,
            self.n_tower_features,
            cfg.met_features.len(),
        );
        let mut out = WindowTensors {
            tracks: vec![0.0; events.len() * cfg.n_tracks * ft],
            towers: vec![0.0; events.len() * cfg.n_towers * fw],
            met: Vec::with_capacity(events.len() * fm),
        };
        let pick =
            |objs: &Objects, keep: usize, f: usize, dst: &mut [f32], rng: &mut ChaCha8Rng| {
                let m = objs.n.min(keep);
                for (slot, i) in rand::seq::index::sample(rng, objs.n, m)
                    .into_iter()
                    .enumerate()
                {
                    dst[slot * f..(slot + 1) * f].copy_from_slice(&objs.values[i * f..(i + 1) * f]);
                }
            };
        for (k, id) in events.iter().enumerate() {
            let e = self.row(*id)?;
            if let Draw::PerEvent(seed) = draw {
                rng = ChaCha8Rng::seed_from_u64(event_draw_seed(seed, *id));
            }
            let rng = &mut rng;
            let t = cfg.n_tracks * ft;
            pick(
                &self.tracks[e],
                cfg.n_tracks,
                ft,
                &mut out.tracks[k * t..(k + 1) * t],
                rng,
            );
            let w = cfg.n_towers * fw;
            pick(
                &self.towers[e],
                cfg.n_towers,
                fw,
                &mut out.towers[k * w..(k + 1) * w],
                rng,
            );
            out.met.extend_from_slice(&self.met[e]);
        }
        Ok(out)
    }

    /// Replaces every energy-like feature (see [`ENERGY_FEATURES`]) v by
    /// sign(v)·ln(1 + |v|): jet-scale energies span four decades, which a
    /// standardized linear input resolves poorly. Padding stays zero.
    pub fn log_energies(&mut self, cfg: &WindowSpec) {
        let columns = |names: &[String]| -> Vec<usize> {
            names
                .iter()
                .enumerate()
                .filter(|(_, n)| ENERGY_FEATURES.contains(&n.as_str()))
                .map(|(i, _)| i)
                .collect()
        };
        let (tracks, towers, met) = (
            columns(&cfg.track_features),
            columns(&cfg.tower_features),
            columns(&cfg.met_features),
        );
        self.map_objects(|kind, obj| {
            let cols = match kind {
                ObjectKind::Track => &tracks,
                ObjectKind::Tower => &towers,
                ObjectKind::Met => &met,
            };
            for &j in cols {
                obj[j] = obj[j].signum() * obj[j].abs().ln_1p();
            }
        });
    }
}

/// The three kinds of object rows of an event.
#[derive(Clone, Copy)]
enum ObjectKind {
    Track,
    Tower,
    Met,
}

/// Where the object draws of an assembly come from.
#[derive(Clone, Copy)]
enum Draw {
    /// One stream for the whole window.
    Window(u64),
    /// One stream per event, from this seed and the event id.
    PerEvent(u64),
}

/// Feature names that are energies or momenta (GeV, ≥ 0), the ones
/// [`EventStore::log_energies`] compresses.
pub const ENERGY_FEATURES: [&str; 7] = ["P", "PT", "ET", "E", "Eem", "Ehad", "MET"];

/// The seed of event `id`'s object draw under `seed` (SplitMix64 of both),
/// so draws of different events are independent streams.
pub fn event_draw_seed(seed: u64, id: i64) -> u64 {
    let mut z = seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_energies_compress_energy_columns_only() {
        let dir = tempfile::tempdir().unwrap();
        let input = crate::medic::test_support::bundled_events(dir.path(), &["normal"]);
        let cfg = WindowSpec::default();
        let raw = EventStore::load(&cfg, &input).unwrap();
        let mut logged = raw.clone();
        logged.log_energies(&cfg);
        // Tracks: P, PT, Eta, Phi, CtgTheta, C, L; towers: ET, Eta, Phi, E, T, NTimeHits, Eem, Ehad.
        let (a, b) = (&raw.tracks[0].values, &logged.tracks[0].values);
        assert!(raw.tracks[0].n > 0);
        assert_eq!(b[0], a[0].ln_1p());
        assert_eq!(b[1], a[1].ln_1p());
        assert_eq!(b[2..7], a[2..7]);
        let (a, b) = (&raw.towers[0].values, &logged.towers[0].values);
        assert_eq!(
            (b[0], b[3], b[6], b[7]),
            (a[0].ln_1p(), a[3].ln_1p(), a[6].ln_1p(), a[7].ln_1p())
        );
        assert_eq!((b[1], b[2], b[4], b[5]), (a[1], a[2], a[4], a[5]));
        assert_eq!(logged.met[0][0], raw.met[0][0].ln_1p());
        assert_eq!(logged.met[0][1..], raw.met[0][1..]);
    }

    #[test]
    fn standardization_centres_real_objects_and_keeps_padding_zero() {
        let dir = tempfile::tempdir().unwrap();
        let input =
            crate::medic::test_support::bundled_events(dir.path(), &["normal", "hcal_barrel_off"]);
        let cfg = WindowSpec {
            window: 4,
            ..Default::default()
        };
        let mut store = EventStore::load(&cfg, &input).unwrap();
        let ids = store.event_ids.clone();
        let stats = store.feature_stats(&ids).unwrap();
        assert_eq!(stats.track_mean.len(), 7);
        assert!(stats.tower_std.iter().all(|s| *s > 0.0));
        store.standardize(&stats);
        let after = store.feature_stats(&ids).unwrap();
        for (m, s) in after.track_mean.iter().zip(&after.track_std) {
            assert!(m.abs() < 1e-3 && (s - 1.0).abs() < 1e-3, "{m} {s}");
        }
        // Padding slots of an assembled window stay exactly zero.
        let t = store.assemble(&cfg, &ids[..4], 9).unwrap();
        let per_event = 30 * 8;
        for (e, id) in ids[..4].iter().enumerate() {
            let n = store.towers[store.index[id]].n.min(30);
            assert!(
                t.towers[e * per_event + n * 8..(e + 1) * per_event]
                    .iter()
                    .all(|v| *v == 0.0)
            );
        }
    }
}
