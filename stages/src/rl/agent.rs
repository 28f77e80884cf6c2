//! The trained agent as the stages that use it read it: its card and
//! weights from `rl_train`'s models table, checked against the observation
//! and actions of this build's environment.

use super::env::N_OBS;
use super::tables::AgentCard;
use crate::error::{Result, StageError};
use crate::input::Input;
use crate::nn::each_model_row;

/// The agent's card and weights from an `rl_train` models table, checked
/// against this build's environment.
pub fn read_agent(input: &Input) -> Result<(AgentCard, Vec<u8>)> {
    let mut agent = None;
    each_model_row(
        input,
        "the models table of `rl_train`",
        |_, _, card: AgentCard, weights| {
            if agent.is_some() {
                return Err(StageError::data(format!(
                    "input `{}` holds more than one agent",
                    input.name
                )));
            }
            if card.n_obs != N_OBS || card.actions != card.env.regime.actions() {
                return Err(StageError::data(format!(
                    "input `{}`: the agent observes {} features and acts {:?}; this build's {} environment has {N_OBS} and {:?}",
                    input.name,
                    card.n_obs,
                    card.actions,
                    card.env.regime.name(),
                    card.env.regime.actions()
                )));
            }
            agent = Some((card, weights.to_vec()));
            Ok(())
        },
    )?;
    Ok(agent.expect("each_model_row refuses an empty table"))
}
