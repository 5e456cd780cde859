//! Each service's OpenAPI document: written by hand in YAML beside the service (one source of truth, read
//! by people, validated in CI and used for fuzzing), served as JSON at `GET /openapi.json`.

use actix_web::{http::header::ContentType, web, HttpResponse, Route};

/// An OpenAPI document, converted to JSON once at start-up.
#[derive(Clone)]
pub struct OpenApiDocument(web::Bytes);

impl OpenApiDocument {
    /// Converts the YAML text of a document; fails only if the text is not YAML.
    pub fn from_yaml(yaml: &str) -> anyhow::Result<Self> {
        let value: serde_json::Value = serde_yaml_ng::from_str(yaml)?;
        Ok(Self(serde_json::to_vec(&value)?.into()))
    }

    /// A route that answers with the document.
    pub fn route(&self) -> Route {
        let body = self.0.clone();
        web::get().to(move || {
            let body = body.clone();
            async move {
                HttpResponse::Ok()
                    .content_type(ContentType::json())
                    .body(body)
            }
        })
    }
}
