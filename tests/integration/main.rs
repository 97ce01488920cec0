//! All integration tests, linked into one binary: each test binary links every dependency
//! (kube, the AWS SDK, ...) again, so one binary instead of a dozen saves minutes of linking
//! and gigabytes of disk. nextest still runs every test in its own process.

mod common;

mod architecture;
mod backup_lifecycle;
mod cli;
mod crash;
mod diagnostics;
mod disk;
mod dns;
mod docs;
mod drills;
mod files;
mod hostile;
mod http;
mod injection;
mod interrupts;
mod kubernetes;
mod kubernetes_config;
mod monitoring;
mod neo4j;
mod pg_state;
mod pitr;
mod postgres;
mod run;
mod run_log;
mod runbooks;
mod s3;
mod schema;
mod secrets;
mod swap_restore;
