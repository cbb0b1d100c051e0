//! coupond: receives Douyin life-services coupon webhooks, records them durably in one
//! SQLite file, keeps each coupon's state straight and tells the store.
//!
//! A push meets the modules in this order (ARCHITECTURE.md draws the same map):
//!
//! - [`server`]: the accept loop (connection limits, header timeout, graceful stop);
//! - [`http`]: the webhook endpoint: path, method, body limit, then the answer;
//! - [`intake`]: pure classification of the raw request, using [`signature`] (Douyin's
//!   sha1 signature) and [`wire`] (Douyin's envelope and content);
//! - [`writer`]: the database thread, which groups concurrent requests into one commit;
//! - [`store`]: schema, migrations and every SQL statement, including the one
//!   transaction that records a message, applies [`coupon`]'s state rule and queues
//!   output jobs;
//! - [`outbox`] and [`sinks`]: deliver the jobs after the answer: the receipt printer
//!   (`sinks::receipt` lays it out, `sinks::printer` sends it), the counter display
//!   (`sinks::display`), a hook (`sinks::exec`) or the log.
//!
//! Around them: [`notify`] (systemd READY, watchdog, STATUS), [`config`] (flags and environment, validated once), [`cli`] (subcommand
//! dispatch), [`serve`], [`status`], [`send`], [`reprint`] and [`reverify`] (one
//! module per subcommand), [`retention`] (pruning old rows), [`time`].
//!
//! Invariants: no 200 before the commit that holds the message; an unsigned request
//! costs at most one bounded row; a sink never blocks the runtime thread.

pub mod cli;
pub mod config;
pub mod coupon;
pub mod http;
pub mod intake;
pub mod notify;
pub mod outbox;
pub mod reprint;
pub mod retention;
pub mod reverify;
pub mod send;
pub mod serve;
pub mod server;
pub mod signature;
pub mod sinks;
pub mod status;
pub mod store;
pub mod time;
pub mod wire;
pub mod writer;
