//! The console every node serves (issue #13; README "Web console"):
//! server-rendered HTML from askama templates (`templates/`), one stylesheet,
//! no JavaScript build and no script needed to use it.
//!
//! What it owns: HTTP routing, the console's login, and turning state into
//! pages. What it does not: every job read and write goes through the same
//! `silo.v1.Silo` methods the gRPC edge serves (validation, tenancy rules,
//! read barrier, Raft proposal), called in process, so a refused action shows
//! the API's own status and message. A write sent to a follower's console is
//! forwarded to the leader over gRPC and the page says so. Queue and limit
//! views read this node's applied state and broker directly (O(task groups)
//! and O(running leases), never O(backlog)) and say which node and applied
//! index they show.
//!
//! Auth: with `auth.token` set, every page but the login form needs the
//! `silo_console` cookie the form sets (HttpOnly, SameSite=Strict); the token
//! never appears in a URL. Writes are POSTs; one whose `Origin` names another
//! host is refused (no cross-site form posts).
mod actions;
mod data;
mod format;
mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::grpc::peers::Peers;
use crate::grpc::SiloService;
use crate::raft::RaftNode;

/// Name of the login cookie (its value is the cluster token in hex, so any
/// visible ASCII token is a valid cookie value).
const COOKIE: &str = "silo_console";

fn cookie_value(token: &str) -> String {
    token.bytes().map(|b| format!("{b:02x}")).collect()
}

/// What the console's handlers share.
pub struct Console {
    pub silo: Arc<SiloService>,
    pub node: Arc<RaftNode>,
    pub broker: Arc<Broker>,
    pub peers: Arc<Peers>,
    /// `auth.token`: when set, pages need the login cookie.
    pub token: Option<String>,
    /// The effective configuration as TOML, secrets already masked.
    pub config_toml: String,
    /// This node's gRPC address (as peers and clients know it).
    pub advertise_addr: String,
}

type Shared = Arc<Console>;

/// The effective configuration as TOML with every secret replaced by `"***"`.
pub fn masked_config(config: &crate::config::Config) -> String {
    let mut c = config.clone();
    if c.auth.token.is_some() {
        c.auth.token = Some("***".into());
    }
    toml::to_string_pretty(&c).unwrap_or_else(|e| format!("# the configuration could not be shown: {e}"))
}

/// Binds the console's listener (`webui.listen`); errors name the setting.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("webui.listen {addr}: {e} (choose another port, or set it empty to turn the console off)")
    })
}

/// Serves the console on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, console: Console, mut stop: watch::Receiver<bool>) -> std::io::Result<()> {
    let app = router(Arc::new(console));
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await
}

fn router(console: Shared) -> Router {
    let pages = Router::new()
        .route("/", get(pages::cluster))
        .route("/queues", get(pages::queues))
        .route("/queues/{task_group}", get(pages::queue))
        .route("/tenants", get(pages::tenants))
        .route("/jobs", get(pages::search))
        .route("/jobs/{id}", get(pages::job))
        .route("/jobs/{id}/{action}", post(actions::job_action))
        .route("/sql", get(pages::sql))
        .route("/limits", get(pages::limits))
        .route("/config", get(pages::config))
        .route("/logout", post(logout))
        .layer(axum::middleware::from_fn_with_state(console.clone(), guard));
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/static/console.css", get(stylesheet))
        .merge(pages)
        .with_state(console)
}

async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("../../templates/console.css"))
}

/// The cookie's token, if the request carries one.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name == COOKIE).then(|| value.to_string())
    })
}

fn signed_in(console: &Console, headers: &HeaderMap) -> bool {
    match &console.token {
        None => true,
        Some(t) => cookie_token(headers)
            .is_some_and(|c| crate::grpc::auth::constant_time_eq(c.as_bytes(), cookie_value(t).as_bytes())),
    }
}

/// A POST whose `Origin` is another host than the one it was sent to.
fn cross_site(method: &Method, headers: &HeaderMap) -> bool {
    if method != Method::POST {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    origin.split_once("://").map(|(_, authority)| authority) != Some(host)
}

async fn guard(State(console): State<Shared>, request: Request, next: Next) -> Response {
    if cross_site(request.method(), request.headers()) {
        return (StatusCode::FORBIDDEN, "cross-site form posts are refused").into_response();
    }
    if !signed_in(&console, request.headers()) {
        if request.method() == Method::GET {
            return Redirect::to("/login").into_response();
        }
        return (StatusCode::UNAUTHORIZED, "sign in at /login first").into_response();
    }
    next.run(request).await
}

async fn login_form(State(console): State<Shared>) -> Response {
    pages::render(&pages::LoginPage { error: None, auth: console.token.is_some() })
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(console): State<Shared>, headers: HeaderMap, form: axum::Form<LoginForm>) -> Response {
    if cross_site(&Method::POST, &headers) {
        return (StatusCode::FORBIDDEN, "cross-site form posts are refused").into_response();
    }
    let Some(expected) = &console.token else { return Redirect::to("/").into_response() };
    if !crate::grpc::auth::constant_time_eq(form.token.trim().as_bytes(), expected.as_bytes()) {
        let page =
            pages::LoginPage { error: Some("That token does not match this cluster's auth.token.".into()), auth: true };
        let mut response = pages::render(&page);
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    }
    let cookie = format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict", cookie_value(expected));
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

/// A page that could not be built: the reason, in the console's frame.
pub(crate) fn error_page(status: StatusCode, message: impl Into<String>) -> Response {
    let mut r = Html(format!(
        "<!doctype html><html><head><link rel=stylesheet href=/static/console.css><title>silo · error</title></head>\
         <body><main><p class=\"flash error\">{}</p><p><a href=\"/\">Back to the cluster</a></p></main></body></html>",
        format::escape(&message.into())
    ))
    .into_response();
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_site_posts_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:7460".parse().unwrap());
        assert!(!cross_site(&Method::POST, &h), "no Origin: a same-origin navigation or a script");
        h.insert(header::ORIGIN, "http://127.0.0.1:7460".parse().unwrap());
        assert!(!cross_site(&Method::POST, &h));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(cross_site(&Method::POST, &h));
        assert!(!cross_site(&Method::GET, &h), "reads change nothing");
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; silo_console=s3cret; b=2".parse().unwrap());
        assert_eq!(cookie_token(&h).as_deref(), Some("s3cret"));
        h.insert(header::COOKIE, "silo_console_other=x".parse().unwrap());
        assert_eq!(cookie_token(&h), None);
    }

    #[test]
    fn secrets_are_masked() {
        let mut c = crate::config::Config::default();
        c.auth.token = Some("s3cret".into());
        let shown = masked_config(&c);
        assert!(!shown.contains("s3cret") && shown.contains("***"), "{shown}");
    }
}
