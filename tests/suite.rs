//! The integration suite: one test binary (one link of the full dependency set instead of one per
//! file, which kept CI's disk and link time in bounds). Each file under tests/ is a module here;
//! nextest still runs every test in its own process, so tests do not share process state.
//! Run one file's tests with `cargo nextest run --test suite -E 'test(/^rabbit::/)'`.

mod common;

mod as4_pull;
mod blob_s3;
mod certs;
mod conformance;
mod console;
mod docker_files;
mod edge_trust;
mod error_dispositions;
mod first_run;
mod fixtures_as2;
mod inbound_more;
mod large;
mod interop_pyas2lib;
mod ops;
mod outbound;
mod rabbit;
mod receipts;
mod reload;
mod runtime;
mod s3_integration;
mod s3_store;
mod scale_out;
mod state_durability;
