//! The tables between the lumisection stages: LS of runs (with the events
//! drawn for each) and per-LS histograms of monitored elements.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use dqm_schemas::{doc_field, f64_list};

fn ls_fields() -> Vec<Field> {
    let f = |name, t, doc| doc_field(name, t, false, doc);
    vec![
        f("run", DataType::Int64, "Run number"),
        f("ls", DataType::Int64, "Lumisection within the run, from 1"),
        f("events", DataType::Int64, "Events recorded in the LS"),
        f(
            "lumi",
            DataType::Float64,
            "Integrated luminosity of the LS (pb⁻¹)",
        ),
        f(
            "truth",
            DataType::Utf8,
            "`good`, or the configuration the LS's bad events come from",
        ),
        f("bad", DataType::Boolean, "Truth: the LS is bad"),
    ]
}

/// `lumi_runs`: one row per LS with the ids of its events.
pub fn runs_schema() -> SchemaRef {
    let mut fields = ls_fields();
    fields.push(doc_field(
        "event_ids",
        DataType::List(Arc::new(Field::new("item", DataType::Int64, false))),
        false,
        "`event_id`s (events table) drawn for the LS",
    ));
    Arc::new(Schema::new(fields))
}

/// `ls_histograms`: one row per LS and monitored element.
pub fn histograms_schema() -> SchemaRef {
    let mut fields = ls_fields();
    fields.push(doc_field(
        "me",
        DataType::Utf8,
        false,
        "Monitored element (histogram name)",
    ));
    fields.push(doc_field(
        "counts",
        f64_list(),
        false,
        "Bin contents: underflow, the ME's bins, overflow (unit area when normalized)",
    ));
    fields.push(doc_field(
        "entries",
        DataType::Int64,
        false,
        "Values filled (before normalization)",
    ));
    Arc::new(Schema::new(fields))
}
