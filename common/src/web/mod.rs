//! The HTTP side both services share: the server and how routes are guarded (`server`, `auth`), request
//! metrics, problem bodies, the OpenAPI route, and the settings that shape them (`config`).

mod auth;
mod config;
pub mod metrics;
mod openapi;
pub mod problem;
mod server;

pub use auth::{Access, Identity, Scope, Tokens};
pub use config::{token_variables, Api, DefaultPort, HttpConfig};
pub use openapi::OpenApiDocument;
pub use problem::Problem;
pub use server::{serve_until, Doors};
