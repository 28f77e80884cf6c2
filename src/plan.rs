//! Turns a parsed pipeline into a validated DAG: every kind known, every
//! parameter accepted, every input present, no cycle, every output schema
//! derived, and every stage's content-addressed cache key computed, all
//! before anything runs.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Result, bail};
use arrow::datatypes::SchemaRef;
use dqm_stages::registry;
use dqm_stages::stage::{OutputSpec, Stage, check_input_count};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::spec::PipelineSpec;

/// Bumped when the engine's on-disk layout or keying changes.
const ENGINE_FORMAT: u32 = 1;

/// A reference to one output table of an upstream stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRef {
    pub stage: String,
    pub output: String,
}

/// One stage, ready to run.
pub struct PlannedStage {
    pub id: String,
    pub kind: &'static str,
    pub version: u32,
    pub stage: Box<dyn Stage>,
    /// Canonical parameters: defaults filled in.
    pub params: Value,
    pub inputs: Vec<InputRef>,
    pub outputs: Vec<OutputSpec>,
    /// Hex digest of kind, version, parameters, input keys and external files.
    pub key: String,
    /// Parts the work is split into (1: not sharded).
    pub shards: usize,
    pub resources: crate::spec::Resources,
}

impl PlannedStage {
    /// Directory name of this stage's output in the cache.
    pub fn cache_name(&self) -> String {
        format!("{}-{}", self.kind, &self.key[..16])
    }

    pub fn output(&self, name: &str) -> Option<&OutputSpec> {
        self.outputs.iter().find(|o| o.name == name)
    }

    /// SQL table name of an output: the stage id for the main output,
    /// `<stage>_<output>` for the others.
    pub fn table_name(&self, output: &str) -> String {
        if self.outputs.first().is_some_and(|o| o.name == output) {
            self.id.clone()
        } else {
            format!("{}_{output}", self.id)
        }
    }
}

/// A validated pipeline in dependency order.
pub struct Plan {
    pub spec: PipelineSpec,
    pub stages: Vec<PlannedStage>,
}

impl Plan {
    pub fn stage(&self, id: &str) -> Option<&PlannedStage> {
        self.stages.iter().find(|s| s.id == id)
    }

    /// `id` and every stage it depends on, transitively.
    pub fn ancestors(&self, id: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo = vec![id.to_string()];
        while let Some(s) = todo.pop() {
            if out.insert(s.clone())
                && let Some(stage) = self.stage(&s)
            {
                todo.extend(stage.inputs.iter().map(|i| i.stage.clone()));
            }
        }
        out
    }

    /// `id` and every stage that depends on it, transitively.
    pub fn descendants(&self, id: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::from([id.to_string()]);
        // Stages are in dependency order: one forward sweep suffices.
        for stage in &self.stages {
            if stage.inputs.iter().any(|i| out.contains(&i.stage)) {
                out.insert(stage.id.clone());
            }
        }
        out
    }
}

fn parse_input(text: &str) -> InputRef {
    match text.split_once('.') {
        Some((stage, output)) => InputRef {
            stage: stage.into(),
            output: output.into(),
        },
        None => InputRef {
            stage: text.into(),
            output: String::new(),
        },
    }
}

