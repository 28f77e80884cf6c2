//! Which fold's model validates each train-block window of a MEDIC window
//! table (`medic_train`'s k-fold ensemble): the train sub-block a window
//! lies in (leak-free `split: blocks`), or a class-stratified deal (the
//! paper's `split: windows`).

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::{Result, StageError};
use crate::medic::batches::WindowData;

/// Fold (0-based) of each train-block row of a `split: blocks` table: the
/// train sub-block the window lies in, so validation windows share no event
/// (nor a detector copy of one) with the fold's training windows.
pub fn contiguous_folds(
    data: &WindowData,
    rows: &[usize],
    k: usize,
    input: &str,
) -> Result<Vec<usize>> {
    rows.iter()
        .map(|&r| {
            let row = &data.rows[r];
            match row.fold {
                Some(f) if (1..=k).contains(&f) => Ok(f - 1),
                other => Err(StageError::data(format!(
                    "input `{input}`: train window {} has fold {other:?}, expected 1..={k}",
                    row.window_id
                ))),
            }
        })
        .collect()
}

/// Fold (0-based) of each train-block row of a `split: windows` table (the
/// paper's protocol): rows of each argmax class are shuffled and dealt
/// round-robin, so every fold gets the class mix.
pub fn stratified_folds(data: &WindowData, rows: &[usize], k: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); data.cfg.n_classes];
    for (i, &r) in rows.iter().enumerate() {
        by_class[data.rows[r].class as usize].push(i);
    }
    let mut fold = vec![0; rows.len()];
    let mut dealt = 0;
    for members in &mut by_class {
        members.shuffle(&mut rng);
        for &i in members.iter() {
            fold[i] = dealt % k;
            dealt += 1;
        }
    }
    fold
}
