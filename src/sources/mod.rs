//! Where messages come from. Each source turns what it receives into an
//! [`Arrival`](crate::model::Arrival) through [`intake`](crate::intake) and hands it to
//! the [`Writer`](crate::writer::Writer), which answers once the commit that holds it is
//! on disk; only then may the source acknowledge it to its sender.
//!
//! - [`webhook`]: Douyin's HTTP push (SPEC §3), behind the shared accept loop in
//!   [`server`](crate::server);
//! - [`catchup`]: Douyin's verify-record API (SPEC §11), swept for coupons whose push
//!   never arrived; its records become certificate messages like a push's;
//! - [`mqtt`]: pushes a relay forwarded through the broker (SPEC §12).
//!
//! A new source is one new file here: see ARCHITECTURE.md, "A new source".

pub mod catchup;
pub mod mqtt;
pub mod webhook;
