//! The page script and style, and the charting library (uPlot, `assets/vendor/`),
//! compiled into the binary: the dashboard needs no CDN.

use axum::http::header;
use axum::response::IntoResponse;

pub async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("../../assets/app.js"))
}

pub async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("../../assets/app.css"))
}

pub async fn chart_script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("../../assets/vendor/uPlot.iife.min.js"))
}

pub async fn chart_style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("../../assets/vendor/uPlot.min.css"))
}
