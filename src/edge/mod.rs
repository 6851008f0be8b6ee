//! What faces the network: the listeners and their connections, the drain at shutdown, the admin
//! listener, live reload of routes.toml and the worker threads connections are served on.
//! Nothing here decides a booking: requests go to [`crate::booking::pipeline`] as they arrive.

pub mod admin;
pub mod body;
pub mod client_addr;
pub mod drain;
pub mod healthcheck;
pub mod http_refusals;
pub mod notify;
pub mod reload;
pub mod server;
pub mod watch;
pub mod workers;
