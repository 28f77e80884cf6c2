//! The pipeline YAML file: parsing with source locations, and `--set`
//! overrides. Only syntax and shape are checked here; what the stages make of
//! their parameters is checked by the planner.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

/// A parsed pipeline file.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    pub name: String,
    pub path: PathBuf,
    pub stages: IndexMap<String, StageSpec>,
}

/// One stage as declared in YAML.
#[derive(Debug, Clone)]
pub struct StageSpec {
    pub kind: String,
    pub inputs: Vec<String>,
    pub params: Value,
    /// 1-based line of the stage's declaration (0 when unknown).
    pub line: u64,
    /// Line of each top-level parameter, to point errors at it.
    pub param_lines: IndexMap<String, u64>,
    /// Parts the stage's work is split into (1: not sharded). Not part of
    /// the cache key: the concatenated parts are the unsharded output.
    pub shards: usize,
    /// What a batch job of this stage asks the scheduler for.
    pub resources: Resources,
}

/// Batch resources of one stage (`resources:` in YAML); unset fields take
/// the `pipeline submit` defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPUs per task (`--cpus-per-task`); also the job's thread count.
    pub cpus: Option<u32>,
    /// Memory per node, Slurm syntax (`--mem`, e.g. `4G`).
    pub mem: Option<String>,
    /// GPUs (`--gres=gpu:N`).
    pub gpus: Option<u32>,
    /// Wall-time limit, Slurm syntax (`--time`, e.g. `01:00:00`).
    pub time: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    name: String,
    stages: IndexMap<String, Spanned<RawStage>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    kind: String,
    #[serde(default)]
    inputs: Vec<String>,
    #[serde(default)]
    params: Option<IndexMap<String, Spanned<Value>>>,
    #[serde(default)]
    shards: Option<usize>,
    #[serde(default)]
    resources: Option<Resources>,
}

