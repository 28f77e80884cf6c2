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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hcal::geometry::Subdetector;
    use crate::hcal::lumi_maps::LumiMaps;
    use crate::hcal::renormalization::denormalize;
    use crate::hcal::tables::read_all_rows;
    use crate::hcal::test_support::flat_rates;
    use crate::in_memory::{input_from_batch, run_in_memory};
    use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch};
    use std::sync::Arc;

    #[test]
    fn every_map_gets_its_reversible_renormalization_and_an_empty_ls_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(format!("{name}.parquet"));
        let rates = input_from_batch("rates", &flat_rates(0.02), &path("rates")).unwrap();
        let maps = LumiMaps {
            subdetector: Subdetector::Forward,
            fills: 2,
            ls_per_fill: [4, 6],
            ..Default::default()
        };
        let raw = run_in_memory(&maps, &[rates]).unwrap().table("main");
        let input = input_from_batch("maps", &raw, &path("raw")).unwrap();
        let stage = RenormalizeOccupancy::default();
        let out = run_in_memory(&stage, std::slice::from_ref(&input))
            .unwrap()
            .table("main");
        assert_eq!(out.num_rows(), raw.num_rows());
        assert_eq!(
            out.schema(),
            stage.outputs(std::slice::from_ref(&input.schema)).unwrap()[0].schema
        );
        // The divisors bring every channel back to its γ (ξ × γ/ξ).
        let norm = input_from_batch("norm", &out, &path("norm")).unwrap();
        let geometry = check_maps(&norm.schema, "norm").unwrap();
        for row in read_all_rows(&norm, &geometry).unwrap() {
            let (n, d) = (row.norm.as_ref().unwrap(), row.median.as_ref().unwrap());
            for (back, gamma) in denormalize(n, d, &geometry).iter().zip(&row.occupancy) {
                assert!((back * row.events as f64 - gamma).abs() <= 1e-9 * gamma.max(1.0));
            }
        }
        // An LS without events has no γ/ξ: refused, naming its fill and LS.
        let at = raw.schema().index_of("events").unwrap();
        let mut columns: Vec<ArrayRef> = raw.columns().to_vec();
        let mut events: Vec<i64> = (0..raw.num_rows())
            .map(|i| {
                raw.column(at)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .value(i)
            })
            .collect();
        events[2] = 0;
        columns[at] = Arc::new(Int64Array::from(events));
        let empty = RecordBatch::try_new(raw.schema(), columns).unwrap();
        let input = input_from_batch("maps", &empty, &path("empty")).unwrap();
        let err = run_in_memory(&stage, &[input]).unwrap_err().to_string();
        assert!(
            err.contains("input `maps`, fill 1 LS 3: no events"),
            "{err}"
        );
    }
}
