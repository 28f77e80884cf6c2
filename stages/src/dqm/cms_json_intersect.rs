//! `cms_json_intersect`: a certificate (`certify`'s `certificate` output,
//! one list per method, or any LS list) intersected with the CMS lists it
//! must respect — the Golden JSON, the DCS-only JSON — written back as CMS
//! JSON files (`<list>.json`) and as a table of LS ranges: the LS a shifter
//! could certify that are also in every given list.

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::dqm::tables::{ls_lists_batch, ls_lists_schema, read_ls_lists, require_ls_lists};
use crate::error::{Result, StageError};
use crate::stage::{OutputSpec, RunContext, Stage, StageConfig};

/// Intersects the lists of the first input with every list of the others.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CmsJsonIntersect {}

impl StageConfig for CmsJsonIntersect {
    const KIND: &'static str = "cms_json_intersect";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "A certificate intersected with Golden/DCS-only JSON lists, written back as CMS JSON files and LS ranges";
    const INPUTS: (usize, usize) = (2, 16);
    const INPUT_ROLES: &'static str = "a certificate (or LS list), then the lists it must respect";

    fn doc_inputs() -> Vec<SchemaRef> {
        vec![ls_lists_schema(), ls_lists_schema()]
    }
}

impl Stage for CmsJsonIntersect {
    fn outputs(&self, inputs: &[SchemaRef]) -> Result<Vec<OutputSpec>> {
        for (k, schema) in inputs.iter().enumerate() {
            require_ls_lists(
                schema,
                &format!("input {}", k + 1),
                "LS ranges (`cms_json`, `certify.certificate`)",
            )?;
        }
        Ok(vec![OutputSpec {
            name: "main",
            schema: ls_lists_schema(),
        }])
    }

    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let why = "LS ranges (`cms_json`, `certify.certificate`)";
        let certificate = read_ls_lists(&ctx.inputs[0], why)?;
        if certificate.is_empty() {
            return Err(StageError::data(format!(
                "input `{}` holds no LS range",
                ctx.inputs[0].name
            )));
        }
        let mut constraints = Vec::new();
        for input in &ctx.inputs[1..] {
            let lists = read_ls_lists(input, why)?;
            if lists.is_empty() {
                return Err(StageError::data(format!(
                    "input `{}` holds no LS range: an empty list would reject everything",
                    input.name
                )));
            }
            constraints.extend(lists);
        }
        for (label, ranges) in &certificate {
            let mut kept = ranges.clone();
            for (_, list) in &constraints {
                kept = kept.intersect(list);
            }
            let names: Vec<&str> = constraints.iter().map(|(n, _)| n.as_str()).collect();
            ctx.reporter.info(&format!(
                "{label}: {} LS certified, {} also in {}",
                ranges.ls_count(),
                kept.ls_count(),
                names.join(" and ")
            ));
            let file = ctx.artifacts.join(format!("{label}.json"));
            std::fs::write(&file, kept.to_json()).map_err(|e| StageError::io(&file, e))?;
            ctx.output.write("main", ls_lists_batch(label, &kept)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dqm::ls_ranges::LsRanges;
    use crate::in_memory::{input_from_batch, run_in_memory};

    #[test]
    fn a_certificate_within_the_dcs_list_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        let list = |name: &str, json: &str| {
            let batch = ls_lists_batch(name, &LsRanges::from_json(json).unwrap()).unwrap();
            input_from_batch(name, &batch, &dir.path().join(format!("{name}.parquet"))).unwrap()
        };
        let certificate = list("ae", r#"{"1": [[1, 10], [20, 30]], "2": [[1, 5]]}"#);
        let dcs = list("dcs", r#"{"1": [[3, 25]]}"#);
        let golden = list("golden", r#"{"1": [[1, 24]], "2": [[1, 100]]}"#);
        let out = run_in_memory(&CmsJsonIntersect {}, &[certificate, dcs, golden]).unwrap();
        let kept = out.table("main");
        let first =
            arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(kept.column(2));
        let last =
            arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(kept.column(3));
        // Run 1: [1, 10] ∩ [3, 25] ∩ [1, 24] = [3, 10]; [20, 30] -> [20, 24];
        // run 2 is not in the DCS list at all.
        assert_eq!(kept.num_rows(), 2);
        assert_eq!((first.value(0), last.value(0)), (3, 10));
        assert_eq!((first.value(1), last.value(1)), (20, 24));
    }
}
