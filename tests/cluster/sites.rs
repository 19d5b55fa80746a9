//! Published sites against the real control plane, the real operator and gateway, and a real S3
//! API server on loopback (moto, started by `make cluster-up`): publish, serve, roll back,
//! hostile archives, S3 outages mid-publish and mid-delete, residency, and the environment's own
//! publish token.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_s3::config::Credentials;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use ooda::config::{ChecksumMode, SitesStorage};
use ooda::crd::{Organisation, Phase, Project};
use ooda::sites::Bucket;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::gateway_harness::{Gateway, add_user};
use crate::harness::{SETTLE, client, eventually, install_crds, unique_name, wait_deleted, wait_for};
use crate::operator_harness::{World, organisation_ready, project_phase};

const ALICE: &str = "alice@acme.example";
const SITES_DOMAIN: &str = "sites.ooda.localhost";
pub(crate) const S3: &str = "127.0.0.1:24566";

/// A tar archive of `(path, contents)`, gzip-compressed if asked. Paths are written as given,
/// even the ones `tar` itself would refuse.
pub(crate) fn archive(files: &[(&str, &[u8])], gzip: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, data) in files {
        out.extend_from_slice(&header(path, tokio_tar::EntryType::Regular, data.len() as u64, None));
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    if gzip { gzipped(&out) } else { out }
}

fn header(path: &str, kind: tokio_tar::EntryType, size: u64, link: Option<&str>) -> Vec<u8> {
    let mut header = tokio_tar::Header::new_gnu();
    header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o644);
    if let Some(target) = link {
        header.set_link_name(target).expect("link name");
    }
    header.set_cksum();
    header.as_bytes().to_vec()
}

fn gzipped(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).expect("compress");
    encoder.finish().expect("compress")
}

/// The test's view of a bucket, straight from S3 (not through ooda).
pub(crate) fn bucket(name: &str, endpoint: &str) -> Bucket {
    let storage = SitesStorage {
        endpoint: format!("http://{endpoint}"),
        region: "eu-central-1".into(),
        bucket: name.into(),
        credentials_secret: "unused".into(),
        force_path_style: true,
        request_checksum: ChecksumMode::WhenRequired,
    };
    Bucket::new(&storage, Credentials::new("ooda-test", "ooda-test-secret", None, None, "tests"))
}

struct Site {
    world: World,
    gateway: Gateway,
    org: String,
    alice: String,
}

impl Site {
    async fn start(test: &str, config: Option<std::path::PathBuf>) -> Self {
        let client = client().await;
        install_crds(&client).await;
        let config = config.unwrap_or_else(crate::operator_harness::example_config);
        let world = World::start_with(&client, test, config.clone()).await;
        let org = world.ready_organisation("eu").await.metadata.name.expect("name");
        add_user(&world, &world.home.name, ALICE).await;
        let gateway = Gateway::start_with(
            &world.home.name,
            &config,
            &["--insecure-http"],
            crate::harness::kubeconfig_path(),
            reqwest::Client::builder(),
        )
        .await;
        let alice = gateway.session(ALICE).await;
        Site { world, gateway, org, alice }
    }

    async fn project(&self, name: &str) {
        let path = format!("/api/orgs/{}/projects", self.org);
        let body = json!({ "name": name, "spec": { "ports": [{ "name": "web", "port": 3000, "preview": true }] } });
        let created = self.gateway.call(Method::POST, &path, Some(&self.alice), Some(body)).await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let projects: Api<Project> = Api::namespaced(self.world.client.clone(), &format!("org-{}", self.org));
        wait_for(&projects, name, project_phase(Phase::Running)).await;
    }

    async fn publish(&self, project: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let url = self.gateway.url(&format!("/api/orgs/{}/projects/{project}/publish", self.org));
        let response = reqwest::Client::new()
            .post(url)
            .bearer_auth(&self.alice)
            .header("content-type", "application/gzip")
            .body(body)
            .send()
            .await
            .expect("answer");
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }

