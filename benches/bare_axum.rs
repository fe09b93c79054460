//! The ingress baseline of `bench/load.sh`: a bare axum handler that answers every POST with a
//! `201` body shaped like wharf's, without reading the body into a store. wharf's durable ingress
//! is measured against it on the same machine, driven the same way.
//!
//! `cargo run --release --example bare-axum -- 127.0.0.1:8090`

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let app = Router::new().route(
        "/webhooks/{id}",
        post(|body: axum::body::Bytes| async move {
            let request = uuid::Uuid::now_v7();
            let run = uuid::Uuid::now_v7();
            let _ = body.len();
            (
                StatusCode::CREATED,
                axum::Json(serde_json::json!({
                    "request": {"id": request},
                    "data": {"fleet_id": run, "project_id": run, "org_id": run, "fleet_run_id": run},
                })),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
