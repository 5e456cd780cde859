//! HTTP routes of the publisher, one module an endpoint group; [`API`] lists them with who may use
//! each.

pub(crate) mod health;
pub(crate) mod publish;

use actix_web::web::{get, ServiceConfig};
use common::web::{Access, Api, Doors, Scope};

/// What the publisher serves. Publishing needs a publish token when tokens are configured; the probes,
/// metrics and the OpenAPI document stay open for probes and scrapers.
pub(crate) const API: Api = Api {
    openapi: include_str!("../../openapi.yaml"),
    routes: |app: &mut ServiceConfig, doors: &Doors| {
        let publish = Access::Needs(Scope::Publish);
        app.service(doors.post("/message/publish", publish, publish::publish_one))
            .service(doors.post("/message/publish/batch", publish, publish::publish_batch));
    },
    probes: || [get().to(health::readyz), get().to(health::metrics)],
};
