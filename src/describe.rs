//! Human-readable descriptions: `pipeline stages` (every kind with its
//! parameters and output schema) and `pipeline plan`.

use std::fmt::Write;

use arrow::datatypes::Schema;
use dqm_stages::registry::{self, StageKind};
use serde_json::Value;

use crate::cache::Workdir;
use crate::plan::Plan;

/// A compact type name from a JSON Schema node.
fn type_name(schema: &Value) -> String {
    if let Some(c) = schema.get("const") {
        return c.to_string();
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(" | ");
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let names: Vec<String> = options
                .iter()
                .map(type_name)
                .filter(|n| n != "null")
                .collect();
            let optional = options.iter().any(|o| type_name(o) == "null");
            let joined = names.join(" | ");
            return if optional {
                format!("{joined} (optional)")
            } else {
                joined
            };
        }
    }
    match schema.get("type") {
        Some(Value::String(t)) if t == "array" => {
            let item = schema
                .get("items")
                .map(type_name)
                .unwrap_or_else(|| "any".into());
            match (schema.get("minItems"), schema.get("maxItems")) {
                (Some(a), Some(b)) if a == b => format!("[{item}; {a}]"),
                _ => format!("[{item}]"),
            }
        }
        Some(Value::String(t)) if t == "object" => {
            match schema.get("properties").and_then(Value::as_object) {
                Some(props) => {
                    let fields: Vec<String> = props
                        .iter()
                        .map(|(k, v)| format!("{k}: {}", type_name(v)))
                        .collect();
                    format!("{{{}}}", fields.join(", "))
                }
                None => "object".into(),
            }
        }
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => {
            let names: Vec<&str> = ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect();
            let optional = ts.iter().any(|t| t == "null");
            let base = names.join(" | ");
            if optional {
                format!("{base} (optional)")
            } else {
                base
            }
        }
        _ => "any".into(),
    }
}

fn describe_schema(out: &mut String, schema: &Schema) {
    for field in schema.fields() {
        let doc = dqm_schemas::field_doc(field).unwrap_or("");
        let null = if field.is_nullable() {
            ", nullable"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "      {:<18} {}{null}  {doc}",
            field.name(),
            field.data_type()
        );
    }
}

/// One kind, as `pipeline stages` prints it.
pub fn describe_kind(kind: &StageKind) -> String {
    let mut out = String::new();
    let (min, max) = kind.inputs;
    let mut inputs = if max == 0 {
        "no input".to_string()
    } else if min == max {
        format!("{min} input{}", if min == 1 { "" } else { "s" })
    } else {
        format!("{min}-{max} inputs")
    };
    if !kind.input_roles.is_empty() {
        inputs = format!("{inputs}: {}", kind.input_roles);
    }
    let _ = writeln!(
        out,
        "{} (v{}, {inputs})\n  {}",
        kind.name, kind.version, kind.summary
    );
    let schema = (kind.params_schema)();
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let _ = writeln!(out, "  params:");
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let default = match prop.get("default") {
                Some(d) => format!(" = {d}"),
                None if required.contains(&name.as_str()) => " (required)".into(),
                None => String::new(),
            };
            let _ = writeln!(out, "    {name}: {}{default}", type_name(prop));
            if let Some(desc) = prop.get("description").and_then(Value::as_str) {
                for line in desc.lines() {
                    let _ = writeln!(out, "        {line}");
                }
            }
        }
    }
    match (kind.describe_outputs)() {
        Ok(Some(outputs)) => {
            for (i, o) in outputs.iter().enumerate() {
                let table = if i == 0 {
                    "<stage>".to_string()
                } else {
                    format!("<stage>_{}", o.name)
                };
                let _ = writeln!(out, "  output `{}` (SQL table {table}):", o.name);
                describe_schema(&mut out, &o.schema);
            }
        }
        Ok(None) => {
            let _ = writeln!(out, "  output `main`: the columns of the files it reads");
        }
        // A kind whose documented example does not plan: say so rather than
        // print nothing (the layout test keeps every shipped kind out of here).
        Err(e) => {
            let _ = writeln!(out, "  outputs: not derivable from the example inputs: {e}");
        }
    }
    out
}

/// Every kind.
pub fn describe_all() -> String {
    registry::all()
        .iter()
        .map(describe_kind)
        .collect::<Vec<_>>()
        .join("\n")
}

/// `pipeline plan`: the DAG with keys, cache state and paths.
pub fn describe_plan(plan: &Plan, workdir: &Workdir) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pipeline `{}` ({}), workdir {}",
        plan.spec.name,
        plan.spec.path.display(),
        workdir.root.display()
    );
    for stage in &plan.stages {
        let state = if workdir.cached(stage).is_some() {
            "cached".to_string()
        } else if stage.shards > 1 {
            format!(
                "to run in {} shards ({} done)",
                stage.shards,
                workdir.parts_done(stage)
            )
        } else {
            "to run".to_string()
        };
        let inputs: Vec<String> = stage
            .inputs
            .iter()
            .map(|i| {
                if i.output == "main" {
                    i.stage.clone()
                } else {
                    format!("{}.{}", i.stage, i.output)
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "\n{} [{}] {state}\n  key     {}\n  inputs  {}\n  path    {}",
            stage.id,
            stage.kind,
            &stage.key[..16],
            if inputs.is_empty() {
                "-".into()
            } else {
                inputs.join(", ")
            },
            workdir.entry(stage).display()
        );
        for o in &stage.outputs {
            let cols: Vec<&str> = o
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            let _ = writeln!(
                out,
                "  table   {} ({}): {}",
                stage.table_name(o.name),
                o.name,
                cols.join(", ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_doc_lists_parameters_with_defaults_and_descriptions() {
        let text = describe_all();
        assert!(text.contains("dinamo_s"), "{text}");
        assert!(
            text.contains("alpha: number | \"auto\" = \"auto\""),
            "{text}"
        );
        assert!(text.contains("historical_runs: integer = 1000"), "{text}");
        assert!(text.contains("EWMA smoothing factor"), "{text}");
        assert!(text.contains("path: string (required)"), "{text}");
        assert!(
            text.contains("files: [{label: string, path: string}]"),
            "{text}"
        );
        // Output schemas with field docs.
        assert!(
            text.contains("chi2") && text.contains("Reduced chi-square"),
            "{text}"
        );
        assert!(text.contains("SQL table <stage>_summary"), "{text}");
    }
}
