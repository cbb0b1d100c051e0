//! One module per subcommand (`coupond COMMAND`): each takes its validated settings
//! from [`config`](crate::config) and returns `Ok` or one error line; [`cli`](crate::cli)
//! turns that into an exit status.

pub mod check;
pub mod print_test;
pub mod report;
pub mod reprint;
pub mod reverify;
pub mod send;
pub mod serve;
pub mod status;
