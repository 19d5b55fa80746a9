//! The web dashboard: a page and its assets, compiled into the binary (no CDN, no remote font, no
//! third-party script: the vendored libraries are in `dashboard/vendor/`, pinned and checked by
//! `scripts/vendor-dashboard.sh`). Served on the API host only, under a Content-Security-Policy
//! that allows nothing but this origin's own files: no inline script, no framing. Preview and
//! sites hosts are other origins, so what runs there can read none of the dashboard's storage.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::gateway::error::ApiError;

/// What the page may load and do: only its own origin's files and API, nothing inline, no frames.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The terminal page's policy: the same, but inline styles are allowed, because xterm.js sizes
/// and colours its rows with `<style>` elements it writes. Scripts stay this origin's files only;
/// the dashboard itself keeps the strict policy.
pub const TERMINAL_CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The dashboard's files: (path under `/assets/`, media type, contents).
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    ("app.js", JAVASCRIPT, include_bytes!("dashboard/app.js")),
    ("ai.js", JAVASCRIPT, include_bytes!("dashboard/ai.js")),
    ("api.js", JAVASCRIPT, include_bytes!("dashboard/api.js")),
    ("auth.js", JAVASCRIPT, include_bytes!("dashboard/auth.js")),
    ("create.js", JAVASCRIPT, include_bytes!("dashboard/create.js")),
    ("events.js", JAVASCRIPT, include_bytes!("dashboard/events.js")),
    ("members.js", JAVASCRIPT, include_bytes!("dashboard/members.js")),
    ("projects.js", JAVASCRIPT, include_bytes!("dashboard/projects.js")),
    ("signin.js", JAVASCRIPT, include_bytes!("dashboard/signin.js")),
    ("tar.js", JAVASCRIPT, include_bytes!("dashboard/tar.js")),
    ("ui.js", JAVASCRIPT, include_bytes!("dashboard/ui.js")),
    ("style.css", CSS, include_bytes!("dashboard/style.css")),
    ("terminal.js", JAVASCRIPT, include_bytes!("dashboard/terminal.js")),
    ("terminal.css", CSS, include_bytes!("dashboard/terminal.css")),
    ("vendor/xterm.js", JAVASCRIPT, include_bytes!("dashboard/vendor/xterm.js")),
    ("vendor/xterm.css", CSS, include_bytes!("dashboard/vendor/xterm.css")),
    ("vendor/addon-fit.js", JAVASCRIPT, include_bytes!("dashboard/vendor/addon-fit.js")),
    ("vendor/preact.js", JAVASCRIPT, include_bytes!("dashboard/vendor/preact.js")),
    ("vendor/hooks.js", JAVASCRIPT, include_bytes!("dashboard/vendor/hooks.js")),
    ("vendor/htm.js", JAVASCRIPT, include_bytes!("dashboard/vendor/htm.js")),
];

const INDEX: &[u8] = include_bytes!("dashboard/index.html");
const TERMINAL: &[u8] = include_bytes!("dashboard/terminal.html");
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// `GET /`: the page (every view is a `#/…` route of it, so tokens in links never reach a server).
pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// `GET /terminal` (`#<org>/<project>`): a project's terminal, in a page of its own.
pub async fn terminal() -> Response {
    let mut response = page("text/html; charset=utf-8", TERMINAL);
    response
        .headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(TERMINAL_CONTENT_SECURITY_POLICY));
    response
}

/// `GET /assets/{*path}`.
pub async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == path) {
        Some((_, media_type, contents)) => page(media_type, contents),
        None => ApiError::not_found(format!("asset {path:?}")).into_response(),
    }
}

fn page(media_type: &'static str, contents: &'static [u8]) -> Response {
    let mut response = (StatusCode::OK, contents).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use sha2::{Digest, Sha256};

    use super::ASSETS;

    fn dashboard_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gateway/dashboard")
    }

    #[test]
    fn every_file_of_the_dashboard_is_served_and_nothing_else() {
        let mut on_disk = BTreeSet::new();
        for dir in ["", "vendor"] {
            for entry in std::fs::read_dir(dashboard_dir().join(dir)).expect("the dashboard's files") {
                let name = entry.expect("an entry").file_name().into_string().expect("a UTF-8 name");
                if name.ends_with(".js") || name.ends_with(".css") {
                    on_disk.insert(if dir.is_empty() { name } else { format!("{dir}/{name}") });
                }
            }
        }
        let served: BTreeSet<String> = ASSETS.iter().map(|(name, _, _)| (*name).to_owned()).collect();
        assert_eq!(served, on_disk);
    }

    #[test]
    fn the_vendored_files_are_the_ones_the_vendoring_script_checked() {
        let vendor = dashboard_dir().join("vendor");
        let sums = std::fs::read_to_string(vendor.join("SHA256SUMS")).expect("SHA256SUMS");
        assert!(!sums.is_empty());
        for line in sums.lines() {
            let (sum, name) = line.split_once("  ").expect("`<sha256>  <file>`");
            let contents = std::fs::read(vendor.join(name)).expect("a vendored file");
            let actual: String = Sha256::digest(&contents).iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(actual, sum, "{name} changed since scripts/vendor-dashboard.sh vendored it");
            let served = ASSETS.iter().find(|(n, _, _)| *n == format!("vendor/{name}")).expect("served");
            assert_eq!(served.2, contents.as_slice());
        }
    }
}
