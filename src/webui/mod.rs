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
//! `silo_console` session cookie the form sets (a random id this node keeps
//! in memory for 12 hours, HttpOnly, SameSite=Strict; the token itself never
//! leaves the form and never appears in a URL). Browser defences, with or
//! without a token: requests must name this node by an IP address,
//! `localhost` or a `webui.allowed_hosts` name (so a DNS-rebinding page
//! cannot reach the console under its own name); writes are POSTs, refused
//! when their `Origin` is another host or the browser marks them cross-site;
//! cross-site subresource requests (an `<img>` pointing at `/sql`) are
//! refused; every response forbids framing and sets a strict CSP.
mod actions;
pub mod data;
mod format;
mod links;
mod pages;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
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

/// Name of the session cookie.
const COOKIE: &str = "silo_console";
/// How long a console session lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions a node keeps at most; the oldest goes first.
const SESSIONS_MAX: usize = 1024;
/// The wait after a wrong token (slows guessing).
const LOGIN_FAILURE_DELAY: Duration = Duration::from_millis(300);

/// Signed-in browsers: random session ids and when each was issued. Bounded
/// by [`SESSIONS_MAX`]; lost on restart (sign in again).
#[derive(Default)]
pub struct Sessions(parking_lot::Mutex<HashMap<String, Instant>>);

impl Sessions {
    fn open(&self) -> String {
        let id = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let mut map = self.0.lock();
        map.retain(|_, at| at.elapsed() < SESSION_TTL);
        if map.len() >= SESSIONS_MAX {
            if let Some(oldest) = map.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), Instant::now());
        id
    }

    fn valid(&self, id: &str) -> bool {
        self.0.lock().get(id).is_some_and(|at| at.elapsed() < SESSION_TTL)
    }

    fn close(&self, id: &str) {
        self.0.lock().remove(id);
    }
}

/// What the console's handlers share.
pub struct Console {
    /// The public API, called in process for every job read and write.
    pub silo: Arc<SiloService>,
    /// Raft status (the header, the cluster page) and the local store.
    pub node: Arc<RaftNode>,
    /// Queue sizes, ready tasks and lease deadlines.
    pub broker: Arc<Broker>,
    /// Other nodes: their status, and the leader for forwarded writes.
    pub peers: Arc<Peers>,
    /// `auth.token`: when set, pages need a session from the login form.
    pub token: Option<String>,
    /// Host names besides IP addresses and `localhost` that requests may
    /// name (`webui.allowed_hosts`).
    pub allowed_hosts: Vec<String>,
    pub sessions: Sessions,
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
        .route("/queue", get(pages::queue))
        .route("/queues/{task_group}", get(pages::queue_path))
        .route("/tenants", get(pages::tenants))
        .route("/jobs", get(pages::search))
        .route("/job", get(pages::job))
        .route("/job/{action}", post(actions::job_action))
        .route("/jobs/{id}", get(pages::job_path))
        .route("/sql", get(pages::sql))
        .route("/limits", get(pages::limits))
        .route("/config", get(pages::config))
        .route("/logout", post(logout))
        .layer(axum::middleware::from_fn_with_state(console.clone(), signed_in_only));
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/static/console.css", get(stylesheet))
        .merge(pages)
        .layer(axum::middleware::from_fn_with_state(console.clone(), browser_defences))
        .with_state(console)
}

async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("../../templates/console.css"))
}

/// The session cookie's value, if the request carries one.
fn cookie_session(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name == COOKIE).then(|| value.to_string())
    })
}

fn signed_in(console: &Console, headers: &HeaderMap) -> bool {
    console.token.is_none() || cookie_session(headers).is_some_and(|id| console.sessions.valid(&id))
}

/// Whether `host` (a Host header: name or IP, optional port) names this
/// node in a way a DNS-rebinding page cannot: an IP address, `localhost`, or
/// a configured name.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// A write from another site: its `Origin` names another host than the one
/// it was sent to, or the browser says so (`Sec-Fetch-Site: cross-site`).
fn cross_site(method: &Method, headers: &HeaderMap) -> bool {
    if method != Method::POST {
        return false;
    }
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site == Some("cross-site") {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    origin.split_once("://").map(|(_, authority)| authority) != Some(host)
}

/// A request another site's page made the browser send without the user
/// opening the console (an image, a script, a fetch): only top-level
/// navigations may come from elsewhere.
fn cross_site_subresource(headers: &HeaderMap) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    get("sec-fetch-site") == Some("cross-site") && get("sec-fetch-mode") != Some("navigate")
}

