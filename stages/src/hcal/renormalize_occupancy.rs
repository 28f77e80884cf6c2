//! `renormalize_occupancy`: the paper's two renormalizations (sec. 4.1.1).
//! N_1 divides each LS's occupancy by its events, γ/ξ (Eq. 2); N_2 divides
//! every (iη, depth) row by its median along iφ (channels are alike along
//! iφ), which removes most of what luminosity and pile-up do to a whole
//! ring. N_2 is reversible: the divisors are stored per LS, and
//! [`crate::hcal::renormalization::denormalize`] maps a model's output back
//! to γ/ξ.

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StageError};
use crate::hcal::renormalization::renormalize;
use crate::hcal::tables::{
    MapRow, check_maps, example_maps_schema, read_rows, renormalized_fields, with_fields,
    write_rows,
};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Adds the renormalized occupancy and its divisors to every map.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RenormalizeOccupancy {}

impl StageConfig for RenormalizeOccupancy {
    const KIND: &'static str = "renormalize_occupancy";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "LS maps -> γ/ξ divided by the median along iφ per (iη, depth), with the divisors kept so the model's output maps back";
    const INPUTS: (usize, usize) = (1, 1);
    const INPUT_ROLES: &'static str = "maps";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![example_maps_schema()]
    }
}

impl Stage for RenormalizeOccupancy {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        check_maps(&inputs[0], "maps")?;
        Ok(vec![OutputSpec {
            name: "main",
            schema: with_fields(&inputs[0], renormalized_fields()),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let input = &ctx.inputs[0];
        let geometry = check_maps(&input.schema, &input.name)?;
        let schema = with_fields(&input.schema, renormalized_fields());
        let mut n = 0;
        for batch in input.batches() {
            let rows: Vec<MapRow> = read_rows(&batch?, &geometry, &input.name)?
                .into_iter()
                .map(|mut r| {
                    if r.events == 0 {
                        return Err(StageError::data(format!(
                            "input `{}`, fill {} LS {}: no events (ξ = 0), γ/ξ is undefined",
                            input.name, r.fill, r.ls
                        )));
                    }
                    let (norm, median) = renormalize(&r.occupancy, r.events, &geometry);
                    r.norm = Some(norm);
                    r.median = Some(median);
                    Ok(r)
                })
                .collect::<Result<_>>()?;
            n += rows.len();
            ctx.output.write("main", write_rows(&schema, &rows)?)?;
        }
        ctx.reporter.info(&format!("{n} maps renormalized"));
        Ok(())
    }
}
