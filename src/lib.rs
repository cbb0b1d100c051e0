//! coupond: receives Douyin life-services coupon webhooks, records them durably in one
//! SQLite file, keeps each coupon's state straight and tells the store.
//!
//! Three wings (ARCHITECTURE.md draws the same map):
//!
//! - **sources**, the ways in: [`sources::webhook`] (Douyin's HTTP push) behind the
//!   shared accept loop in [`server`] and its connection table [`conns`] (which closes
//!   the connection idle longest when full), with [`ratelimit`]: once-per-10-s warnings
//!   and a bounded write rate for what is refused; [`sources::catchup`] (coupons whose
//!   push never arrived, from Douyin's verify-record API, through [`douyin`] over
//!   [`tls`]); and [`sources::mqtt`] (pushes a relay forwarded through the broker,
//!   [`mqtt`]);
//! - **the core**, one path for every source: [`intake`] classifies the raw message
//!   purely (with [`signature`] and [`wire`], Douyin's envelope and content), the
//!   [`writer`] thread groups concurrent arrivals into one commit, and [`store`] holds
//!   the schema and every SQL statement, including the one transaction that records a
//!   message, applies [`coupon`]'s state rule and queues output jobs;
//! - **sinks**, the ways out: the [`outbox`] delivers the jobs after the answer through
//!   [`sinks`] (the receipt printer, the counter display, a hook, or the log; and the
//!   broker, for headquarters and the store boxes; and the speaker, which says an applied
//!   verify aloud with [`voice`]'s clips).
//!
//! Around them: [`config`] (flags and environment, validated once), [`cli`] and
//! [`commands`] (one module per subcommand), [`shutdown`] (the stop signal every task
//! shares), [`notify`] (systemd READY, watchdog, STATUS), [`knock`] (work another command
//! queued wakes the outbox, with no polling), [`retention`] (pruning old
//! rows), [`tls`] (the one TLS client configuration), [`time`], [`url`], [`sanitize`]
//! (the one filter for signed fields shown in the log, on receipts, to a hook or in
//! `status`), [`fuzzing`] (one hostile body through intake and the receipt, for `fuzz/`
//! and the mutation test).
//!
//! Invariants: no 200 before the commit that holds the message; an unsigned request
//! costs at most one bounded row, and unsigned requests together a bounded write rate;
//! a sink never blocks the runtime thread.

pub mod backoff;
pub mod cli;
pub mod closing;
pub mod commands;
pub mod config;
pub mod conns;
pub mod coupon;
pub mod details;
pub mod douyin;
pub mod fuzzing;
pub mod intake;
pub mod knock;
pub mod lookup;
pub mod model;
pub mod mqtt;
pub mod notify;
pub mod outbox;
pub mod ratelimit;
pub mod retention;
pub mod sanitize;
pub mod schedule;
pub mod server;
pub mod shutdown;
pub mod signature;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod time;
pub mod tls;
pub mod url;
pub mod voice;
pub mod wire;
pub mod writer;