/// Applied to every route: the Host allowlist, cross-site refusals, and the
/// response headers that forbid framing and inline scripts.
async fn browser_defences(State(console): State<Shared>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let mut response = if !host_allowed(&host, &console.allowed_hosts) {
        let msg = format!(
            "this console answers to IP addresses, localhost and webui.allowed_hosts, not {host:?} \
             (add the name to webui.allowed_hosts to use it)"
        );
        (StatusCode::MISDIRECTED_REQUEST, msg).into_response()
    } else if cross_site(request.method(), request.headers()) {
        (StatusCode::FORBIDDEN, "cross-site form posts are refused").into_response()
    } else if cross_site_subresource(request.headers()) {
        (StatusCode::FORBIDDEN, "requests from another site's page are refused").into_response()
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'none'; frame-ancestors 'none'; \
             form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // `no-referrer` would make Chromium send `Origin: null` on form posts.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Pages behind the login (when a token is set).
async fn signed_in_only(State(console): State<Shared>, request: Request, next: Next) -> Response {
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

/// Checks the token (compared exactly, as the gRPC API does) and opens a session.
async fn login(State(console): State<Shared>, form: axum::Form<LoginForm>) -> Response {
    let Some(expected) = &console.token else { return Redirect::to("/").into_response() };
    if !crate::grpc::auth::constant_time_eq(form.token.as_bytes(), expected.as_bytes()) {
        tokio::time::sleep(LOGIN_FAILURE_DELAY).await;
        let page =
            pages::LoginPage { error: Some("That token does not match this cluster's auth.token.".into()), auth: true };
        let mut response = pages::render(&page);
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        console.sessions.open(),
        SESSION_TTL.as_secs()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// Ends the session on this node and clears the cookie.
async fn logout(State(console): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie_session(&headers) {
        console.sessions.close(&id);
    }
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

/// A page that could not be built: the reason, in the console's style.
pub(crate) fn error_page(status: StatusCode, message: impl Into<String>) -> Response {
    let page = pages::ErrorPage { message: message.into() };
    let mut r = match askama::Template::render(&page) {
        Ok(html) => Html(html).into_response(),
        Err(_) => page.message.into_response(),
    };
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
        h.insert(header::COOKIE, "a=1; silo_console=abc; b=2".parse().unwrap());
        assert_eq!(cookie_session(&h).as_deref(), Some("abc"));
        h.insert(header::COOKIE, "silo_console_other=x".parse().unwrap());
        assert_eq!(cookie_session(&h), None);
    }

    #[test]
    fn sessions_are_random_closable_and_bounded() {
        let s = Sessions::default();
        let a = s.open();
        assert!(s.valid(&a) && !s.valid("guess") && a.len() == 64);
        s.close(&a);
        assert!(!s.valid(&a));
        for _ in 0..SESSIONS_MAX + 10 {
            s.open();
        }
        assert_eq!(s.0.lock().len(), SESSIONS_MAX);
    }

    #[test]
    fn hosts_a_rebinding_page_cannot_use_are_refused() {
        let allowed = vec!["silo.internal".to_string()];
        for ok in ["127.0.0.1:7460", "localhost:7460", "[::1]:7460", "10.0.0.2", "SILO.internal:80", "localhost"] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in ["attacker.example:7460", "", "127.0.0.1.attacker.example", "localhost.evil"] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
    }

    #[test]
    fn only_navigations_may_come_from_another_site() {
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        h.insert("sec-fetch-mode", "no-cors".parse().unwrap());
        assert!(cross_site_subresource(&h), "an <img> from elsewhere");
        h.insert("sec-fetch-mode", "navigate".parse().unwrap());
        assert!(!cross_site_subresource(&h), "a link followed from elsewhere");
        assert!(cross_site(&Method::POST, &h), "a form posted from elsewhere");
    }

    #[test]
    fn secrets_are_masked() {
        let mut c = crate::config::Config::default();
        c.auth.token = Some("s3cret".into());
        let shown = masked_config(&c);
        assert!(!shown.contains("s3cret") && shown.contains("***"), "{shown}");
    }
}