impl PipelineSpec {
    /// Reads and parses a pipeline file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read pipeline {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parses pipeline YAML; `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw: RawPipeline =
            serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if raw.name.trim().is_empty() {
            bail!("{}: `name` is empty", path.display());
        }
        if raw.stages.is_empty() {
            bail!("{}: `stages` is empty", path.display());
        }
        let stages = raw
            .stages
            .into_iter()
            .map(|(id, stage)| {
                let line = stage.referenced.line();
                let stage = stage.value;
                let params = stage.params.unwrap_or_default();
                let param_lines = params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.referenced.line()))
                    .collect();
                let params = Value::Object(params.into_iter().map(|(k, v)| (k, v.value)).collect());
                (
                    id,
                    StageSpec {
                        kind: stage.kind,
                        inputs: stage.inputs,
                        params,
                        line,
                        param_lines,
                        shards: stage.shards.unwrap_or(1),
                        resources: stage.resources.unwrap_or_default(),
                    },
                )
            })
            .collect();
        Ok(Self {
            name: raw.name,
            path: path.to_path_buf(),
            stages,
        })
    }

    /// Applies `stage.param=value` overrides; the value is read as YAML, so
    /// `runs.seeds=[1,2]` and `train.max_epochs=5` keep their types, and
    /// `train.ppo.clip=0.1` sets one field of a nested parameter.
    pub fn apply_overrides(&mut self, overrides: &[String]) -> Result<()> {
        for item in overrides {
            let (target, value) = item
                .split_once('=')
                .with_context(|| format!("--set {item}: expected STAGE.PARAM=VALUE"))?;
            let (stage, param) = target
                .split_once('.')
                .with_context(|| format!("--set {item}: expected STAGE.PARAM=VALUE"))?;
            let spec = self.stages.get_mut(stage).with_context(|| {
                format!(
                    "--set {item}: no stage `{stage}` in {}",
                    self.path.display()
                )
            })?;
            let value: Value = serde_saphyr::from_str(value)
                .map_err(|e| anyhow::anyhow!("--set {item}: value is not YAML: {e}"))?;
            // `env.rewards.shifter_call=1` sets one field of a nested
            // parameter and keeps its siblings.
            let mut keys: Vec<&str> = param.split('.').collect();
            let last = keys.pop().expect("split yields one item");
            let mut map = spec.params.as_object_mut().expect("params are a mapping");
            for key in keys {
                let entry = map
                    .entry(key.to_string())
                    .or_insert_with(|| Value::Object(Default::default()));
                map = entry.as_object_mut().with_context(|| {
                    format!("--set {item}: `{key}` is not a mapping of parameters")
                })?;
            }
            map.insert(last.to_string(), value);
        }
        Ok(())
    }

    /// "file:line" for a stage, and for one of its parameters when known.
    pub fn location(&self, stage: &str, param: Option<&str>) -> String {
        let spec = &self.stages[stage];
        let line = param
            .map(|p| p.split(['.', '[']).next().unwrap_or(p))
            .and_then(|p| spec.param_lines.get(p).copied())
            .filter(|&l| l > 0)
            .unwrap_or(spec.line);
        if line > 0 {
            format!("{}:{line}", self.path.display())
        } else {
            self.path.display().to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "name: demo\nstages:\n  runs:\n    kind: synth_runs\n    params: { seeds: [70], n_runs: 50 }\n  reference:\n    kind: dinamo_s\n    inputs: [runs]\n    params:\n      alpha: 0.5\n      threshold: auto\n";

    #[test]
    fn parses_stages_in_order_with_lines() {
        let spec = PipelineSpec::parse(YAML, Path::new("demo.yaml")).unwrap();
        assert_eq!(spec.name, "demo");
        assert_eq!(
            spec.stages.keys().collect::<Vec<_>>(),
            ["runs", "reference"]
        );
        let reference = &spec.stages["reference"];
        assert_eq!(reference.inputs, ["runs"]);
        assert_eq!(reference.params["alpha"], serde_json::json!(0.5));
        assert_eq!(
            spec.location("reference", Some("threshold")),
            "demo.yaml:11"
        );
        assert!(spec.location("runs", None).starts_with("demo.yaml:"));
    }

    #[test]
    fn rejects_duplicate_stage_ids_and_unknown_keys() {
        let dup = "name: d\nstages:\n  a:\n    kind: synth_runs\n  a:\n    kind: dinamo_s\n";
        let err = PipelineSpec::parse(dup, Path::new("d.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.to_lowercase().contains("duplicate"), "{err}");
        let typo = "name: d\nstages:\n  a:\n    kind: synth_runs\n    parms: {}\n";
        let err = PipelineSpec::parse(typo, Path::new("d.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("parms"), "{err}");
    }

    #[test]
    fn overrides_keep_yaml_types() {
        let mut spec = PipelineSpec::parse(YAML, Path::new("demo.yaml")).unwrap();
        spec.apply_overrides(&["runs.seeds=[1, 2]".into(), "reference.alpha=auto".into()])
            .unwrap();
        assert_eq!(
            spec.stages["runs"].params["seeds"],
            serde_json::json!([1, 2])
        );
        assert_eq!(
            spec.stages["reference"].params["alpha"],
            serde_json::json!("auto")
        );
        assert!(spec.apply_overrides(&["nope.x=1".into()]).is_err());
        // Nested: one field set, its siblings kept; a scalar is no mapping.
        spec.apply_overrides(&["reference.env={a: 1, b: 2}".into()])
            .unwrap();
        spec.apply_overrides(&["reference.env.b=3".into(), "reference.new.c=4".into()])
            .unwrap();
        assert_eq!(
            spec.stages["reference"].params["env"],
            serde_json::json!({"a": 1, "b": 3})
        );
        assert_eq!(
            spec.stages["reference"].params["new"],
            serde_json::json!({"c": 4})
        );
        let err = spec
            .apply_overrides(&["reference.alpha.x=1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`alpha` is not a mapping"), "{err}");
    }
}
