//! Palisade's HTTP front: the listener, the edge, the routes in request order, and the
//! OpenAI-compatible inference proxy.
//!
//! [`Gateway`] builds the parts; [`router`] lays out the routes; [`run`] serves them
//! until shutdown. A request's context (client, route, identity) is resolved once, in
//! [`request`]; every refusal is one [`error::ApiError`], rendered and counted by the
//! listener.

pub mod abuse;
pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod client;
pub mod clock;
pub mod config;
pub mod connections;
pub mod cookies;
pub mod edge;
pub mod error;
pub mod fleet_sync;
pub mod front;
pub mod guard;
pub mod health;
pub mod identity;
pub mod log_limit;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod priority;
pub mod proxy;
pub mod proxy_protocol;
pub mod refusal;
pub mod request;
pub mod schema;
pub mod server;
pub mod status_page;
pub mod tls;
pub mod upstream;
pub mod validation;

pub use app::{Gateway, GatewayError, router, run, run_with_admin};
pub use config::GatewayConfig;
