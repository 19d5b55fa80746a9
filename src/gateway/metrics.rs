//! The gateway's Prometheus metrics. Labels are bounded: a surface, a status class, an outcome;
//! for the AI relay, an organisation and a model its jurisdiction allows.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `api`, `preview` or `sites`.
    pub surface: &'static str,
    /// `2xx`, `3xx`, `4xx` or `5xx`.
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AiLabels {
    pub organisation: String,
    /// One of the jurisdiction's allowed models (a request naming another is refused first).
    pub model: String,
    /// `completed`, `client_closed`, `closed` (the caller's access ended), `rate_limited`,
    /// `upstream_error` (the endpoint refused), `upstream_unreachable`, `upstream_timeout`,
    /// `upstream_failed`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AiTokenLabels {
    pub organisation: String,
    pub model: String,
    /// `input` (cached input included) or `output`.
    pub kind: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RequestLabels, Histogram>,
    logins: Family<OutcomeLabel, Counter>,
    wakes: Family<OutcomeLabel, Counter>,
    wake_seconds: Histogram,
    activity_renewals: Counter,
    ai_requests: Family<AiLabels, Counter>,
    ai_tokens: Family<AiTokenLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ooda_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let logins = Family::<OutcomeLabel, Counter>::default();
        let wakes = Family::<OutcomeLabel, Counter>::default();
        let wake_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        let activity_renewals = Counter::default();
        registry.register("requests", "HTTP requests answered, by surface and status class", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time to the response head, by surface and status class",
            request_seconds.clone(),
        );
        registry.register("logins", "Sign-in attempts by outcome", logins.clone());
        registry.register("wakes", "Requests that had to wait for a hibernated project, by outcome", wakes.clone());
        registry.register(
            "wake_duration_seconds",
            "From a request finding its project asleep to its pod being ready",
            wake_seconds.clone(),
        );
        registry.register("activity_renewals", "Activity Lease renewals written", activity_renewals.clone());
        let ai_requests = Family::<AiLabels, Counter>::default();
        let ai_tokens = Family::<AiTokenLabels, Counter>::default();
        registry.register("ai_requests", "AI relay requests by organisation, model and outcome", ai_requests.clone());
        registry.register(
            "ai_tokens",
            "Tokens the AI endpoint reported, by organisation, model and kind",
            ai_tokens.clone(),
        );
        Self {
            registry,
            requests,
            request_seconds,
            logins,
            wakes,
            wake_seconds,
            activity_renewals,
            ai_requests,
            ai_tokens,
        }
    }
}

impl Metrics {
    pub fn answered(&self, surface: &'static str, status: u16, took: Duration) {
        let class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let labels = RequestLabels { surface, class };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds.get_or_create(&labels).observe(took.as_secs_f64());
    }

    pub fn login(&self, outcome: &'static str) {
        self.logins.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn woke(&self, outcome: &'static str, took: Duration) {
        self.wakes.get_or_create(&OutcomeLabel { outcome }).inc();
        if outcome == "ready" {
            self.wake_seconds.observe(took.as_secs_f64());
        }
    }

    pub fn activity_renewed(&self) {
        self.activity_renewals.inc();
    }

    pub fn ai_request(&self, organisation: &str, model: &str, outcome: &'static str) {
        let labels = AiLabels { organisation: organisation.to_owned(), model: model.to_owned(), outcome };
        self.ai_requests.get_or_create(&labels).inc();
    }

    pub fn ai_tokens(&self, organisation: &str, model: &str, input: u64, output: u64) {
        for (kind, tokens) in [("input", input), ("output", output)] {
            let labels = AiTokenLabels { organisation: organisation.to_owned(), model: model.to_owned(), kind };
            self.ai_tokens.get_or_create(&labels).inc_by(tokens);
        }
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}
