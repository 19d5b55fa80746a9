//! `GET /api/orgs/{org}/projects/{project}/terminal`: a shell in the project's workspace
//! container, over a WebSocket, through the Kubernetes exec API (what `kubectl exec -it` does).
//!
//! Browsers cannot set headers on a WebSocket, so the session token travels as a subprotocol:
//! the client offers `ooda.terminal.v1` and `ooda.bearer.<token>`, and the gateway answers with
//! `ooda.terminal.v1` (tokens never go into URLs or logs). Binary frames carry the terminal's
//! bytes both ways, streamed as they come; text frames from the client are control messages
//! (`{"type": "resize", "cols", "rows"}`); the gateway's last text frame says why it closed
//! (`{"type": "closed", "reason"}`).
//!
//! Only members of the organisation, only into ooda's project pod, only while the project is
//! Running. An open terminal counts as activity, and closes when the project stops, the member
//! is removed, the session ends or the token expires. A closed terminal hangs up: its shell and
//! what runs in it get SIGHUP, as when a terminal window closes. The gateway may exec only in organisation
//! namespaces (a RoleBinding the operator makes in each), never elsewhere.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, TerminalSize};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info, instrument, warn};

use crate::crd::names::{organisation_namespace, pod_name};
use crate::crd::{Phase, Project, Role};
use crate::gateway::Gateway;
use crate::gateway::auth::{Session, access};
use crate::gateway::error::{ApiError, ApiResult};
use crate::gateway::extract::ApiPath;

/// The subprotocol of this bridge.
pub const PROTOCOL: &str = "ooda.terminal.v1";
/// The subprotocol prefix that carries the session token.
const BEARER_PROTOCOL: &str = "ooda.bearer.";
/// Terminals one gateway holds open at most; more are refused with 503.
pub const MAX_TERMINALS: usize = 1024;
/// The largest message a client may send (keystrokes and pastes).
const MAX_MESSAGE: usize = 64 * 1024;
/// The container a terminal opens in, and the shell it runs: a login bash where there is one,
/// marked with the terminal's id (`$1`) in its environment, which what it starts inherits. A
/// runtime that starts it without a session of its own (kwok's simulated exec does) gets it one
/// with the terminal as its controlling terminal: without, the shell has no job control, and the
/// SIGHUP it passes on to its jobs when hung up reaches every process of the runtime's group.
const CONTAINER: &str = "workspace";
const SHELL: &str = "OODA_TERMINAL=$1; export OODA_TERMINAL; \
    shell='sh -l'; if command -v bash >/dev/null 2>&1; then shell='bash -l'; fi; \
    read -r _ _ _ _ _ session _ 2>/dev/null </proc/$$/stat; \
    if [ \"${session:-$$}\" != $$ ] && command -v setsid >/dev/null 2>&1; then exec setsid -c $shell; fi; \
    exec $shell";
/// What a closed terminal's hangup runs: SIGHUP to every process marked with its id (`$1`). A
/// dropped exec connection ends nothing in the container (the runtime keeps the terminal open),
/// so without it every closed browser tab would leave its shell, and what runs in the
/// foreground, behind until the pod goes. What ignores SIGHUP (`nohup`) stays, as over SSH.
const HANGUP: &str = "for p in /proc/[0-9]*; do \
    grep -qsF \"OODA_TERMINAL=$1\" \"$p/environ\" && kill -HUP \"${p#/proc/}\" 2>/dev/null; done; exit 0";
/// How long a hangup may take before the bridge gives up on it.
const HANGUP_TIMEOUT: Duration = Duration::from_secs(10);

#[instrument(skip_all, fields(org = %org, project = %name))]
pub async fn terminal(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    ApiPath((org, name)): ApiPath<(String, String)>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let token = offered_token(&headers).ok_or_else(|| {
        ApiError::unauthorized(format!("offer the subprotocols {PROTOCOL} and {BEARER_PROTOCOL}<token>"))
    })?;
    let session = Session::from_token(&gateway, token)?;
    access(&gateway, &session, &org, Role::Member)?;
    let project = running_project(&gateway, &org, &name)?;
    let upgrade = upgrade.map_err(|rejection| {
        let why = rejection.body_text();
        ApiError::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", format!("a terminal is a WebSocket: {why}"))
    })?;
    let permit = gateway
        .terminals
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::unavailable("too many open terminals; try again", 5))?;
    let pods: Api<Pod> = Api::namespaced(gateway.client.clone(), &organisation_namespace(&org));
    let params = AttachParams::interactive_tty().container(CONTAINER);
    let id = crate::gateway::random_token(12);
    let process = pods.exec(&pod_name(&name), ["/bin/sh", "-c", SHELL, "ooda-terminal", &id], &params).await?;
    info!(by = session.email, "terminal opened");
    let bridge = Bridge { gateway, session, org, name, id, pods, project, _permit: permit };
    Ok(upgrade
        .protocols([PROTOCOL])
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| bridge.run(socket, process)))
}

/// The token among the offered subprotocols (`Sec-WebSocket-Protocol: ooda.terminal.v1,
/// ooda.bearer.<token>`), if the client offered this bridge's protocol too.
fn offered_token(headers: &HeaderMap) -> Option<&str> {
    let offered: Vec<&str> = headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    offered.contains(&PROTOCOL).then(|| offered.iter().find_map(|p| p.strip_prefix(BEARER_PROTOCOL))).flatten()
}

