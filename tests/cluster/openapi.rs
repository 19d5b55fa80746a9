//! The REST API against its own OpenAPI document, by schemathesis (PyPI: a tool no one here
//! wrote): requests generated from the document, as an organisation's admin, as a member, and
//! as another organisation's admin. Every answer must be one the document describes (status,
//! content type, body schema), none a server error, and none of the organisation's to an admin
//! of another.

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use ooda::crd::Organisation;
use serde_json::json;

use crate::gateway::{BOB, dev_port, running_project, setup};
use crate::gateway_harness::add_user;
use crate::harness::{repo, unique_name, wait_for};
use crate::operator_harness::organisation_ready;

/// Seconds schemathesis spends on each session's run.
const RUN_SECONDS: &str = "40";

#[tokio::test]
async fn schemathesis_finds_only_documented_answers_and_nothing_across_organisations() {
    let s = setup("gw-openapi").await;
    running_project(&s, "shop", dev_port(), "15m").await;
    let bob = s.gateway.session(BOB).await;
    // Another organisation, whose only member is its admin.
    let carol = "carol@globex.example";
    add_user(&s.world, &s.world.home.name, carol).await;
    let globex = unique_name("org");
    let mut manifest = s.world.organisation_manifest(&globex, "eu");
    manifest["spec"]["members"] = json!([{ "email": carol, "role": "admin" }]);
    let organisations: Api<Organisation> = Api::all(s.world.client.clone());
    let created = serde_json::from_value(manifest).expect("organisation");
    organisations.create(&PostParams::default(), &created).await.expect("create the other organisation");
    wait_for(&organisations, &globex, organisation_ready()).await;
    let carol = s.gateway.session(carol).await;

    let base = s.gateway.url("");
    for (who, session, other_organisation) in
        [("member", &bob, false), ("admin", &s.alice, false), ("another organisation's admin", &carol, true)]
    {
        let (passed, output) = schemathesis(&base, session, &s.org, "shop", other_organisation);
        assert!(passed, "schemathesis as {who}:\n{output}");
        let cases = output.lines().skip_while(|l| !l.starts_with("Test cases:")).nth(1).unwrap_or_default();
        eprintln!("schemathesis as {who}: {}", cases.trim());
    }
    // The runs changed nothing they had no right to: the organisations are both still there.
    let namespaces: Api<Namespace> = Api::all(s.world.client.clone());
    assert!(namespaces.get_opt(&format!("org-{globex}")).await.expect("read").is_some());
    s.world.cleanup().await;
}

/// Runs schemathesis with `session` against the gateway at `base`, paths naming `org` and
/// `project`; whether it passed, and what it printed.
fn schemathesis(base: &str, session: &str, org: &str, project: &str, other_organisation: bool) -> (bool, String) {
    let mut command = Command::new(tools().join("bin/st"));
    command
        .current_dir(std::env::temp_dir())
        .env("OODA_GATEWAY", base.trim_end_matches('/'))
        .env("OODA_SESSION", session)
        .env("OODA_ORG", org)
        .env("OODA_PROJECT", project)
        .env("PYTHONPATH", repo().join("tests/openapi"))
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(repo().join("tests/openapi/schemathesis.toml"));
    if other_organisation {
        command.env("SCHEMATHESIS_HOOKS", "other_organisation");
    }
    let schema = format!("{}/api/openapi.json", base.trim_end_matches('/'));
    // One worker: two import schemathesis's lazy modules at once and CPython 3.11 can fail doing so.
    command.args(["run", &schema, "--max-time", RUN_SECONDS, "--workers", "1"]);
    // Left out: what ends the session that runs (signing out everywhere, or a member), and the
    // streams (events, terminal) and the AI relay, which its own suite covers.
    command.args(["--exclude-path-regex", "sign-out|/events$|/terminal$|/ai/"]);
    if other_organisation {
        command.args(["--checks", "not_a_server_error,finds_nothing_of_another_organisation"]);
    }
    let output = command.output().expect("run schemathesis");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// schemathesis's virtualenv, which `make tools` prepares.
fn tools() -> PathBuf {
    crate::harness::cached_tool("schemathesis", "SCHEMATHESIS_VERSION")
}
