//! Liveness, readiness and metrics endpoints. They never touch an upstream on
//! the request path, so they answer while the model servers are flooded. Metrics
//! and the details of readiness (upstream counts, store errors) are only for
//! clients on `server.metrics_allow`.

use std::sync::Arc;
use std::time::Duration;

use accounts::service::Accounts;
use admission::Admission;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use store::Store;

use crate::connections::{ConnectionGate, ConnectionRefusal};
use crate::edge::Edge;
use crate::error::{ApiError, Reject};
use crate::metrics::Metrics;
use crate::request::RequestContext;
use crate::upstream::UpstreamPool;

/// What readiness and the metrics page read.
#[derive(Clone)]
pub struct Telemetry {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub pool: Arc<UpstreamPool>,
    pub accounts: Arc<Accounts>,
    pub admission: Arc<Admission>,
    pub connections: Arc<ConnectionGate>,
    pub edge: Arc<Edge>,
    /// Who may read the details (`server.metrics_allow`).
    pub detail_networks: Arc<[shield::Cidr]>,
}

impl Telemetry {
    fn shows_details_to(&self, ctx: &RequestContext) -> bool {
        let ip = ctx.client.ip();
        self.detail_networks.iter().any(|n| n.contains(ip))
    }
}

/// The process is up and answering.
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// Ready for traffic: the store answers and at least one upstream is healthy. The
/// status code for everyone; what is wrong only for the allowed networks.
pub async fn readyz(State(t): State<Telemetry>, ctx: RequestContext) -> Response {
    let store = match tokio::time::timeout(Duration::from_secs(2), t.store.ping()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "error: no answer within 2s".to_owned(),
    };
    let healthy = t.pool.healthy_count();
    let total = t.pool.upstreams().len();
    let ready = store == "ok" && healthy > 0;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    if !t.shows_details_to(&ctx) {
        return (status, Json(json!({"status": if ready { "ready" } else { "not_ready" }}))).into_response();
    }
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "store": store,
        "upstreams": {"healthy": healthy, "total": total},
    });
    (status, Json(body)).into_response()
}

/// Prometheus text exposition, for the allowed networks; 404 for everyone else (it
/// names the upstreams and shows the defences' counters).
pub async fn metrics(State(t): State<Telemetry>, ctx: RequestContext) -> Result<Response, ApiError> {
    if !t.shows_details_to(&ctx) {
        return Err(not_found().await);
    }
    let mut out = String::with_capacity(16 * 1024);
    t.metrics.render(&mut out);
    t.pool.render_metrics(&mut out);
    let hasher = t.accounts.hasher();
    out.push_str("# HELP palisade_password_hash_in_flight Password hashes running or queued on the bounded pool.\n");
    out.push_str("# TYPE palisade_password_hash_in_flight gauge\n");
    out.push_str(&format!("palisade_password_hash_in_flight {}\n", hasher.in_flight()));
    out.push_str("# HELP palisade_password_hash_queued Password hashes waiting for a thread.\n");
    out.push_str("# TYPE palisade_password_hash_queued gauge\n");
    out.push_str(&format!("palisade_password_hash_queued {}\n", hasher.queued()));
    render_sms(&t.accounts.sms_counts(), &mut out);
    let held = t.accounts.texts_held();
    out.push_str(
        "# HELP palisade_sms_held Number ranges, countries and sender subnets whose texts are held, by gate.\n",
    );
    out.push_str("# TYPE palisade_sms_held gauge\n");
    out.push_str(&format!("palisade_sms_held{{gate=\"proof_required\"}} {}\n", held.proof));
    out.push_str(&format!("palisade_sms_held{{gate=\"paused\"}} {}\n", held.paused));
    out.push_str("# HELP palisade_registration_narrowed 1 while the SMS breaker has narrowed registration to the home regions.\n");
    out.push_str("# TYPE palisade_registration_narrowed gauge\n");
    out.push_str(&format!("palisade_registration_narrowed {}\n", u8::from(held.narrowed)));
    render_admission(&t.admission.snapshot(), &mut out);
    let conns = &t.connections;
    out.push_str("# HELP palisade_connections_open Client connections open now.\n");
    out.push_str("# TYPE palisade_connections_open gauge\n");
    out.push_str(&format!("palisade_connections_open {}\n", conns.open()));
    out.push_str("# HELP palisade_connections_refused_total Connections closed at once, by which cap they hit.\n");
    out.push_str("# TYPE palisade_connections_refused_total counter\n");
    for why in ConnectionRefusal::ALL {
        out.push_str(&format!(
            "palisade_connections_refused_total{{cap=\"{}\"}} {}\n",
            why.label(),
            conns.refused(why)
        ));
    }
    t.edge.render_metrics(&mut out);
    crate::log_limit::render_metrics(&mut out);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response())
}