    /// A publish of `body` over a raw connection, of which only the first `sent` bytes are sent:
    /// the test decides what happens to the rest.
    async fn start_publish(&self, project: &str, body: &[u8], sent: usize) -> TcpStream {
        let mut connection = TcpStream::connect(self.gateway.addr).await.expect("connect to the gateway");
        let head = format!(
            "POST /api/orgs/{}/projects/{project}/publish HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\
             content-type: application/x-tar\r\ncontent-length: {}\r\n\r\n",
            self.org,
            self.gateway.addr,
            self.alice,
            body.len()
        );
        tokio::io::AsyncWriteExt::write_all(&mut connection, head.as_bytes()).await.expect("send the head");
        tokio::io::AsyncWriteExt::write_all(&mut connection, &body[..sent]).await.expect("send part of the body");
        connection
    }

    fn host(&self, project: &str) -> String {
        format!("{project}--{}.{SITES_DOMAIN}", self.org)
    }

    async fn get(&self, project: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let host = self.host(project);
        let client = self.gateway.preview_client(&host);
        let mut request = client.get(self.gateway.url_at(&host, path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("answer")
    }

    /// Waits until the site's `/` answers `expected` (the live version moves through the
    /// project's status, which the gateway sees by watch).
    async fn serves(&self, project: &str, expected: &str) {
        eventually(Duration::from_secs(10), &format!("the site serves {expected:?}"), || async {
            let response = self.get(project, "/", &[]).await;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            (status == StatusCode::OK && text == expected).then_some(())
        })
        .await;
    }
}

fn site_v(n: u8) -> Vec<u8> {
    let index = format!("<h1>version {n}</h1>");
    archive(
        &[
            ("index.html", index.as_bytes()),
            ("style.css", b"body { color: teal }"),
            ("docs/index.html", b"<h1>docs</h1>"),
            ("404.html", b"<h1>lost</h1>"),
        ],
        true,
    )
}

#[tokio::test]
async fn versions_are_published_served_and_rolled_back() {
    let s = Site::start("sites-publish", None).await;
    s.project("blog").await;
    // The cleanup finalizer comes with the first thing put outside the cluster, not before.
    let projects: Api<Project> = Api::namespaced(s.world.client.clone(), &format!("org-{}", s.org));
    let finalized = |p: Project| p.finalizers().contains(&ooda::crd::names::FINALIZER.to_owned());
    assert!(!finalized(projects.get("blog").await.expect("project")), "a finalizer before anything was published");
    let (status, v1) = s.publish("blog", site_v(1)).await;
    assert_eq!(status, StatusCode::CREATED, "{v1}");
    assert!(finalized(projects.get("blog").await.expect("project")), "published without the finalizer that purges it");
    assert_eq!((v1["version"].as_i64(), v1["files"].as_i64()), (Some(1), Some(4)));
    s.serves("blog", "<h1>version 1</h1>").await;
    let (status, v2) = s.publish("blog", site_v(2)).await;
    assert_eq!((status, v2["version"].as_i64()), (StatusCode::CREATED, Some(2)));
    s.serves("blog", "<h1>version 2</h1>").await;

    let css = s.get("blog", "/style.css", &[]).await;
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert!(css.headers()["cache-control"].to_str().unwrap().contains("max-age"));
    let etag = css.headers()["etag"].to_str().expect("etag").to_owned();
    let again = s.get("blog", "/style.css", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let range = s.get("blog", "/style.css", &[("range", "bytes=0-3")]).await;
    assert_eq!(range.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(range.headers()["content-range"], "bytes 0-3/20");
    assert_eq!(range.text().await.unwrap(), "body");

    let directory = s.get("blog", "/docs", &[]).await;
    assert_eq!(
        (directory.status(), directory.headers()["location"].to_str().unwrap()),
        (StatusCode::MOVED_PERMANENTLY, "/docs/")
    );
    assert_eq!(s.get("blog", "/docs/", &[]).await.text().await.unwrap(), "<h1>docs</h1>");
    let missing = s.get("blog", "/nope.html", &[]).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.text().await.unwrap(), "<h1>lost</h1>");
    assert_eq!(s.get("blog", "/../../etc/passwd", &[]).await.status(), StatusCode::NOT_FOUND);

    let versions_path = format!("/api/orgs/{}/projects/blog/versions", s.org);
    let versions = s.gateway.call(Method::GET, &versions_path, Some(&s.alice), None).await;
    assert_eq!(versions.body["current"], 2);
    let listed = versions.body["versions"].as_array().expect("versions");
    assert_eq!(listed.len(), 2);
    assert_eq!((listed[0]["version"].as_i64(), listed[0]["files"].as_i64()), (Some(1), Some(4)));
    assert_eq!(listed[0]["publisher"], ALICE);

    let rollback = s.gateway.call(Method::POST, &format!("{versions_path}/1/activate"), Some(&s.alice), None).await;
    assert_eq!(rollback.status, StatusCode::OK, "{:?}", rollback.body);
    s.serves("blog", "<h1>version 1</h1>").await;
    let absent = s.gateway.call(Method::POST, &format!("{versions_path}/9/activate"), Some(&s.alice), None).await;
    assert_eq!(absent.status, StatusCode::NOT_FOUND);

    // The operator writes the project's status too (here: the activity it sees), but never
    // `published`: that is the gateway's alone, so the operator cannot undo a publish.
    let ns = format!("org-{}", s.org);
    let before = Timestamp::now();
    crate::operator_harness::renew_activity(&s.world.client, &ns, "blog").await;
    let projects: Api<Project> = Api::namespaced(s.world.client.clone(), &ns);
    let seen = wait_for(&projects, "blog", move |p: Option<&Project>| {
        p.and_then(|p| p.status.as_ref()?.last_activity.as_ref()).is_some_and(|t| t.0.as_second() >= before.as_second())
    })
    .await;
    assert_eq!(seen.status.as_ref().and_then(|s| s.published.as_ref()?.current), Some(1));
    let managers = seen.metadata.managed_fields.unwrap_or_default();
    let owns_published = |manager: &str| {
        managers.iter().any(|m| {
            m.manager.as_deref() == Some(manager)
                && m.fields_v1.as_ref().is_some_and(|f| f.0.to_string().contains("\"f:published\""))
        })
    };
    assert!(owns_published("ooda-gateway") && !owns_published("ooda-operator"), "{managers:#?}");

    // `kubectl get projects` shows the live version: the API server's table, as kubectl asks.
    let table = http::Request::get(format!("/apis/ooda.run/v1alpha1/namespaces/{ns}/projects/blog"))
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .expect("request");
    let table: Value = s.world.client.request(table).await.expect("table");
    let columns: Vec<&str> =
        table["columnDefinitions"].as_array().expect("columns").iter().filter_map(|c| c["name"].as_str()).collect();
    let site = columns.iter().position(|c| *c == "Site").expect("a Site column");
    assert_eq!(table["rows"][0]["cells"][site], 1, "{table}");

    // Both versions' files stay in the bucket until the project is deleted.
    let objects = bucket("ooda-sites-eu", S3).list(&format!("{}/blog/", s.org)).await.expect("list");
    assert!(
        objects.iter().any(|k| k.ends_with("/v1/index.html")) && objects.iter().any(|k| k.ends_with("/v2/index.html"))
    );
    s.world.cleanup().await;
}

#[tokio::test]
async fn hostile_archives_are_refused_and_leave_nothing_behind() {
    let s = Site::start("sites-hostile", None).await;
    s.project("safe").await;
    let mut symlink = header("evil", tokio_tar::EntryType::Symlink, 0, Some("/etc/passwd"));
    symlink.resize(symlink.len() + 1024, 0);
    let mut with_good_first = archive(&[("index.html", b"fine")], false);
    with_good_first.truncate(with_good_first.len() - 1024);
    with_good_first.extend_from_slice(&symlink);
    // Under every size limit, so only the ratio can stop it.
    let zeros = vec![0u8; 64 << 20];
    let bomb = gzipped(&archive(&[("zeros.bin", &zeros)], false));
    // A whole first file, then nothing: the stream ends where the next header would be.
    let mut cut_short = archive(&[("index.html", b"fine"), ("about.html", b"also fine")], false);
    cut_short.truncate(1024);
    let cases: [(&str, Vec<u8>, StatusCode, &str); 8] = [
        (
            "the same path twice",
            archive(&[("index.html", b"one"), ("about.html", b"x"), ("./index.html", b"two")], true),
            StatusCode::BAD_REQUEST,
            "more than once",
        ),
        (
            "a right-to-left override in a name",
            archive(&[("index.html", b"ok"), ("invoice\u{202e}lmth.exe", b"x")], false),
            StatusCode::BAD_REQUEST,
            "direction-changing",
        ),
        ("cut short between two files", cut_short, StatusCode::BAD_REQUEST, "cut short"),
        (
            "traversal",
            archive(&[("index.html", b"ok"), ("../../escape.html", b"x")], true),
            StatusCode::BAD_REQUEST,
            "escape.html",
        ),
        ("absolute", archive(&[("/etc/cron.d/evil", b"x")], false), StatusCode::BAD_REQUEST, "/etc/cron.d/evil"),
        ("symlink after a good file", with_good_first, StatusCode::BAD_REQUEST, "links are not allowed"),
        ("gzip bomb", bomb, StatusCode::PAYLOAD_TOO_LARGE, "inflates"),
        ("not an archive", b"<html>definitely not a tarball</html>".repeat(30), StatusCode::BAD_REQUEST, "tar"),
    ];
    for (case, body, status, named) in cases {
        let (answer, error) = s.publish("safe", body).await;
        assert_eq!(answer, status, "{case}: {error}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{case}: the message should name the problem: {message}");
    }
    let objects = bucket("ooda-sites-eu", S3).list(&format!("{}/safe/", s.org)).await.expect("list");
    assert_eq!(objects, Vec::<String>::new(), "nothing written, not even a half version");
    let versions_path = format!("/api/orgs/{}/projects/safe/versions", s.org);
    let versions = s.gateway.call(Method::GET, &versions_path, Some(&s.alice), None).await;
    assert_eq!(versions.body["versions"], json!([]));
    s.world.cleanup().await;
}

#[tokio::test]
async fn a_publish_racing_its_projects_deletion_leaves_nothing_in_s3() {
    let s = Site::start("sites-race", None).await;
    s.project("race").await;
    let big: Vec<(String, Vec<u8>)> = (0..40).map(|i| (format!("asset-{i}.bin"), vec![i as u8; 256 << 10])).collect();
    let files: Vec<(&str, &[u8])> = big.iter().map(|(p, d)| (p.as_str(), d.as_slice())).collect();
    let body = archive(&files, false);
    let mut connection = s.start_publish("race", &body, body.len() / 2).await;
    let s3 = bucket("ooda-sites-eu", S3);
    let prefix = format!("{}/race/", s.org);
    eventually(Duration::from_secs(20), "the publish writes its first files", || async {
        s3.list(&format!("{prefix}v1/")).await.expect("list").first().cloned()
    })
    .await;

    // The project is deleted meanwhile: its finalizer purges the prefix and lets it go.
    let projects: Api<Project> = Api::namespaced(s.world.client.clone(), &format!("org-{}", s.org));
    let uid = projects.get("race").await.expect("project").metadata.uid.expect("uid");
    projects.delete("race", &Default::default()).await.expect("delete the project");
    wait_deleted(&projects, "race", &uid).await;

    // The rest of the upload arrives after the purge; none of it may outlive the project.
    let _ = tokio::io::AsyncWriteExt::write_all(&mut connection, &body[body.len() / 2..]).await;
    // The status line is enough (the connection may stay open after the answer).
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(SETTLE, tokio::io::AsyncReadExt::read(&mut connection, &mut answer)).await;
    let n = read.expect("an answer in time").unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(!answer.starts_with("HTTP/1.1 201"), "a publish into a deleted project succeeded: {answer}");
    eventually(Duration::from_secs(10), "nothing of the deleted project left in S3", || async {
        s3.list(&prefix).await.expect("list").is_empty().then_some(())
    })
    .await;
    s.world.cleanup().await;
}

#[tokio::test]
async fn git_archive_output_publishes_as_a_site() {
    let s = Site::start("sites-git", None).await;
    s.project("docs").await;
    let repo = std::env::temp_dir().join(format!("ooda-git-site-{}", s.world.home.name));
    std::fs::create_dir_all(repo.join("guide")).expect("temp repo");
    std::fs::write(repo.join("index.html"), "<h1>from git</h1>").expect("write");
    std::fs::write(repo.join("guide/index.html"), "<h1>guide</h1>").expect("write");
    let git = |args: &[&str]| {
        let output = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(&repo)
            .output()
            .expect("run git");
        assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "site"]);
    // Its first entry is a pax global header carrying the commit id: metadata, not a file.
    let (status, body) = s.publish("docs", git(&["archive", "--format=tar.gz", "HEAD"])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["files"], 2, "{body}");
    s.serves("docs", "<h1>from git</h1>").await;
    let objects = bucket("ooda-sites-eu", S3).list(&format!("{}/docs/v1/", s.org)).await.expect("list");
    assert_eq!(objects.len(), 2, "{objects:?}");
    std::fs::remove_dir_all(&repo).ok();
    s.world.cleanup().await;
}

/// A TCP forwarder to the local S3 that can be cut (connections dropped, new ones refused by
/// closing at once) and restored: an S3 outage without losing the server's contents. It can also
/// be slowed: each chunk S3 sends waits a while before it is passed on.
struct Outage {
    address: SocketAddr,
    down: Arc<AtomicBool>,
    /// Milliseconds each chunk from S3 is held.
    delay: Arc<AtomicU64>,
}

impl Outage {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind forwarder");
        let address = listener.local_addr().expect("address");
        let down = Arc::new(AtomicBool::new(false));
        let delay = Arc::new(AtomicU64::new(0));
        let (flag, held) = (down.clone(), delay.clone());
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { return };
                if flag.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let (flag, held) = (flag.clone(), held.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(S3).await else { return };
                    let ((mut from_client, mut to_client), (mut from_s3, mut to_s3)) =
                        (inbound.into_split(), outbound.into_split());
                    let up = tokio::io::copy(&mut from_client, &mut to_s3);
                    let down = async {
                        let mut chunk = vec![0; 16 << 10];
                        loop {
                            let n = from_s3.read(&mut chunk).await?;
                            if n == 0 {
                                return std::io::Result::Ok(());
                            }
                            let hold = held.load(Ordering::SeqCst);
                            if hold > 0 {
                                tokio::time::sleep(Duration::from_millis(hold)).await;
                            }
                            to_client.write_all(&chunk[..n]).await?;
                        }
                    };
                    tokio::pin!(up, down);
                    loop {
                        tokio::select! {
                            _ = &mut up => return,
                            _ = &mut down => return,
                            () = tokio::time::sleep(Duration::from_millis(20)) => if flag.load(Ordering::SeqCst) { return },
                        }
                    }
                });
            }
        });
        Self { address, down, delay }
    }

    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
        self.delay.store(0, Ordering::SeqCst);
    }

    /// S3 answers, `by` late for every chunk it sends.
    fn slow(&self, by: Duration) {
        self.delay.store(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// The example configuration with the EU bucket reached through this forwarder.
    fn config(&self, test: &str) -> std::path::PathBuf {
        self.config_with(test, |text| text)
    }

    /// [`Self::config`], then changed by `change`.
    fn config_with(&self, test: &str, change: impl FnOnce(String) -> String) -> std::path::PathBuf {
        let example = std::fs::read_to_string(crate::operator_harness::example_config()).expect("example config");
        let endpoint = format!("http://{}", self.address);
        let text = example.replacen("endpoint: http://127.0.0.1:24566", &format!("endpoint: {endpoint}"), 1);
        assert_ne!(text, example, "the example configuration names the local S3");
        let text = change(text);
        let path = std::env::temp_dir().join(format!("ooda-{test}-config.yaml"));
        std::fs::write(&path, text).expect("write config");
        path
    }
}

#[tokio::test]
async fn an_s3_outage_mid_publish_keeps_the_live_version_and_delays_deletion_until_it_ends() {
    let outage = Outage::start().await;
    let test = unique_name("sites-outage");
    let s = Site::start("sites-outage", Some(outage.config(&test))).await;
    s.project("steady").await;
    let (status, v1) = s.publish("steady", site_v(1)).await;
    assert_eq!(status, StatusCode::CREATED, "{v1}");
    s.serves("steady", "<h1>version 1</h1>").await;

    // A large publish streams slowly; S3 goes away in the middle of it.
    let big: Vec<(String, Vec<u8>)> = (0..40).map(|i| (format!("asset-{i}.bin"), vec![i as u8; 256 << 10])).collect();
    let files: Vec<(&str, &[u8])> = big.iter().map(|(p, d)| (p.as_str(), d.as_slice())).collect();
    let body = archive(&files, false);
    let (sender, receiver) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let url = s.gateway.url(&format!("/api/orgs/{}/projects/steady/publish", s.org));
    let upload =
        reqwest::Client::new().post(url).bearer_auth(&s.alice).body(reqwest::Body::wrap_stream(receiver)).send();
    let feed = async move {
        let mut sender = sender;
        for (i, chunk) in body.chunks(64 << 10).enumerate() {
            if i == 40 {
                outage.cut();
            }
            if futures::SinkExt::send(&mut sender, Ok(chunk.to_vec())).await.is_err() {
                break;
            }
        }
        outage
    };
    let (answer, outage) = tokio::join!(upload, feed);
    let answer = answer.expect("an answer");
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE, "{:?}", answer.text().await);
    outage.restore();
    s.serves("steady", "<h1>version 1</h1>").await;
    let versions_path = format!("/api/orgs/{}/projects/steady/versions", s.org);
    let versions = s.gateway.call(Method::GET, &versions_path, Some(&s.alice), None).await;
    assert_eq!(
        (versions.body["current"].as_i64(), versions.body["versions"].as_array().map(Vec::len)),
        (Some(1), Some(1))
    );
    let manifests = bucket("ooda-sites-eu", S3).list(&format!("{}/steady/manifests/v2", s.org)).await.expect("list");
    assert!(manifests.iter().all(|k| !k.ends_with(".json")), "no manifest of the failed version: {manifests:?}");

    // Deleting while S3 is down waits, and says why; once it is back the project goes, and so
    // does everything under its prefix.
    outage.cut();
    let projects: Api<Project> = Api::namespaced(s.world.client.clone(), &format!("org-{}", s.org));
    let uid = projects.get("steady").await.expect("project").metadata.uid.expect("uid");
    let project_path = format!("/api/orgs/{}/projects/steady", s.org);
    let deleted = s.gateway.call(Method::DELETE, &project_path, Some(&s.alice), None).await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED);
    let blocked = wait_for(&projects, "steady", |p: Option<&Project>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "CleanupBlocked" && c.status == "True"))
    })
    .await;
    let condition =
        blocked.status.expect("status").conditions.into_iter().find(|c| c.type_ == "CleanupBlocked").unwrap();
    assert!(condition.message.contains("published-sites"), "{}", condition.message);
    outage.restore();
    wait_deleted(&projects, "steady", &uid).await;
    let left = bucket("ooda-sites-eu", S3).list(&format!("{}/steady/", s.org)).await.expect("list");
    assert_eq!(left, Vec::<String>::new());
    s.world.cleanup().await;
}

