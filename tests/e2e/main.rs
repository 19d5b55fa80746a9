//! The e2e suite: an installed ooda release, driven only through what its users have: `kubectl`
//! with a kubeconfig, the gateway's API and its preview and sites hosts, and `helm`.
//!
//! It takes a kubeconfig and the address where it reaches the gateway's Service, so the same
//! suite runs against any cluster; `scripts/e2e.sh` (`make e2e`) installs the release and runs it.
//!
//! | variable | what |
//! |---|---|
//! | `OODA_E2E_KUBECONFIG` | the cluster |
//! | `OODA_E2E_GATEWAY` | `host:port` of the gateway's Service (every host name is sent there) |
//! | `OODA_E2E_CA` | PEM CA of the gateway's certificate, if not a public one |
//! | `OODA_E2E_RELEASE`, `OODA_E2E_NAMESPACE` | the Helm release (default `ooda` in `ooda-system`) |
//! | `OODA_KUBECTL`, `OODA_HELM` | the binaries (default: on `PATH`) |
//!
//! The organisation and projects it makes stay behind: its last step shows that uninstalling the
//! release keeps them.

mod cluster;
mod gateway;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use cluster::Cluster;
use gateway::Gateway;

/// What examples/gitops/tenants/acme/ declares: the README's first organisation and project.
const ORG: &str = "acme";
const ADMIN: &str = "alice@acme.example";
const PASSWORD: &str = "e2e password, long enough";

#[tokio::test]
async fn installed_release_serves_users_and_survives_upgrade_and_uninstall() {
    let cluster = Cluster::from_env();
    let gateway = Gateway::from_env();
    let mut steps = Steps::start();

    // The first user, as NOTES.txt tells the installer: `ooda user add` inside the gateway's pod.
    cluster.create_user(ADMIN, PASSWORD);
    steps.done("first user created (kubectl exec … ooda user add)");

    // The README's first organisation and project, as GitOps keeps them: `shop` lives through the
    // upgrade and the uninstall.
    let tenants = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gitops/tenants/acme");
    cluster.kubectl(&["apply", "-f", &format!("{tenants}/organisation.yaml")]);
    cluster.wait_ready("organisation", ORG, None, Duration::from_secs(120));
    cluster.kubectl(&["apply", "-f", &format!("{tenants}/projects.yaml")]);
    assert!(cluster.jurisdictions_with_sites().contains(&"eu".to_owned()), "the release configures eu with sites");
    steps.done("organisation applied and Ready");

    let session = gateway.sign_in(ADMIN, PASSWORD).await;
    steps.done("signed in");

    // `blog` is the API's: created, previewed, published, stopped and deleted through the gateway.
    let created = gateway
        .api(&session, reqwest::Method::POST, &format!("/api/orgs/{ORG}/projects"))
        .json(&json!({ "name": "blog", "spec": project_manifest("blog")["spec"] }))
        .send()
        .await
        .expect("create blog");
    assert_eq!(created.status(), 201, "POST projects: {}", created.text().await.unwrap_or_default());
    let namespace = format!("org-{ORG}");
    for project in ["shop", "blog"] {
        cluster.wait_ready("project", project, Some(&namespace), Duration::from_secs(180));
    }
    let install_to_ready = cluster.seconds_since_release_installed();
    steps.done("two projects Ready on the cluster");

    // Preview: the project's own dev server answers through the gateway, with the project's token.
    let marker = format!("served from the workspace of blog, {}", std::process::id());
    cluster.exec_in_project(&namespace, "blog", &format!("printf '%s' '{marker}' > /workspace/e2e.txt"));
    let blog_preview = gateway.preview(&session, ORG, "blog").await;
    let answer = gateway.preview_get(&blog_preview, "/e2e.txt").await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.expect("body"), marker);
    let wrong = Preview { token: "not-the-token".into(), ..blog_preview.clone() };
    assert_eq!(gateway.preview_get(&wrong, "/e2e.txt").await.status(), 401, "a wrong token is refused");
    steps.done("previewed through the gateway");

    // Publish a site and read it back from the sites host.
    let site = format!("<h1>blog, published by the e2e suite {}</h1>", std::process::id());
    let published = gateway.publish(&session, ORG, "blog", &[("index.html", site.as_str())]).await;
    assert_eq!(published["version"], 1, "{published}");
    let site_url = published["url"].as_str().expect("the release has a sites domain").to_owned();
    // Sites are served from each gateway replica's watch of the project's status: the one
    // answering may see the new version a moment after the publish's answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    let served = loop {
        let served = gateway.site_get(&site_url).await;
        if served.status() == 200 || Instant::now() > deadline {
            break served;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(served.status(), 200);
    assert_eq!(served.text().await.expect("site body"), site);
    steps.done("published a site and served it");

    // NetworkPolicy: the gateway reaches shop's dev server and S3 (the preview and the publish
    // above went through it); from blog, a project, neither they nor the gateway's pod answer.
    let shop_preview = gateway.preview(&session, ORG, "shop").await;
    assert_eq!(gateway.preview_get(&shop_preview, "/").await.status(), 200, "the gateway reaches shop");
    let shop = cluster.pod_address(&namespace, "ooda.run/project=shop");
    let gateway_pod = cluster.pod_address(&cluster.release_namespace, "app.kubernetes.io/component=gateway");
    let s3 = cluster.sites_endpoint("eu");
    let reached = cluster.reachable_from_project(&namespace, "blog", &[&shop, &gateway_pod, &s3]);
    assert!(reached.is_empty(), "a project reached {reached:?} of shop {shop}, the gateway {gateway_pod}, S3 {s3}");
    steps.done("network policy: a project reaches no other project, nor ooda's pods, nor S3");

    // Stop: the preview token dies with it.
    let stop =
        gateway.api(&session, reqwest::Method::POST, &format!("/api/orgs/{ORG}/projects/blog/stop")).send().await;
    assert!(stop.expect("stop").status().is_success());
    gateway.until_status(&blog_preview, "/e2e.txt", 401, Duration::from_secs(30)).await;
    steps.done("stopped: the old preview token is refused");

    // Delete: the project, its children and its site are gone.
    let deleted =
        gateway.api(&session, reqwest::Method::DELETE, &format!("/api/orgs/{ORG}/projects/blog")).send().await;
    assert!(deleted.expect("delete").status().is_success());
    cluster.wait_deleted("project", "blog", &namespace, Duration::from_secs(120));
    cluster.until_none_labelled(&namespace, "ooda.run/project=blog", Duration::from_secs(120));
    assert_eq!(gateway.site_get(&site_url).await.status(), 404, "the site is purged");
    let gone = gateway.api(&session, reqwest::Method::GET, &format!("/api/orgs/{ORG}/projects/blog")).send().await;
    assert_eq!(gone.expect("get blog").status(), 404);
    steps.done("deleted: project, children and site gone");

    // Upgrade to a changed value: the operator's pods roll under leader election; the project and
    // everything of it stay as they were, and the new leader reconciles.
    let shop_before = cluster.children_uids(&namespace, "shop");
    let shop_token = gateway.preview(&session, ORG, "shop").await.token;
    let operators_before = cluster.pod_names("app.kubernetes.io/component=operator");
    cluster.helm_upgrade(&["--reuse-values", "--set", "operator.logLevel=debug"]);
    let operators_after = cluster.pod_names("app.kubernetes.io/component=operator");
    assert!(
        operators_after.iter().all(|pod| !operators_before.contains(pod)),
        "every operator pod was replaced: before {operators_before:?}, after {operators_after:?}"
    );
    cluster.until_leader_among(&operators_after, Duration::from_secs(60));
    assert_eq!(cluster.children_uids(&namespace, "shop"), shop_before, "nothing of shop was recreated");
    assert_eq!(gateway.preview(&session, ORG, "shop").await.token, shop_token, "shop's preview token is unchanged");
    cluster.apply(&project_manifest("docs"));
    cluster.wait_ready("project", "docs", Some(&namespace), Duration::from_secs(180));
    steps.done("helm upgrade: operator replaced, shop untouched, the new leader reconciles");

    // Uninstall: ooda goes; its CRDs and everything users made stay.
    cluster.helm_uninstall();
    for crd in ["organisations.ooda.run", "projects.ooda.run"] {
        assert!(cluster.exists("customresourcedefinition", crd, None), "{crd} was kept");
    }
    assert!(cluster.exists("organisation", ORG, None));
    for project in ["shop", "docs"] {
        assert!(cluster.exists("project", project, Some(&namespace)), "{project} was kept");
    }
    assert!(!cluster.exists("deployment", "ooda-operator", Some(&cluster.release_namespace)));
    steps.done("helm uninstall: CRDs, organisation and projects kept");

    eprintln!("\nfirst projects Ready {install_to_ready:.0} s after `helm install`");
    steps.report();
}

