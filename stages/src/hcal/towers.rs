//! The HCAL towers of a `delphes_convert` events table, event by event: the
//! one way this family reads Delphes events (`hcal_rates`, `delphes_maps`).

use arrow::array::{AsArray, ListArray};
use arrow::datatypes::{DataType, Float32Type, SchemaRef};

use crate::arrow_util::{cast_column, is_numeric_list};
use crate::error::{Result, StageError};
use crate::input::{Input, require_column};

/// The tower columns read: η, φ and hadronic energy of every tower.
pub const TOWER_COLUMNS: [&str; 3] = ["tower_eta", "tower_phi", "tower_ehad"];

/// The events table these stages document as their input.
pub fn example_events_schema() -> SchemaRef {
    dqm_schemas::events::schema(&[], &["Eta".into(), "Phi".into(), "Ehad".into()], &[])
}

/// Checks at `plan` that the events have the tower columns (and `label`).
pub fn check_events(schema: &SchemaRef, needs_label: bool) -> Result<()> {
    let why = "HCAL towers of a `delphes_convert` events table";
    for c in TOWER_COLUMNS {
        require_column(schema, "events", c, why, "a numeric list", is_numeric_list)?;
    }
    if needs_label {
        require_column(schema, "events", "label", why, "Utf8", |t| {
            t == &DataType::Utf8
        })?;
    }
    Ok(())
}

/// One event's towers.
pub struct Towers<'a> {
    /// The event's configuration label (read when asked for).
    pub label: Option<&'a str>,
    pub eta: &'a [f32],
    pub phi: &'a [f32],
    pub ehad: &'a [f32],
}

impl Towers<'_> {
    /// (η, φ) of the towers with Ehad above `ehad_min`.
    pub fn hcal(&self, ehad_min: f64) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.eta
            .iter()
            .zip(self.phi)
            .zip(self.ehad)
            .filter(move |(_, e)| f64::from(**e) > ehad_min)
            .map(|((&h, &p), _)| (f64::from(h), f64::from(p)))
    }
}

/// Calls `each` with the towers of every event of `input`, in order.
pub fn for_each_event(
    input: &Input,
    with_label: bool,
    mut each: impl FnMut(&Towers<'_>) -> Result<()>,
) -> Result<()> {
    let f32_list = dqm_schemas::events::f32_list();
    for batch in input.batches() {
        let batch = batch?;
        let col = |n: &str| {
            batch
                .schema()
                .index_of(n)
                .map(|i| batch.column(i).clone())
                .map_err(|_| {
                    StageError::data(format!("input `{}` has no column `{n}`", input.name))
                })
        };
        let lists = TOWER_COLUMNS
            .iter()
            .map(|c| cast_column(&col(c)?, &f32_list, &input.name, c))
            .collect::<Result<Vec<_>>>()?;
        let labels = if with_label {
            Some(cast_column(
                &col("label")?,
                &DataType::Utf8,
                &input.name,
                "label",
            )?)
        } else {
            None
        };
        let [eta, phi, ehad] = [&lists[0], &lists[1], &lists[2]].map(|l| l.as_list::<i32>());
        for row in 0..batch.num_rows() {
            let values =
                |l: &ListArray| l.value(row).as_primitive::<Float32Type>().values().to_vec();
            let (e, p, h) = (values(eta), values(phi), values(ehad));
            if e.len() != p.len() || e.len() != h.len() {
                return Err(StageError::data(format!(
                    "input `{}`, row {row}: tower_eta, tower_phi and tower_ehad differ in length",
                    input.name
                )));
            }
            each(&Towers {
                label: labels.as_ref().map(|l| l.as_string::<i32>().value(row)),
                eta: &e,
                phi: &p,
                ehad: &h,
            })?;
        }
    }
    Ok(())
}