/// Orders stage ids so every stage comes after its inputs (YAML order among
/// equals); reports the stages on a cycle if there is one.
fn topological_order(spec: &PipelineSpec) -> Result<Vec<String>> {
    let mut indegree: HashMap<&str, usize> = HashMap::new();
    for (id, stage) in &spec.stages {
        indegree.insert(id, stage.inputs.len());
    }
    let mut order: Vec<String> = Vec::new();
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    loop {
        let next = spec.stages.iter().find(|(id, stage)| {
            !placed.contains(id.as_str())
                && stage
                    .inputs
                    .iter()
                    .all(|i| placed.contains(parse_input(i).stage.as_str()))
        });
        match next {
            Some((id, _)) => {
                placed.insert(id);
                order.push(id.clone());
            }
            None => break,
        }
    }
    if order.len() < spec.stages.len() {
        let stuck: Vec<&str> = spec
            .stages
            .keys()
            .map(String::as_str)
            .filter(|id| !placed.contains(id))
            .collect();
        bail!(
            "{}: the stages {} form a cycle (each waits for another's output)",
            spec.path.display(),
            stuck
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(order)
}

fn cache_key(
    kind: &str,
    version: u32,
    params: &Value,
    inputs: &[(String, String)],
    external: &Option<String>,
) -> String {
    let canonical = json!({
        "engine": ENGINE_FORMAT,
        "kind": kind,
        "version": version,
        "params": params,
        "inputs": inputs.iter().map(|(key, output)| json!({"key": key, "output": output})).collect::<Vec<_>>(),
        "external": external,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Validates a pipeline and computes its plan.
pub fn plan(spec: PipelineSpec) -> Result<Plan> {
    let known: Vec<&str> = registry::all().iter().map(|k| k.name).collect();
    // Shape checks that do not depend on order.
    for (id, stage) in &spec.stages {
        let at = spec.location(id, None);
        if registry::find(&stage.kind).is_none() {
            bail!(
                "{at}: stage `{id}`: unknown kind `{}` (known kinds: {})",
                stage.kind,
                known.join(", ")
            );
        }
        for input in &stage.inputs {
            let r = parse_input(input);
            if !spec.stages.contains_key(&r.stage) {
                bail!("{at}: stage `{id}`: input `{input}` is not a stage of this pipeline");
            }
            if r.stage == *id {
                bail!("{at}: stage `{id}` lists itself as an input (a cycle)");
            }
        }
    }
    let order = topological_order(&spec)?;
    let mut planned: Vec<PlannedStage> = Vec::new();
    for id in order {
        let decl = &spec.stages[&id];
        let kind = registry::find(&decl.kind).expect("checked above");
        let configured = (kind.configure)(decl.params.clone()).map_err(|e| {
            // An unknown field has no path of its own; its name is in the message.
            let param = if e.path.is_empty() || e.path == "." {
                e.message.split('`').nth(1).unwrap_or_default().to_string()
            } else {
                e.path.clone()
            };
            anyhow::anyhow!(
                "{}: stage `{id}` ({}): {e}",
                spec.location(&id, Some(&param)),
                kind.name
            )
        })?;
        let at = spec.location(&id, None);
        check_input_count(kind.inputs, kind.input_roles, decl.inputs.len())
            .map_err(|e| anyhow::anyhow!("{at}: stage `{id}` ({}) {e}", kind.name))?;
        let mut inputs = Vec::new();
        let mut input_schemas: Vec<SchemaRef> = Vec::new();
        let mut input_keys = Vec::new();
        for text in &decl.inputs {
            let mut r = parse_input(text);
            let upstream = planned
                .iter()
                .find(|p| p.id == r.stage)
                .expect("topological order");
            if r.output.is_empty() {
                r.output = upstream.outputs[0].name.to_string();
            }
            let Some(out) = upstream.output(&r.output) else {
                let names: Vec<&str> = upstream.outputs.iter().map(|o| o.name).collect();
                bail!(
                    "{at}: stage `{id}`: `{}` has no output `{}` (it has: {})",
                    r.stage,
                    r.output,
                    names.join(", ")
                );
            };
            input_schemas.push(out.schema.clone());
            input_keys.push((upstream.key.clone(), r.output.clone()));
            inputs.push(r);
        }
        let stage = configured.stage;
        if decl.shards == 0 {
            bail!("{at}: stage `{id}`: `shards` must be at least 1");
        }
        if decl.shards > 1 && !stage.shardable() {
            bail!(
                "{at}: stage `{id}` ({}) cannot be sharded: its work is not split per dataset, seed or file (README, \"Running on a cluster\", lists the kinds that can)",
                kind.name
            );
        }
        // A stage names its inputs by role (`input`, `models`, ...): say
        // which upstream outputs filled them.
        let outputs = stage.outputs(&input_schemas).map_err(|e| {
            let given: Vec<String> = inputs
                .iter()
                .map(|r| format!("`{}.{}`", r.stage, r.output))
                .collect();
            if given.is_empty() {
                anyhow::anyhow!("{at}: stage `{id}` ({}): {e}", kind.name)
            } else {
                anyhow::anyhow!(
                    "{at}: stage `{id}` ({}): {e} (its inputs, in order: {})",
                    kind.name,
                    given.join(", ")
                )
            }
        })?;
        let external = stage
            .external_fingerprint()
            .map_err(|e| anyhow::anyhow!("{at}: stage `{id}` ({}): {e}", kind.name))?;
        let key = cache_key(
            kind.name,
            kind.version,
            &configured.params,
            &input_keys,
            &external,
        );
        planned.push(PlannedStage {
            id,
            kind: kind.name,
            version: kind.version,
            stage,
            params: configured.params,
            inputs,
            outputs,
            key,
            shards: decl.shards,
            resources: decl.resources.clone(),
        });
    }
    // SQL table names must be unique across the pipeline.
    let mut tables: HashMap<String, String> = HashMap::new();
    for stage in &planned {
        for out in &stage.outputs {
            let table = stage.table_name(out.name);
            if let Some(other) = tables.insert(table.clone(), stage.id.clone()) {
                bail!(
                    "{}: table name `{table}` is used by both `{other}` and `{}`; rename one stage",
                    spec.path.display(),
                    stage.id
                );
            }
        }
    }
    Ok(Plan {
        spec,
        stages: planned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plan_of(yaml: &str) -> Result<Plan> {
        plan(PipelineSpec::parse(yaml, Path::new("p.yaml"))?)
    }

    fn error_of(yaml: &str) -> String {
        match plan_of(yaml) {
            Ok(_) => panic!("planned without error:\n{yaml}"),
            Err(e) => e.to_string(),
        }
    }

    const BASE: &str = "name: p\nstages:\n  runs:\n    kind: synth_runs\n    params: { seeds: [1], n_runs: 20, n_bad: 2 }\n  reference:\n    kind: dinamo_s\n    inputs: [runs]\n  metrics:\n    kind: dqm_metrics\n    inputs: [reference]\n";

    #[test]
    fn plans_in_dependency_order_with_distinct_keys() {
        let p = plan_of(BASE).unwrap();
        let ids: Vec<&str> = p.stages.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["runs", "reference", "metrics"]);
        assert_eq!(p.stages[2].outputs.len(), 2);
        assert_eq!(p.stages[2].table_name("summary"), "metrics_summary");
        assert_eq!(
            p.descendants("reference"),
            BTreeSet::from(["reference".into(), "metrics".into()])
        );
        assert_eq!(
            p.ancestors("reference"),
            BTreeSet::from(["reference".into(), "runs".into()])
        );
    }

    #[test]
    fn defaults_do_not_change_the_key_but_parameters_do() {
        let a = plan_of(BASE).unwrap();
        let b = plan_of(&BASE.replace(
            "inputs: [runs]\n",
            "inputs: [runs]\n    params: { alpha: auto, historical_runs: 1000 }\n",
        ))
        .unwrap();
        assert_eq!(a.stages[1].key, b.stages[1].key);
        let c = plan_of(&BASE.replace(
            "inputs: [runs]\n",
            "inputs: [runs]\n    params: { alpha: 0.3 }\n",
        ))
        .unwrap();
        assert_eq!(a.stages[0].key, c.stages[0].key);
        assert_ne!(a.stages[1].key, c.stages[1].key);
        assert_ne!(
            a.stages[2].key, c.stages[2].key,
            "a changed input changes every key downstream"
        );
    }

    #[test]
    fn validation_errors_name_the_stage_and_line() {
        let unknown_kind = error_of(&BASE.replace("kind: dqm_metrics", "kind: dqm_metricz"));
        assert!(
            unknown_kind.contains("stage `metrics`") && unknown_kind.contains("dqm_metricz"),
            "{unknown_kind}"
        );
        assert!(unknown_kind.contains("p.yaml:10"), "{unknown_kind}");

        let typo = error_of(&BASE.replace("n_bad: 2", "n_bda: 2"));
        assert!(
            typo.contains("stage `runs`") && typo.contains("n_bda") && typo.contains("p.yaml:5"),
            "{typo}"
        );

        let mistyped = error_of(&BASE.replace("n_runs: 20", "n_runs: many"));
        assert!(
            mistyped.contains("n_runs") && mistyped.contains("stage `runs`"),
            "{mistyped}"
        );

        let missing = error_of(&BASE.replace("inputs: [reference]", "inputs: [referense]"));
        assert!(
            missing.contains("referense") && missing.contains("stage `metrics`"),
            "{missing}"
        );

        let cycle = "name: c\nstages:\n  a:\n    kind: dinamo_s\n    inputs: [b]\n  b:\n    kind: dinamo_s\n    inputs: [a]\n";
        let err = error_of(cycle);
        assert!(
            err.contains("cycle") && err.contains("`a`") && err.contains("`b`"),
            "{err}"
        );

        let arity = error_of(&BASE.replace("inputs: [reference]", "inputs: []"));
        assert!(
            arity.contains(
                "(dqm_metrics) takes 1 to 2 inputs (scores, optional bands), got 0 input table(s)"
            ),
            "{arity}"
        );
    }

    #[test]
    fn schema_mismatch_is_caught_before_running() {
        // dqm_metrics cannot read the raw runs table: no `flagged` column.
        let err = error_of(&BASE.replace("inputs: [reference]", "inputs: [runs]"));
        assert!(
            err.contains("stage `metrics`") && err.contains("flagged"),
            "{err}"
        );
    }

    #[test]
    fn shards_are_checked_and_do_not_change_the_key() {
        let sharded = BASE.replace(
            "kind: dinamo_s\n",
            "kind: dinamo_s\n    shards: 4\n    resources: { cpus: 2, time: \"00:30:00\" }\n",
        );
        assert_ne!(sharded, BASE);
        let (a, b) = (plan_of(BASE).unwrap(), plan_of(&sharded).unwrap());
        assert_eq!(a.stages[1].key, b.stages[1].key);
        assert_eq!(b.stages[1].shards, 4);
        assert_eq!(b.stages[1].resources.cpus, Some(2));
        let zero = error_of(&sharded.replace("shards: 4", "shards: 0"));
        assert!(zero.contains("`shards` must be at least 1"), "{zero}");
        let typo = error_of(&sharded.replace("cpus: 2", "cpu: 2"));
        assert!(typo.contains("cpu"), "{typo}");
        let union = "name: u\nstages:\n  runs:\n    kind: synth_runs\n    params: { seeds: [1] }\n  all:\n    kind: union\n    shards: 2\n    inputs: [runs]\n";
        let err = error_of(union);
        assert!(
            err.contains("stage `all` (union) cannot be sharded") && err.starts_with("p.yaml:"),
            "{err}"
        );
    }
}