/// A project as a user writes it: small, a preview port, gVisor.
fn project_manifest(name: &str) -> Value {
    json!({
        "apiVersion": "ooda.run/v1alpha1", "kind": "Project",
        "metadata": { "name": name, "namespace": format!("org-{ORG}") },
        "spec": {
            "isolation": "gvisor",
            "resources": { "cpu": "250m", "memory": "256Mi", "storage": "1Gi" },
            "ports": [{ "name": "web", "port": 8080, "preview": true }],
            "lifecycle": { "state": "Running", "idleTimeout": "1h" },
        },
    })
}

/// A project's preview host and token, as `GET …/preview` answers them.
#[derive(Clone)]
pub struct Preview {
    pub host: String,
    pub token: String,
}

/// Each step's time, reported at the end.
struct Steps {
    last: Instant,
    done: Vec<(String, Duration)>,
}

impl Steps {
    fn start() -> Self {
        Self { last: Instant::now(), done: Vec::new() }
    }

    fn done(&mut self, step: &str) {
        let took = self.last.elapsed();
        self.last = Instant::now();
        eprintln!("e2e: {step} ({:.1} s)", took.as_secs_f64());
        self.done.push((step.to_owned(), took));
    }

    fn report(&self) {
        let total: Duration = self.done.iter().map(|(_, took)| *took).sum();
        eprintln!("e2e: {} steps in {:.1} s", self.done.len(), total.as_secs_f64());
    }
}