#[tokio::test]
async fn a_slow_s3_gets_visitors_a_504_within_the_bound_and_publishing_keeps_its_limits() {
    let s3 = Outage::start().await;
    let test = unique_name("sites-slow");
    let config = s3.config_with(&test, |text| {
        let publishing = "maxConcurrent: 8, uploadIdleTimeout: 60s, serveTimeout: 10s";
        assert!(text.contains(publishing), "the example's publishing settings");
        text.replacen(publishing, "maxConcurrent: 1, uploadIdleTimeout: 60s, serveTimeout: 2s", 1)
    });
    let s = Site::start("sites-slow", Some(config)).await;
    s.project("steady").await;
    let (status, v1) = s.publish("steady", site_v(1)).await;
    assert_eq!(status, StatusCode::CREATED, "{v1}");
    s.serves("steady", "<h1>version 1</h1>").await;

    // Seconds per answer: a visitor is told so within the bound, not held for as long as S3 takes.
    s3.slow(Duration::from_secs(6));
    let asked = Instant::now();
    let answer = s.get("steady", "/", &[]).await;
    let waited = asked.elapsed();
    assert_eq!(answer.status(), StatusCode::GATEWAY_TIMEOUT);
    let body: Value = answer.json().await.expect("a JSON refusal");
    assert_eq!(body["error"], "storage_timeout", "{body}");
    assert!((Duration::from_secs(2)..Duration::from_secs(5)).contains(&waited), "answered after {waited:?}");

    // A publish under way holds the one slot while S3 crawls; another is refused at once, and
    // the first completes once S3 is quick again.
    s3.slow(Duration::from_secs(1));
    let crawling = s.publish("steady", site_v(2));
    let meanwhile = async {
        let written = format!("{}/steady/v2/", s.org);
        eventually(Duration::from_secs(30), "the slow publish writes its first file", || async {
            (!bucket("ooda-sites-eu", S3).list(&written).await.expect("list").is_empty()).then_some(())
        })
        .await;
        let asked = Instant::now();
        let (status, body) = s.publish("steady", site_v(3)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(asked.elapsed() < Duration::from_secs(2), "refused after {:?}", asked.elapsed());
        s3.restore();
    };
    let ((status, body), ()) = tokio::join!(crawling, meanwhile);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    s.serves("steady", "<h1>version 2</h1>").await;
    s.world.cleanup().await;
}

#[tokio::test]
async fn a_client_gone_mid_upload_leaves_the_live_version_and_nothing_of_its_own() {
    let s = Site::start("sites-abandoned", None).await;
    s.project("steady").await;
    let (status, v1) = s.publish("steady", site_v(1)).await;
    assert_eq!(status, StatusCode::CREATED, "{v1}");

    let big: Vec<(String, Vec<u8>)> = (0..40).map(|i| (format!("asset-{i}.bin"), vec![i as u8; 256 << 10])).collect();
    let files: Vec<(&str, &[u8])> = big.iter().map(|(p, d)| (p.as_str(), d.as_slice())).collect();
    let body = archive(&files, false);
    let connection = s.start_publish("steady", &body, body.len() / 2).await;

    // Once files of version 2 are in the bucket, the client goes away.
    let s3 = bucket("ooda-sites-eu", S3);
    let v2 = format!("{}/steady/v2/", s.org);
    eventually(Duration::from_secs(20), "the publish writes version 2", || async {
        (!s3.list(&v2).await.expect("list").is_empty()).then_some(())
    })
    .await;
    drop(connection);

    let reservation = format!("{}/steady/manifests/v2", s.org);
    eventually(Duration::from_secs(20), "nothing of version 2 left behind", || async {
        let (files, manifests) = (s3.list(&v2).await.expect("list"), s3.list(&reservation).await.expect("list"));
        (files.is_empty() && manifests.is_empty()).then_some(())
    })
    .await;
    s.serves("steady", "<h1>version 1</h1>").await;
    let versions_path = format!("/api/orgs/{}/projects/steady/versions", s.org);
    let versions = s.gateway.call(Method::GET, &versions_path, Some(&s.alice), None).await;
    assert_eq!(versions.body["versions"].as_array().map(Vec::len), Some(1), "{:?}", versions.body);
    s.world.cleanup().await;
}

/// The example configuration with its `publishing` line replaced by `publishing`.
fn config_with_publishing(test: &str, publishing: &str) -> std::path::PathBuf {
    let example = std::fs::read_to_string(crate::operator_harness::example_config()).expect("example config");
    let line = example.lines().find(|l| l.starts_with("publishing:")).expect("a publishing line");
    let path = std::env::temp_dir().join(format!("ooda-{test}-config.yaml"));
    std::fs::write(&path, example.replace(line, &format!("publishing: {publishing}"))).expect("write config");
    path
}

#[tokio::test]
async fn a_stalled_upload_is_dropped_with_408_and_publishes_beyond_the_limit_wait_their_turn() {
    let test = unique_name("sites-busy");
    let s =
        Site::start("sites-busy", Some(config_with_publishing(&test, "{ maxConcurrent: 1, uploadIdleTimeout: 2s }")))
            .await;
    s.project("busy").await;

    // One whole file, half of the next, then silence: the publish holds the only slot.
    let first = vec![b'1'; 64 << 10];
    let second = vec![b'2'; 64 << 10];
    let body = archive(&[("first.bin", &first), ("second.bin", &second)], false);
    let sent = 512 + first.len() + 512 + second.len() / 2;
    let mut stalled = s.start_publish("busy", &body, sent).await;
    let s3 = bucket("ooda-sites-eu", S3);
    let prefix = format!("{}/busy/", s.org);
    eventually(Duration::from_secs(10), "the stalled publish writes its first file", || async {
        s3.list(&prefix).await.expect("list").iter().any(|k| k.ends_with("/first.bin")).then_some(())
    })
    .await;

    let (status, refused) = s.publish("busy", site_v(1)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
    assert!(
        refused["message"].as_str().unwrap_or_default().contains("as many publishes as it allows (1)"),
        "{refused}"
    );

    // The answer's JSON body ends with `}`; the connection may stay open after it.
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answer.ends_with(b"}") {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, tokio::io::AsyncReadExt::read(&mut stalled, &mut chunk)).await;
        let n = read.expect("an answer to the stalled upload in time").expect("read");
        assert!(n > 0, "closed without an answer: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("upload_stalled") && answer.contains("nothing arrived for 2s"), "{answer}");

    // The slot is free again, and the abandoned version left nothing behind.
    let (status, published) = s.publish("busy", site_v(1)).await;
    assert_eq!(status, StatusCode::CREATED, "{published}");
    let left: Vec<String> = s3.list(&prefix).await.expect("list");
    assert!(!left.iter().any(|k| k.ends_with("first.bin")), "the stalled version's files are gone: {left:?}");
    s.world.cleanup().await;
}

#[tokio::test]
async fn sites_stay_in_their_jurisdiction_and_environments_publish_only_their_own() {
    // The US jurisdiction has no sites storage in this configuration.
    let example = std::fs::read_to_string(crate::operator_harness::example_config()).expect("example config");
    let us_start = example.find("  us:").expect("a us jurisdiction");
    let us_sites = us_start + example[us_start..].find("    sites:").expect("us sites");
    let us_end = us_sites + example[us_sites..].find("runtimeClasses").expect("after jurisdictions");
    let without_us_sites = format!("{}{}", &example[..us_sites], &example[us_end..]);
    let path = std::env::temp_dir().join(format!("ooda-{}-config.yaml", unique_name("no-us-sites")));
    std::fs::write(&path, without_us_sites).expect("write config");
    let s = Site::start("sites-residency", Some(path)).await;
    s.project("eusite").await;

    // The environment's token publishes its own project, and no other.
    let secrets: Api<Secret> = Api::namespaced(s.world.client.clone(), &format!("org-{}", s.org));
    let token = secrets.get("eusite-publish").await.expect("publish Secret").data.expect("data")["token"].0.clone();
    let token = String::from_utf8(token).expect("utf-8");
    let publish = |project: &str, token: &str| {
        reqwest::Client::new()
            .post(s.gateway.url(&format!("/api/orgs/{}/projects/{project}/publish", s.org)))
            .header("x-ooda-publish-token", token)
            .body(site_v(1))
            .send()
    };
    let own = publish("eusite", &token).await.expect("answer");
    assert_eq!(own.status(), StatusCode::CREATED);
    s.project("other").await;
    assert_eq!(publish("other", &token).await.expect("answer").status(), StatusCode::UNAUTHORIZED);
    let versions_path = format!("/api/orgs/{}/projects/eusite/versions", s.org);
    let listed = eventually(Duration::from_secs(10), "the version listed", || async {
        let listed = s.gateway.call(Method::GET, &versions_path, Some(&s.alice), None).await.body;
        listed["versions"].as_array().is_some_and(|v| !v.is_empty()).then_some(listed)
    })
    .await;
    assert_eq!(listed["versions"][0]["publisher"], "project");

    // The EU organisation's objects are in the EU bucket, and nowhere else.
    let prefix = format!("{}/eusite/", s.org);
    assert!(!bucket("ooda-sites-eu", S3).list(&prefix).await.expect("list").is_empty());
    assert_eq!(bucket("ooda-sites-us", S3).list(&prefix).await.expect("list"), Vec::<String>::new());

    // A jurisdiction without sites storage refuses to publish, saying so.
    let us = unique_name("org");
    let mut manifest = s.world.organisation_manifest(&us, "us");
    manifest["spec"]["members"] = json!([{ "email": ALICE, "role": "admin" }]);
    let orgs: Api<Organisation> = Api::all(s.world.client.clone());
    orgs.create(&PostParams::default(), &serde_json::from_value(manifest).expect("org")).await.expect("create");
    wait_for(&orgs, &us, organisation_ready()).await;
    let alice = s.gateway.session(ALICE).await;
    let body = json!({ "name": "ussite", "spec": {} });
    let created = s.gateway.call(Method::POST, &format!("/api/orgs/{us}/projects"), Some(&alice), Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let refused = reqwest::Client::new()
        .post(s.gateway.url(&format!("/api/orgs/{us}/projects/ussite/publish")))
        .bearer_auth(&alice)
        .body(site_v(1))
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let error: Value = refused.json().await.expect("json");
    assert_eq!(error["error"], "sites_not_configured");
    assert!(error["message"].as_str().unwrap().contains("\"us\""), "{error}");
    s.world.cleanup().await;
}
