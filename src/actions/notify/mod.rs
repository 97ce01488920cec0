//! `notify.*`: telling people what a run is doing.

pub mod webhook;
