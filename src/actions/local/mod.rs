//! The actions without a family: they need nothing but this machine (`shell`, `wait`, `approval`).

pub mod approval;
pub mod shell;
pub mod wait;
