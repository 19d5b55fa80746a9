//! `make bench-ai`: what the AI relay adds to a streamed answer. A stand-in for Anthropic's
//! Messages API on loopback (the test kit's) answers the same streamed request asked directly
//! and through the relay (release gateway, the project's AI token), interleaved in one run: time
//! to the first byte, and throughput of a long answer. Then 100 streams are held open at once
//! through the relay and the gateway's resident memory is read before and during. Writes
//! `benches/reports/ai-relay.md`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use ooda::crd::Project;
use serde_json::{Value, json};

mod common;

use common::kit::anthropic::StandIn;
use common::{
    Run, Started, TEST_LABEL, checkout, median, ms, percentile, ratio, ready_organisation, start_ooda, start_run,
    wait_for,
};

const MODEL: &str = "claude-bench";
/// Requests of each kind, per target, for time to first byte.
const FIRST_BYTE_RUNS: usize = 300;
/// Long answers per target, for throughput.
const THROUGHPUT_RUNS: usize = 30;
/// Pieces (`content_block_delta` events) in each streamed answer.
const PIECES: usize = 2000;
const CONCURRENT: usize = 100;

#[tokio::main]
async fn main() {
    let Run { repo, kubeconfig, client, id: run, home } = start_run("ai").await;
    let org = format!("bench-{run}");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "anthropic-bench" }, "stringData": { "apiKey": "sk-bench" },
    }))
    .expect("secret");
    Api::namespaced(client.clone(), &home).create(&PostParams::default(), &secret).await.expect("credentials");

    let upstream = StandIn::start_with("bench", PIECES).await;
    let example = std::fs::read_to_string(repo.join("examples/operator-config.yaml")).expect("example config");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&example).expect("YAML");
    config["jurisdictions"]["eu"]["ai"] = serde_yaml::to_value(json!({
        "endpoint": upstream.endpoint(), "credentialsSecret": "anthropic-bench", "models": [MODEL],
    }))
    .expect("YAML");
    let config_path = std::env::temp_dir().join(format!("ooda-bench-ai-{run}.yaml"));
    std::fs::write(&config_path, serde_yaml::to_string(&config).expect("YAML")).expect("write the configuration");
    let config_path = config_path.to_str().expect("utf-8 path");

    let Started { mut operator, gateway: mut gateway_process, addr: gateway } =
        start_ooda(&kubeconfig, "ai", &run, &home, config_path, &[]).await;
    ready_organisation(
        &client,
        json!({ "metadata": { "name": org, "labels": { TEST_LABEL: run } }, "spec": { "jurisdiction": "eu" } }),
    )
    .await;
    let namespace = format!("org-{org}");
    let projects: Api<Project> = Api::namespaced(client.clone(), &namespace);
    let project: Project = serde_json::from_value(json!({ "metadata": { "name": "bench" }, "spec": {} })).expect("p");
    projects.create(&PostParams::default(), &project).await.expect("create the project");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let issued = wait_for(&secrets, "bench-ai", |s: Option<&Secret>| s.is_some()).await.expect("the AI token");
    let token = String::from_utf8(issued.data.expect("data")["token"].0.clone()).expect("UTF-8");

    let direct = Target { url: format!("{}/v1/messages", upstream.endpoint()), key: "sk-bench".into() };
    let relayed = Target { url: format!("http://{gateway}/api/orgs/{org}/projects/bench/ai/v1/messages"), key: token };
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().expect("client");
    let short = ask("hello", true);
    // The gateway's watch learns the token a moment after the API server has it.
    for _ in 0..200 {
        if relayed.stream(&http, &short).await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Warm both paths (connections, the allocator), then alternate which goes first.
    for _ in 0..20 {
        direct.stream(&http, &short).await.expect("direct");
        relayed.stream(&http, &short).await.expect("relayed");
    }
    let (mut direct_first, mut relayed_first) = (Vec::new(), Vec::new());
    for i in 0..FIRST_BYTE_RUNS {
        let order = if i % 2 == 0 { [&direct, &relayed] } else { [&relayed, &direct] };
        for target in order {
            let answer = target.stream(&http, &short).await.expect("an answer");
            if std::ptr::eq(target, &direct) { &mut direct_first } else { &mut relayed_first }.push(answer.first_byte);
        }
    }
    let long = ask(&"lorem ipsum dolor sit amet ".repeat(20_000), true);
    let (mut direct_rate, mut relayed_rate, mut answer_bytes) = (Vec::new(), Vec::new(), 0);
    for i in 0..THROUGHPUT_RUNS {
        let order = if i % 2 == 0 { [&direct, &relayed] } else { [&relayed, &direct] };
        for target in order {
            let answer = target.stream(&http, &long).await.expect("an answer");
            answer_bytes = answer.bytes;
            let rate = answer.bytes as f64 / answer.whole.as_secs_f64() / 1e6;
            if std::ptr::eq(target, &direct) { &mut direct_rate } else { &mut relayed_rate }.push(rate);
        }
    }

    // Memory: 100 slow streams held open at once (after one such round to warm up).
    let pid = gateway_process.id().expect("the gateway runs");
    let slow = ask("answer slowly", true);
    let mut rounds = Vec::new();
    for _ in 0..2 {
        let before = rss_kib(pid);
        let mut open = Vec::new();
        for _ in 0..CONCURRENT {
            let response = relayed.send(&http, &slow).await;
            let mut body = response.bytes_stream();
            body.next().await.expect("a first piece").expect("bytes");
            open.push(body);
        }
        let during = rss_kib(pid);
        drop(open);
        rounds.push((before, during));
    }
    let (before, during) = rounds[1];

    let orgs: Api<ooda::crd::Organisation> = Api::all(client.clone());
    orgs.delete(&org, &Default::default()).await.expect("delete the organisation");
    let _ = gateway_process.kill().await;
    let _ = operator.kill().await;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .delete(&home, &Default::default())
        .await
        .expect("delete the home namespace");

    direct_first.sort();
    relayed_first.sort();
    let p50 = |sorted: &[Duration]| percentile(sorted, 0.5);
    let p99 = |sorted: &[Duration]| percentile(sorted, 0.99);
    let added = p50(&relayed_first).saturating_sub(p50(&direct_first));
    let per_stream = (during as f64 - before as f64) / CONCURRENT as f64;
    let report = format!(
        "# AI relay: time to first byte, throughput, memory\n\n\
         Generated by `make bench-ai` on {date}. Machine: {cores} cores, load average {load} before the run. \
         ooda {version} ({checkout}), release build; local control plane with kwok nodes. The upstream is the tests' \
         stand-in for Anthropic's Messages API (`tests/kit/anthropic.rs`) on loopback, asked directly and through \
         the gateway's relay (`/api/orgs/…/projects/…/ai/v1/messages`, the project's AI token) by the same HTTP/1.1 \
         client with kept-alive connections, alternating which goes first.\n\n\
         ## Time to first byte of a streamed answer\n\n\
         {FIRST_BYTE_RUNS} requests each, after 20 to warm up: from sending the request to the first body byte \
         (`message_start`).\n\n\
         | path | p50 | p99 |\n|---|---|---|\n\
         | stand-in, direct | {direct_p50} | {direct_p99} |\n\
         | through the relay | {relayed_p50} | {relayed_p99} |\n\n\
         **The relay adds {added} at p50** (target: at most 1 ms). Per request it verifies the token in constant \
         time, reads and checks the body (model, size), counts the organisation's limits, and opens the upstream \
         request; its first byte is the upstream's first byte, passed on as it comes.\n\n\
         ## Throughput of a long streamed answer\n\n\
         {THROUGHPUT_RUNS} answers each of {kb:.0} KB ({PIECES} `content_block_delta` events), whole answer timed.\n\n\
         | path | median |\n|---|---|\n\
         | stand-in, direct | {direct_rate:.1} MB/s |\n\
         | through the relay | {relayed_rate:.1} MB/s |\n\n\
         Through the relay the answer runs at {rate_ratio} of the direct rate: every piece (one event of some \
         380 bytes) is read from one HTTP connection and written to another, on the same cores as the client and \
         the stand-in; the usage tap copies only `event:` lines and the `data:` lines of the two events that carry \
         usage. Either rate is thousands of times what a model streams (tens of KB/s).\n\n\
         ## Memory with {CONCURRENT} streams open\n\n\
         {CONCURRENT} slow streams (a piece every 50 ms) held open through the relay at once, the second of two \
         such rounds; the gateway's resident set from `/proc/<pid>/status`:\n\n\
         | | resident |\n|---|---|\n| before | {before_mib:.1} MiB |\n| with {CONCURRENT} open | {during_mib:.1} MiB |\n\n\
         **{per_stream:.1} KiB per open stream**: its client and upstream connections' buffers (hyper reads in up \
         to 16 KiB and writes what it is given), the request body until it is sent, and the usage tap's line of \
         at most one event. No answer is buffered whole.\n",
        date = Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        cores = std::thread::available_parallelism().map_or(1, |n| n.get()),
        load = std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" / "),
        version = env!("CARGO_PKG_VERSION"),
        checkout = checkout(&repo),
        direct_p50 = ms(p50(&direct_first)),
        direct_p99 = ms(p99(&direct_first)),
        relayed_p50 = ms(p50(&relayed_first)),
        relayed_p99 = ms(p99(&relayed_first)),
        added = ms(added),
        kb = answer_bytes as f64 / 1000.0,
        direct_rate = median(&direct_rate),
        relayed_rate = median(&relayed_rate),
        rate_ratio = ratio(median(&relayed_rate), median(&direct_rate)),
        before_mib = before as f64 / 1024.0,
        during_mib = during as f64 / 1024.0,
    );
    let out = repo.join("benches/reports/ai-relay.md");
    std::fs::write(&out, &report).expect("write report");
    println!("{report}\nreport written to {}", out.display());
}

fn ask(prompt: &str, stream: bool) -> Value {
    json!({ "model": MODEL, "max_tokens": 1024, "stream": stream, "messages": [{ "role": "user", "content": prompt }] })
}

struct Target {
    url: String,
    key: String,
}

struct Timed {
    first_byte: Duration,
    whole: Duration,
    bytes: usize,
}

impl Target {
    async fn send(&self, http: &reqwest::Client, body: &Value) -> reqwest::Response {
        http.post(&self.url).header("x-api-key", &self.key).json(body).send().await.expect("an answer")
    }

    /// The whole streamed answer, timed; `None` if refused.
    async fn stream(&self, http: &reqwest::Client, body: &Value) -> Option<Timed> {
        let started = Instant::now();
        let response = self.send(http, body).await;
        if !response.status().is_success() {
            return None;
        }
        let mut stream = response.bytes_stream();
        let first = stream.next().await?.ok()?;
        let first_byte = started.elapsed();
        let mut bytes = first.len();
        while let Some(piece) = stream.next().await {
            bytes += piece.ok()?.len();
        }
        Some(Timed { first_byte, whole: started.elapsed(), bytes })
    }
}

/// The resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the gateway's status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("a number of KiB")
}
