//! MEDIC (medic.txt): Delphes events to the tables the MEDIC classifier
//! trains on.

pub mod convert;
pub mod filter;
pub mod model;
pub mod windows;