/// Anything else: 404, as a page for browsers and JSON for the rest.
pub async fn not_found() -> ApiError {
    ApiError::new(Reject::NotFound, "there is nothing at this address")
}

fn render_admission(snap: &admission::AdmissionSnapshot, out: &mut String) {
    use std::fmt::Write;
    let _ =
        writeln!(out, "# HELP palisade_admission_limit Concurrent requests the upstreams are given now (adaptive).");
    let _ = writeln!(out, "# TYPE palisade_admission_limit gauge");
    let _ = writeln!(out, "palisade_admission_limit {}", snap.limit);
    let gauges = [
        ("palisade_admission_in_flight", "Requests holding an upstream slot, by priority class.", &snap.in_flight),
        ("palisade_admission_queued", "Requests waiting for a slot, by priority class.", &snap.queued),
    ];
    for (name, help, values) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (class, n) in values.iter() {
            let _ = writeln!(out, "{name}{{class=\"{class}\"}} {n}");
        }
    }
    let _ = writeln!(out, "# HELP palisade_admission_admitted_total Requests given an upstream slot, by class.");
    let _ = writeln!(out, "# TYPE palisade_admission_admitted_total counter");
    for (class, n) in snap.admitted.iter() {
        let _ = writeln!(out, "palisade_admission_admitted_total{{class=\"{class}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP palisade_admission_tier_in_flight Requests holding an upstream slot, by trust tier.");
    let _ = writeln!(out, "# TYPE palisade_admission_tier_in_flight gauge");
    for (tier, n) in snap.tier_in_flight.iter() {
        let _ = writeln!(out, "palisade_admission_tier_in_flight{{tier=\"{tier}\"}} {n}");
    }
    let _ =
        writeln!(out, "# HELP palisade_admission_tier_admitted_total Requests given an upstream slot, by trust tier.");
    let _ = writeln!(out, "# TYPE palisade_admission_tier_admitted_total counter");
    for (tier, n) in snap.tier_admitted.iter() {
        let _ = writeln!(out, "palisade_admission_tier_admitted_total{{tier=\"{tier}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP palisade_admission_refused_total Requests shed by admission, by class and reason.");
    let _ = writeln!(out, "# TYPE palisade_admission_refused_total counter");
    for (class, by_reason) in snap.refused.iter() {
        for reason in admission::RefusalReason::ALL {
            let n = by_reason[reason.index()];
            let _ = writeln!(
                out,
                "palisade_admission_refused_total{{class=\"{class}\",reason=\"{}\"}} {n}",
                reason.as_str()
            );
        }
    }
}

/// Texts by country: what SMS pumping would show first (many sent, few entered).
fn render_sms(counts: &std::collections::BTreeMap<String, accounts::sms::CountryCounts>, out: &mut String) {
    use std::fmt::Write as _;
    let series: [(&str, &str, fn(&accounts::sms::CountryCounts) -> f64); 5] = [
        ("palisade_sms_sent_total", "Codes and notices sent by text, by country.", |c| c.sent as f64),
        ("palisade_sms_verified_total", "Codes sent by text that were entered, by country.", |c| c.verified as f64),
        (
            "palisade_sms_paused_total",
            "Texts not sent because the breaker paused their range, country or subnet.",
            |c| c.paused as f64,
        ),
        (
            "palisade_sms_proof_required_total",
            "Texts held until the sender solved a proof of work (few codes entered there).",
            |c| c.proof_required as f64,
        ),
        ("palisade_sms_estimated_cost_total", "What the texts sent cost, from the price table.", |c| {
            c.estimated_cost()
        }),
    ];
    for (name, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (country, c) in counts {
            let _ = writeln!(out, "{name}{{country=\"{country}\"}} {}", value(c));
        }
    }
}
