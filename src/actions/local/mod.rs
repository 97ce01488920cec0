//! The actions without a family: they need nothing but this machine (`shell`, `wait`,
//! `approval`, and `runbook`, which runs this binary again).

pub mod approval;
pub mod runbook;
pub mod shell;
pub mod wait;
