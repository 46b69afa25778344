//! Console sign-in: the admin token, given once on the login form, opens a session held in
//! memory (a random id in an HttpOnly, SameSite=Strict cookie, Secure over HTTPS). Every form
//! carries the session's CSRF token and every POST is refused without it; the login form itself
//! is protected by a double-submit token (a cookie and a hidden field that must match).

use actix_web::{web, HttpRequest, HttpResponse};
use std::collections::HashMap;
use std::sync::Mutex;

pub const SESSION_COOKIE: &str = "edinode_console";
const LOGIN_COOKIE: &str = "edinode_login";
/// A session ends this long after sign-in.
const SESSION_MS: i64 = 12 * 3600 * 1000;

struct Session {
    csrf: String,
    expires_ms: i64,
}

/// Open console sessions of this process, by session id.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

/// A signed-in request: its CSRF token, for the forms of the page.
pub struct Signed {
    pub csrf: String,
}

fn random_hex() -> String {
    let mut b = [0u8; 24];
    // Cannot fail on a working OpenSSL; an all-zero id would only be refused as unknown.
    let _ = openssl::rand::rand_bytes(&mut b);
    hex::encode(b)
}

/// The value of cookie `name` in the request.
fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all("cookie")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(req: &HttpRequest, name: &str, value: &str, max_age: i64) -> String {
    let secure = if req.connection_info().scheme() == "https" { "; Secure" } else { "" };
    format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

impl Sessions {
    /// The session of the request, if it is open.
    pub fn signed(&self, req: &HttpRequest) -> Option<Signed> {
        let id = cookie(req, SESSION_COOKIE)?;
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = crate::storage::now_ms();
        g.retain(|_, s| s.expires_ms > now);
        g.get(&id).map(|s| Signed { csrf: s.csrf.clone() })
    }

    /// The session of a POST whose form carries its CSRF token; None otherwise.
    pub fn post_allowed(&self, req: &HttpRequest, form_csrf: Option<&str>) -> Option<Signed> {
        let s = self.signed(req)?;
        crate::http::token_eq(form_csrf.unwrap_or(""), &s.csrf).then_some(s)
    }

    fn open(&self) -> String {
        let id = random_hex();
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), Session { csrf: random_hex(), expires_ms: crate::storage::now_ms() + SESSION_MS });
        id
    }

    fn close(&self, req: &HttpRequest) {
        if let Some(id) = cookie(req, SESSION_COOKIE) {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        }
    }
}

/// Answer for a request without a session: to the login page.
pub fn to_login() -> HttpResponse {
    HttpResponse::SeeOther().insert_header(("Location", "/console/login")).finish()
}

/// A POST refused for want of its CSRF token (or of a session).
pub fn refused() -> HttpResponse {
    super::page_response(actix_web::http::StatusCode::FORBIDDEN, super::bare("Refused", maud::html! {
        h1 { "Refused" }
        p { "This form did not carry a valid CSRF token for your session. Go back, reload the page and try again, or " a href="/console/login" { "sign in" } " again." }
    }))
}

/// GET /console/login
pub async fn login_page(req: HttpRequest) -> HttpResponse {
    login_form(&req, None, actix_web::http::StatusCode::OK)
}

fn login_form(req: &HttpRequest, error: Option<&str>, status: actix_web::http::StatusCode) -> HttpResponse {
    let csrf = random_hex();
    let body = super::bare("Sign in", maud::html! {
        form.login method="post" action="/console/login" {
            h1 { "edinode console" }
            p.muted { "Sign in with the admin token (" code { "admin.token" } " in the configuration)." }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            input type="hidden" name="csrf" value=(csrf);
            label for="token" { "Admin token" }
            input #token type="password" name="token" autocomplete="current-password" autofocus required;
            button type="submit" { "Sign in" }
        }
    });
    let mut r = super::page_response(status, body);
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&set_cookie(req, LOGIN_COOKIE, &csrf, 3600)) {
        r.headers_mut().append(actix_web::http::header::SET_COOKIE, v);
    }
    r
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    token: Option<String>,
    csrf: Option<String>,
}

/// POST /console/login
pub async fn login(req: HttpRequest, form: web::Form<LoginForm>, st: web::Data<crate::http::HttpState>, sessions: web::Data<Sessions>) -> HttpResponse {
    let pre = cookie(&req, LOGIN_COOKIE).unwrap_or_default();
    if pre.is_empty() || !crate::http::token_eq(form.csrf.as_deref().unwrap_or(""), &pre) {
        return refused();
    }
    let ok = st.admin_token.as_deref().is_some_and(|t| crate::http::token_eq(form.token.as_deref().unwrap_or(""), t));
    if !ok {
        tracing::warn!(message = "Console sign-in refused: wrong admin token.", peer = %req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default());
        let why = if st.admin_token.is_none() { "The console is off: admin.token is empty in the configuration." } else { "Wrong token." };
        return login_form(&req, Some(why), actix_web::http::StatusCode::UNAUTHORIZED);
    }
    let id = sessions.open();
    HttpResponse::SeeOther()
        .insert_header(("Location", "/console/messages"))
        .insert_header(("Set-Cookie", set_cookie(&req, SESSION_COOKIE, &id, SESSION_MS / 1000)))
        .append_header(("Set-Cookie", set_cookie(&req, LOGIN_COOKIE, "", 0)))
        .finish()
}

#[derive(serde::Deserialize)]
pub struct CsrfForm {
    pub csrf: Option<String>,
}

/// POST /console/logout
pub async fn logout(req: HttpRequest, form: web::Form<CsrfForm>, sessions: web::Data<Sessions>) -> HttpResponse {
    if sessions.post_allowed(&req, form.csrf.as_deref()).is_none() {
        return refused();
    }
    sessions.close(&req);
    HttpResponse::SeeOther().insert_header(("Location", "/console/login")).insert_header(("Set-Cookie", set_cookie(&req, SESSION_COOKIE, "", 0))).finish()
}