/// The project, if it is Running with a ready pod: a terminal opens in nothing else.
fn running_project(gateway: &Gateway, org: &str, name: &str) -> ApiResult<Arc<Project>> {
    let project = gateway.caches.project(org, name).ok_or_else(|| ApiError::not_found(format!("project {name:?}")))?;
    let phase = project.status.as_ref().and_then(|s| s.phase);
    if phase != Some(Phase::Running) {
        return Err(ApiError::conflict(
            "not_running",
            format!("project {name:?} is not running; start or wake it first"),
        ));
    }
    Ok(project)
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Control {
    Resize { cols: u16, rows: u16 },
}

/// An open terminal: the member's session, and the project it is in.
struct Bridge {
    gateway: Arc<Gateway>,
    session: Session,
    org: String,
    name: String,
    /// The id its processes carry in their environment.
    id: String,
    pods: Api<Pod>,
    project: Arc<Project>,
    _permit: OwnedSemaphorePermit,
}

impl Bridge {
    async fn run(self, socket: WebSocket, mut process: kube::api::AttachedProcess) {
        let (mut to_client, mut from_client) = socket.split();
        let (Some(mut stdin), Some(mut stdout), Some(mut resize)) =
            (process.stdin(), process.stdout(), process.terminal_size())
        else {
            return;
        };
        let idle_timeout = crate::gateway::idle_timeout(&self.gateway, &self.project);
        let mut activity = tokio::time::interval(self.gateway.settings.activity_interval.min(idle_timeout / 3));
        let mut changes = self.gateway.caches.changes();
        let expiry = tokio::time::sleep(self.session.remaining(&self.gateway));
        tokio::pin!(expiry);
        let mut output = vec![0u8; 16 * 1024];
        let reason = loop {
            tokio::select! {
                read = stdout.read(&mut output) => match read {
                    Ok(0) | Err(_) => break SHELL_EXITED.to_owned(),
                    Ok(n) => if to_client.send(Message::Binary(output[..n].to_vec().into())).await.is_err() {
                        break "the client went away".to_owned();
                    },
                },
                message = from_client.next() => match message {
                    Some(Ok(Message::Binary(input))) => if stdin.write_all(&input).await.is_err() {
                        break SHELL_EXITED.to_owned();
                    },
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<Control>(&text) {
                        Ok(Control::Resize { cols, rows }) => {
                            let _ = resize.send(TerminalSize { width: cols, height: rows }).await;
                        }
                        Err(error) => debug!(%error, "ignored a control message"),
                    },
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break "the client closed it".to_owned(),
                    Some(Ok(_)) => {}
                },
                _ = activity.tick() => self.gateway.activity.touch(&self.org, &self.name, idle_timeout, "terminal"),
                changed = changes.changed() => {
                    if changed.is_err() {
                        break "the gateway is shutting down".to_owned();
                    }
                    if let Err(refusal) = self.session.access_now(&self.gateway, &self.org, Role::Member) {
                        break refusal.message;
                    }
                    if let Err(refusal) = running_project(&self.gateway, &self.org, &self.name) {
                        break refusal.message;
                    }
                },
                () = &mut expiry => break "the session has expired".to_owned(),
            }
        };
        debug!(reason, "terminal closed");
        let closed = json!({ "type": "closed", "reason": reason }).to_string();
        let _ = to_client.send(Message::Text(closed.into())).await;
        let _ = to_client.close().await;
        process.abort();
        if reason != SHELL_EXITED {
            self.hang_up().await;
        }
    }

    /// Ends what the terminal left running, as a terminal's hangup would ([`HANGUP`]).
    async fn hang_up(&self) {
        let command = ["/bin/sh", "-c", HANGUP, "ooda-hangup", &self.id];
        let params = AttachParams::default().container(CONTAINER).stderr(false);
        let hangup = async {
            let mut process = self.pods.exec(&pod_name(&self.name), command, &params).await?;
            let status = process.take_status();
            // Whatever ends the stream, the status says whether the command ran.
            let _ = process.join().await;
            Ok::<_, kube::Error>(match status {
                Some(status) => status.await,
                None => None,
            })
        };
        match tokio::time::timeout(HANGUP_TIMEOUT, hangup).await {
            Ok(Ok(status)) if status.as_ref().and_then(|s| s.status.as_deref()) == Some("Success") => {
                debug!("terminal hung up")
            }
            // A project stopping or deleted takes its processes with it.
            Ok(outcome) => debug!(?outcome, "terminal hangup did not run"),
            Err(_) => warn!(after = ?HANGUP_TIMEOUT, "terminal hangup did not answer"),
        }
    }
}

/// The reason a bridge gives when the shell ended on its own: nothing is left to hang up.
const SHELL_EXITED: &str = "the shell exited";

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_token_comes_only_with_the_bridges_own_protocol() {
        let offer = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(axum::http::header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert_eq!(offered_token(&offer("ooda.terminal.v1, ooda.bearer.abc.def")), Some("abc.def"));
        assert_eq!(offered_token(&offer("ooda.bearer.abc,ooda.terminal.v1")), Some("abc"));
        assert_eq!(offered_token(&offer("ooda.bearer.abc")), None, "without the bridge's protocol");
        assert_eq!(offered_token(&offer("ooda.terminal.v1")), None);
        assert_eq!(offered_token(&HeaderMap::new()), None);
    }
}
