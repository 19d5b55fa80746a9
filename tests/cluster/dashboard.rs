//! The dashboard in a real headless Chromium (Debian's `chromium`), driven by playwright-core
//! (`tests/browser/dashboard.mjs`), against the real gateway and operator on the local control
//! plane (and a stand-in for Anthropic's API behind the AI relay): the user's whole path through
//! the page, with an axe-core scan of every view.
//! Screenshots of each step go to `.local/screenshots/dashboard/`.

use std::time::Duration;

use crate::ai::{add_ai_credentials, relay_config};
use crate::gateway::{ALICE, dev_port, organisation};
use crate::gateway_harness::{Gateway, PASSWORD, add_user, follow_pod};
use crate::harness::{client, install_crds, repo, unique_name};
use crate::kit::anthropic::StandIn;
use crate::operator_harness::World;

/// What the stand-in dev server's answer (a JSON echo of the request) always contains.
const PREVIEW_TEXT: &str = r#""method":"GET""#;

#[tokio::test]
async fn a_user_drives_projects_previews_sites_and_members_through_the_dashboard_in_chromium() {
    let client = client().await;
    install_crds(&client).await;
    // The project page's AI panel talks to a stand-in for Anthropic's API, through the relay.
    let (eu, us) = (StandIn::start("eu").await, StandIn::start("us").await);
    let config = relay_config("dashboard", &eu, &us);
    let world = World::start_with(&client, "dashboard", config.clone()).await;
    add_ai_credentials(&world, "anthropic-eu", "sk-dashboard-test").await;
    let org = organisation(&world).await;
    add_user(&world, &world.home.name, ALICE).await;
    // Preview and site URLs carry the port the browser reaches the gateway on.
    let gateway = Gateway::start_with(
        &world.home.name,
        &config,
        &["--insecure-http", "--public-port", "0", "--activity-interval", "2s"],
        crate::harness::kubeconfig_path(),
        reqwest::Client::builder(),
    )
    .await;
    let project = unique_name("web");
    let port = dev_port();
    let _dev_server = follow_pod(&client, &format!("org-{org}"), &project, port);
    let member = format!("{}@acme.example", unique_name("dora"));
    let screenshots = repo().join(".local/screenshots/dashboard");
    std::fs::create_dir_all(&screenshots).expect("the screenshots folder");

    let browser_tests = repo().join("tests/browser");
    assert!(
        browser_tests.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed in {}: run `make tools`",
        browser_tests.display()
    );
    let chromium = std::env::var("OODA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let host_network = crate::harness::HOST_NETWORK.write().await;
    let run = tokio::process::Command::new("node")
        .arg(browser_tests.join("dashboard.mjs"))
        .env("OODA_DASHBOARD_URL", gateway.url_at("ooda.localhost", "/"))
        .env("OODA_CHROMIUM", chromium)
        .env("OODA_SCREENSHOTS", &screenshots)
        .env("OODA_ORG", &org)
        .env("OODA_ADMIN_EMAIL", ALICE)
        .env("OODA_ADMIN_PASSWORD", PASSWORD)
        .env("OODA_MEMBER_EMAIL", &member)
        .env("OODA_PROJECT", &project)
        .env("OODA_PROJECT_PORT", port.to_string())
        .env("OODA_PREVIEW_TEXT", PREVIEW_TEXT)
        .env("OODA_AI_REPLY", "eu heard: ")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the browser test ends within 5 minutes")
        .expect("run node");
    drop(host_network);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the browser test failed:\n{text}");
    eprintln!("{text}");
    world.cleanup().await;
}
