//! The catalogue of stage kinds: how a `kind:` name in a pipeline becomes a
//! configured [`Stage`], and what `pipeline stages` documents about it.

use serde_json::Value;

use crate::stage::{OutputSpec, Stage, StageConfig, check_input_count};

/// A configured stage plus its canonical parameters (defaults filled in), the
/// form that enters the cache key so `{}` and spelled-out defaults agree.
pub struct Configured {
    pub stage: Box<dyn Stage>,
    pub params: Value,
}

/// A parameter that could not be used: `path` is where in the parameters
/// (`alpha`, `events[1]`), empty for the whole mapping.
#[derive(Debug, Clone)]
pub struct ParamError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() || self.path == "." {
            f.write_str(&self.message)
        } else {
            write!(f, "parameter `{}`: {}", self.path, self.message)
        }
    }
}

/// Everything the engine needs to know about one stage kind.
pub struct StageKind {
    pub name: &'static str,
    pub version: u32,
    pub summary: &'static str,
    pub inputs: (usize, usize),
    /// What the inputs are, in order ([`StageConfig::INPUT_ROLES`]).
    pub input_roles: &'static str,
    /// Parses YAML parameters (as JSON) into a configured stage.
    pub configure: fn(Value) -> Result<Configured, ParamError>,
    /// JSON Schema of the parameters, with doc comments as descriptions.
    pub params_schema: fn() -> Value,
    /// The output tables for the documented example inputs (`pipeline
    /// stages`); `None` when they are the columns of the files the stage
    /// reads ([`StageConfig::OUTPUT_FROM_FILES`]).
    pub describe_outputs: fn() -> Result<Option<Vec<OutputSpec>>, String>,
}

fn parse<C: StageConfig>(params: Value) -> Result<C, ParamError> {
    let params = if params.is_null() {
        Value::Object(Default::default())
    } else {
        params
    };
    serde_path_to_error::deserialize(params).map_err(|e| ParamError {
        path: e.path().to_string(),
        message: e.into_inner().to_string(),
    })
}

fn configure<C: StageConfig>(params: Value) -> Result<Configured, ParamError> {
    let config: C = parse(params)?;
    config.validate().map_err(|e| match e.as_param() {
        Some((param, why)) => ParamError {
            path: param.to_string(),
            message: why.to_string(),
        },
        None => ParamError {
            path: String::new(),
            message: e.to_string(),
        },
    })?;
    let canonical = serde_json::to_value(&config).map_err(|e| ParamError {
        path: String::new(),
        message: e.to_string(),
    })?;
    Ok(Configured {
        stage: Box::new(config),
        params: canonical,
    })
}

/// The outputs of the stage with default parameters on its documented
/// example inputs, counted as the engine counts them.
fn describe_outputs<C: StageConfig>() -> Result<Option<Vec<OutputSpec>>, String> {
    if C::OUTPUT_FROM_FILES {
        return Ok(None);
    }
    let config: C = parse(Value::Null).map_err(|e| e.to_string())?;
    let inputs = C::doc_inputs();
    check_input_count(C::INPUTS, C::INPUT_ROLES, inputs.len())
        .and_then(|()| config.outputs(&inputs))
        .map(Some)
        .map_err(|e| format!("the example inputs of `{}`: {e}", C::KIND))
}

fn params_schema<C: StageConfig>() -> Value {
    let generator = schemars::generate::SchemaSettings::draft07()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    generator.into_root_schema_for::<C>().to_value()
}

/// Describes one stage kind from its config type.
pub fn kind<C: StageConfig>() -> StageKind {
    StageKind {
        name: C::KIND,
        version: C::VERSION,
        summary: C::SUMMARY,
        inputs: C::INPUTS,
        input_roles: C::INPUT_ROLES,
        configure: configure::<C>,
        params_schema: params_schema::<C>,
        describe_outputs: describe_outputs::<C>,
    }
}

/// Every stage kind this build knows, in the order `pipeline stages` lists them.
pub fn all() -> Vec<StageKind> {
    vec![
        kind::<crate::read_parquet::ReadParquet>(),
        kind::<crate::dinamo::synth_runs::SynthRuns>(),
        kind::<crate::dinamo::runs_from_dqm::RunsFromDqm>(),
        kind::<crate::dinamo::dinamo_s::DinamoS>(),
        kind::<crate::dinamo::dinamo_ml::DinamoMl>(),
        kind::<crate::dinamo::dqm_metrics::DqmMetrics>(),
        kind::<crate::dinamo::dqm_compare::DqmCompare>(),
        kind::<crate::medic::delphes_convert::DelphesConvert>(),
        kind::<crate::medic::filter_events::FilterEvents>(),
        kind::<crate::medic::sliding_windows::SlidingWindows>(),
        kind::<crate::medic::medic_train::MedicTrain>(),
        kind::<crate::medic::medic_infer::MedicInfer>(),
        kind::<crate::medic::medic_baseline::MedicBaseline>(),
        kind::<crate::medic::medic_metrics::MedicMetrics>(),
        kind::<crate::medic::medic_compare::MedicCompare>(),
        kind::<crate::medic::alerts::Alerts>(),
        kind::<crate::hcal::hcal_rates::HcalRates>(),
        kind::<crate::hcal::lumi_maps::LumiMaps>(),
        kind::<crate::hcal::delphes_maps::DelphesMaps>(),
        kind::<crate::hcal::maps_from_dqm::MapsFromDqm>(),
        kind::<crate::hcal::inject_anomalies::InjectAnomalies>(),
        kind::<crate::hcal::renormalize_occupancy::RenormalizeOccupancy>(),
        kind::<crate::hcal::graphstad_train::GraphstadTrain>(),
        kind::<crate::hcal::graphstad_score::GraphstadScore>(),
        kind::<crate::hcal::channel_metrics::ChannelMetrics>(),
        kind::<crate::hcal::transfer_compare::TransferCompare>(),
        kind::<crate::hcal::transfer_study::TransferStudy>(),
        kind::<crate::lumi::lumi_runs::LumiRuns>(),
        kind::<crate::lumi::ls_histograms::LsHistograms>(),
        kind::<crate::lumi::method_scan::MethodScan>(),
        kind::<crate::lumi::remainder_check::RemainderCheck>(),
        kind::<crate::lumi::ls_from_dqm::LsFromDqm>(),
        kind::<crate::lumi::lumi_ae_train::LumiAeTrain>(),
        kind::<crate::lumi::lumi_ae_score::LumiAeScore>(),
        kind::<crate::lumi::lumi_chi2_score::LumiChi2Score>(),
        kind::<crate::lumi::certify::Certify>(),
        kind::<crate::rl::rl_train::RlTrain>(),
        kind::<crate::rl::rl_evaluate::RlEvaluate>(),
        kind::<crate::rl::rl_tune_rules::RlTuneRules>(),
        kind::<crate::rl::rl_tune_classifiers::RlTuneClassifiers>(),
        kind::<crate::dqm::dqm_root::DqmRoot>(),
        kind::<crate::dqm::dqm_dataframe::DqmDataframe>(),
        kind::<crate::dqm::cms_json::CmsJson>(),
        kind::<crate::dqm::brilcalc_lumi::BrilcalcLumi>(),
        kind::<crate::dqm::cms_json_intersect::CmsJsonIntersect>(),
        kind::<crate::union::Union>(),
    ]
}

/// Looks a kind up by name.
pub fn find(name: &str) -> Option<StageKind> {
    all().into_iter().find(|k| k.name == name)
}
