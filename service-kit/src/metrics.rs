//! Prometheus metrics: one registry per service ([`Metrics`]), the HTTP metrics every service
//! has, recorded by [`middleware`] (`http_requests_total{route, method, status}` and
//! `http_request_duration_seconds{route, method}`), and the exposition a `GET /metrics`
//! handler answers ([`Metrics::response`]). Each service registers its own metrics into the
//! same registry.
//!
//! Label values stay bounded whatever clients send: `route` is the route's pattern
//! (`/api/v1/instances/{id}`), never the path, and `unmatched` when no route matched; an HTTP
//! method outside the standard ones is `other`.

use std::sync::Mutex;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};

use crate::lock;

/// The OpenMetrics text format (what `prometheus_client`'s encoder writes): what Prometheus
/// asks for first when it scrapes.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `route` of a request no route matched (the default service).
pub const UNMATCHED: &str = "unmatched";

/// Latency buckets, in seconds: Prometheus's defaults, and longer ones for the calls that wait
/// for an import or a create.
const LATENCY_BUCKETS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

/// A service's registry, with the HTTP metrics in it. Handlers and [`middleware`] reach it as
/// `web::Data<Metrics>` ([`crate::server::bind_api`] puts it there).
#[derive(Debug)]
pub struct Metrics {
    /// Locked to register (at start-up) and to encode (at each scrape): never contended.
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with the HTTP metrics registered.
    pub fn new() -> Metrics {
        let metrics = Metrics {
            registry: Mutex::new(Registry::default()),
            requests: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
        };
        {
            let mut registry = lock(&metrics.registry);
            // prometheus-client adds the `_total` of a counter itself.
            registry.register("http_requests", "HTTP requests answered", metrics.requests.clone());
            registry.register_with_unit(
                "http_request_duration",
                "Time to the response head (a streamed body may go on after it)",
                Unit::Seconds,
                metrics.durations.clone(),
            );
        }
        metrics
    }

    /// Adds a service's own metric. `name` without the `_total` of a counter (the encoder adds
    /// it); a name registered twice is exposed twice, which Prometheus refuses: register each
    /// once, at start-up.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        lock(&self.registry).register(name, help, metric);
    }

    /// Every metric, in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &lock(&self.registry))?;
        Ok(text)
    }

    /// The answer of `GET /metrics` (a service refreshes its scrape-time gauges first).
    pub fn response(&self) -> HttpResponse {
        match self.encode() {
            Ok(text) => HttpResponse::Ok().insert_header((CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)).body(text),
            Err(_) => {
                tracing::error!("cannot encode the metrics");
                HttpResponse::InternalServerError().finish()
            }
        }
    }

    fn record(&self, route: String, method: &'static str, status: u16, seconds: f64) {
        self.durations.get_or_create(&RouteLabels { route: route.clone(), method }).observe(seconds);
        self.requests.get_or_create(&RequestLabels { route, method, status }).inc();
    }
}

/// The `method` label: the standard methods by name, anything else `other` (a client may send
/// any token as a method, and each would be a new series).
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::PATCH, "PATCH"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN.iter().find(|(known, _)| known == method).map_or("other", |(_, label)| label)
}

/// Middleware (`actix_web::middleware::from_fn`): counts each request by route pattern, method
/// and status, and records its latency, into the `web::Data<Metrics>` of the app (an app
/// without one is served unmeasured).
///
/// The latency is the time to the response head: a streamed body (a console that follows, an
/// image download) goes on after the handler returned, and is not measured.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(metrics) = req.app_data::<web::Data<Metrics>>().cloned() else {
        return next.call(req).await;
    };
    let start = Instant::now();
    let method = method_label(req.method());
    // Matched against the app's routes now, as routing will: the request is gone if an inner
    // middleware fails, and its failure is counted too.
    let route = req.match_pattern().unwrap_or_else(|| UNMATCHED.to_string());
    let outcome = next.call(req).await;
    let status = match &outcome {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    metrics.record(route, method, status.as_u16(), start.elapsed().as_secs_f64());
    outcome
}

/// The value of one sample of an exposition (`series` is the name with its labels, as the
/// encoder writes them: `http_requests_total{route="/ping",method="GET",status="200"}`): what
/// tests read back.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        // A sample may carry a timestamp or an exemplar after its value.
        value.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::{call_service, init_service, TestRequest};
    use actix_web::App;

    #[actix_web::test]
    async fn requests_are_counted_by_route_pattern_and_unmatched_ones_apart() {
        let metrics = web::Data::new(Metrics::new());
        let app = init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(middleware))
                .app_data(metrics.clone())
                .route("/things/{id}", web::get().to(|| async { HttpResponse::Ok().finish() }))
                .service(web::scope("/api").route("/ping", web::get().to(|| async { "pong" })))
                .default_service(web::to(|| async { HttpResponse::NotFound().finish() })),
        )
        .await;
        for uri in ["/things/1", "/things/2", "/nothing/here", "/api/nothing"] {
            call_service(&app, TestRequest::get().uri(uri).to_request()).await;
        }
        call_service(
            &app,
            TestRequest::default().method(Method::from_bytes(b"BREW").unwrap()).uri("/things/3").to_request(),
        )
        .await;

        let text = metrics.encode().unwrap();
        let requests = |route: &str, method: &str, status: u16| {
            let series =
                format!(r#"http_requests_total{{route="{route}",method="{method}",status="{status}"}}"#);
            sample(&text, &series)
        };
        assert_eq!(requests("/things/{id}", "GET", 200), Some(2.0), "{text}");
        let latencies = r#"http_request_duration_seconds_count{route="/things/{id}",method="GET"}"#;
        assert_eq!(sample(&text, latencies), Some(2.0), "{text}");
        // Under a scope that has no such route, too.
        assert_eq!(requests(UNMATCHED, "GET", 404), Some(2.0), "{text}");
        // Its route only takes GET: the default service answers, and the pattern is still known.
        assert_eq!(requests("/things/{id}", "other", 404), Some(1.0), "{text}");
        assert!(!text.contains("/things/1") && !text.contains("nothing") && !text.contains("BREW"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[actix_web::test]
    async fn the_exposition_is_openmetrics_and_services_add_their_own() {
        let metrics = Metrics::new();
        let jobs: Counter = Counter::default();
        metrics.register("jobs", "Jobs done", jobs.clone());
        jobs.inc_by(3);
        let response = metrics.response();
        assert_eq!(response.headers().get(CONTENT_TYPE).unwrap(), OPENMETRICS_CONTENT_TYPE);
        let body = actix_web::body::to_bytes(response.into_body()).await.unwrap();
        let text = std::str::from_utf8(&body).unwrap();
        assert_eq!(sample(text, "jobs_total"), Some(3.0), "{text}");
        assert_eq!(sample(text, "jobs"), None, "a name is not a prefix of another's: {text}");
    }
}
