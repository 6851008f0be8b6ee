//! What faces the network: the listeners and their connections, the drain at shutdown, the admin
//! listener, live reload of routes.toml and the worker threads connections are served on.
//! Nothing here decides a booking: requests go to [`crate::booking::pipeline`] as they arrive.

pub(crate) mod admin;
pub mod body;
pub(crate) mod client_addr;
pub(crate) mod drain;
pub mod healthcheck;
pub(crate) mod http_refusals;
pub mod notify;
pub mod reload;
pub mod server;
pub(crate) mod watch;
pub mod workers;
