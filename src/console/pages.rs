//! The console's pages. Each GET needs a session (else: to the login page); each POST also its
//! CSRF token (else: 403). Data comes from [`crate::tracking`], the transport and the
//! certificate inventory, as for the JSON admin API.

use super::auth::{self, CsrfForm, Sessions, Signed};
use super::{fmt_time, input_time, layout, page_response, parse_input_time};
use crate::http::HttpState;
use crate::tracking::{self, Filter, Raw};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};

type St = web::Data<HttpState>;
type Ss = web::Data<Sessions>;

const PAGE: usize = 50;

fn ok(title: &str, current: &str, s: &Signed, content: Markup) -> HttpResponse {
    page_response(StatusCode::OK, layout(title, current, &s.csrf, content))
}

fn unavailable(s: &Signed, e: &str) -> HttpResponse {
    page_response(StatusCode::SERVICE_UNAVAILABLE, layout("Unavailable", "", &s.csrf, html! { h1 { "Unavailable" } p.error { (e) } }))
}

/// A status as a coloured badge.
fn badge(status: &str) -> Markup {
    let class = if tracking::succeeded(status) {
        "ok"
    } else if tracking::failed(status) {
        "bad"
    } else {
        "busy"
    };
    html! { span class={ "badge " (class) } { (status) } }
}

fn at(m: &tracking::Summary) -> String {
    m.get("received_at").and_then(|v| v.parse::<i64>().ok()).map(fmt_time).unwrap_or_default()
}

pub async fn home(req: HttpRequest, ss: Ss) -> HttpResponse {
    match ss.signed(&req) {
        Some(_) => HttpResponse::SeeOther().insert_header(("Location", "/console/messages")).finish(),
        None => auth::to_login(),
    }
}

#[derive(serde::Deserialize, Default)]
pub struct MessagesQuery {
    station: Option<String>,
    partner: Option<String>,
    direction: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    page: Option<usize>,
}

/// GET /console/messages: filters (station, partner, direction, status, time range), paging.
pub async fn messages(req: HttpRequest, q: web::Query<MessagesQuery>, st: St, ss: Ss) -> HttpResponse {
    let Some(s) = ss.signed(&req) else { return auth::to_login() };
    let f = Filter {
        station: q.station.clone(),
        partner: q.partner.clone(),
        direction: q.direction.clone(),
        status: q.status.clone(),
        since: q.since.as_deref().and_then(parse_input_time),
        until: q.until.as_deref().and_then(parse_input_time),
    };
    let page = q.page.unwrap_or(0);
    let (rows, more) = match tracking::find(&st.cx, &f, page * PAGE, PAGE).await {
        Ok(r) => r,
        Err(e) => return unavailable(&s, &e.to_string()),
    };
    let d = st.cx.directories.current();
    let stations: Vec<&String> = d.stations.keys().collect();
    let partners: Vec<&String> = d.partners.values().map(|p| &p.name).collect();
    let keep = |name: &str, v: &Option<String>| v.as_deref().filter(|v| !v.is_empty()).map(|v| format!("&{name}={}", urlencode(v))).unwrap_or_default();
    let query = format!(
        "{}{}{}{}{}{}",
        keep("station", &q.station),
        keep("partner", &q.partner),
        keep("direction", &q.direction),
        keep("status", &q.status),
        keep("since", &q.since),
        keep("until", &q.until)
    );
    let select = |name: &str, options: Vec<&str>, chosen: &Option<String>| {
        html! {
            select name=(name) id=(name) {
                option value="" { "any" }
                @for o in options { option value=(o) selected[chosen.as_deref() == Some(o)] { (o) } }
            }
        }
    };
    let content = html! {
        h1 { "Messages" }
        form.filters method="get" action="/console/messages" {
            label { "Station " (select("station", stations.iter().map(|s| s.as_str()).collect(), &q.station)) }
            label { "Partner " (select("partner", partners.iter().map(|s| s.as_str()).collect(), &q.partner)) }
            label { "Direction " (select("direction", vec!["inbound", "outbound", "as4"], &q.direction)) }
            label { "Status " input type="text" name="status" size="10" value=(q.status.clone().unwrap_or_default()) placeholder="e.g. failed"; }
            label { "From (UTC) " input type="datetime-local" name="since" value=(q.since.clone().unwrap_or_default()); }
            label { "To (UTC) " input type="datetime-local" name="until" value=(q.until.clone().unwrap_or_default()); }
            button type="submit" { "Filter" }
            a.button.secondary href="/console/messages" { "Clear" }
        }
        @if rows.is_empty() {
            p.empty { "No message matches." }
        } @else {
            table.messages {
                thead { tr { th { "Received" } th { "Direction" } th { "Station" } th { "Partner" } th { "Message-ID" } th.num { "Size" } th { "Status" } } }
                tbody {
                    @for (id, m) in &rows {
                        tr {
                            td.nowrap { (at(m)) }
                            td { (m.get("direction").cloned().unwrap_or_default()) }
                            td { (m.get("station").cloned().unwrap_or_default()) }
                            td { (m.get("partner").cloned().unwrap_or_default()) }
                            td.mid { a href={ "/console/messages/" (id) } { (m.get("message_id").cloned().unwrap_or_else(|| id.clone())) } }
                            td.num { (m.get("size").cloned().unwrap_or_default()) }
                            td { (badge(m.get("status").map(String::as_str).unwrap_or("?"))) }
                        }
                    }
                }
            }
        }
        nav.pager {
            @if page > 0 { a.button.secondary href={ "/console/messages?page=" (page - 1) (query) } { "← Newer" } }
            span.muted { "Page " (page + 1) }
            @if more { a.button.secondary href={ "/console/messages?page=" (page + 1) (query) } { "Older →" } }
        }
    };
    ok("Messages", "messages", &s, content)
}

fn urlencode(v: &str) -> String {
    v.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// GET /console/messages/{id}: summary, status history, documents, MDN/receipt, raw capture,
/// resend.
pub async fn message(req: HttpRequest, path: web::Path<String>, st: St, ss: Ss) -> HttpResponse {
    let Some(s) = ss.signed(&req) else { return auth::to_login() };
    let id = path.into_inner();
    let (summary, history) = match tracking::message(&st.cx, &id).await {
        Ok(Some(v)) => v,
        Ok(None) => return page_response(StatusCode::NOT_FOUND, layout("Not found", "messages", &s.csrf, html! { h1 { "No such message" } p { code { (id) } } })),
        Err(e) => return unavailable(&s, &e.to_string()),
    };
    let docs = tracking::documents(&st.cx, &id).await;
    let status = summary.get("status").cloned().unwrap_or_default();
    let outbound = summary.get("direction").map(String::as_str) == Some("outbound");
    let downloads: Vec<(&str, &str)> = [(Raw::Capture, "capture", "Raw request as received"), (Raw::Receipt, "receipt", "MDN received (receipt)")]
        .into_iter()
        .filter(|(r, _, _)| r.key(&id, &summary).is_some())
        .map(|(_, k, l)| (k, l))
        .collect();
    let shown = ["direction", "station", "partner", "message_id", "status", "reason", "disposition", "mic", "url", "source", "size", "mpc", "service", "action"];
    let content = html! {
        p.crumbs { a href="/console/messages" { "← Messages" } }
        h1 { "Message " (badge(&status)) }
        dl.summary {
            dt { "Id" } dd { code { (id) } }
            dt { "Received" } dd { (at(&summary)) }
            @for k in shown {
                @if let Some(v) = summary.get(k).filter(|v| !v.is_empty()) { dt { (k.replace('_', " ")) } dd { (v) } }
            }
        }
        @if outbound {
            form.inline method="post" action={ "/console/messages/" (id) "/resend" } {
                input type="hidden" name="csrf" value=(s.csrf);
                button type="submit" disabled[status == "sent"] title=(if status == "sent" { "Already delivered" } else { "Send again with the same Message-ID" }) { "Resend" }
            }
        }
        h2 { "Status history" }
        table.history {
            thead { tr { th { "When" } th { "Status" } th { "Detail" } } }
            tbody {
                @for (when, st, detail) in &history {
                    tr { td.nowrap { (fmt_time(*when)) } td { (badge(st)) } td { (detail) } }
                }
            }
        }
        h2 { "Documents" }
        @if docs.is_empty() {
            p.muted { @if outbound { "No stored documents." } @else { "Received documents are named in the delivered status above." } }
        } @else {
            table { thead { tr { th { "File" } th { "Type" } th.num { "Bytes" } } } tbody { @for d in &docs { tr { td { (d.filename) } td { (d.content_type) } td.num { (d.size) } } } } }
        }
        h2 { "Receipt and raw data" }
        @if downloads.is_empty() { p.muted { "Nothing stored for download (removed after its retention, or none for this message)." } }
        ul.downloads { @for (k, label) in downloads { li { a href={ "/console/messages/" (id) "/raw/" (k) } download { (label) } } } }
    };
    ok("Message", "messages", &s, content)
}

/// GET /console/messages/{id}/raw/{capture|receipt}: the bytes, as a download.
pub async fn raw(req: HttpRequest, path: web::Path<(String, String)>, st: St, ss: Ss) -> HttpResponse {
    if ss.signed(&req).is_none() {
        return auth::to_login();
    }
    let (id, what) = path.into_inner();
    let Some(kind) = Raw::parse(&what) else { return HttpResponse::NotFound().finish() };
    let Ok(Some(summary)) = st.cx.state.summary(&id).await else { return HttpResponse::NotFound().finish() };
    let Some(key) = kind.key(&id, &summary) else { return HttpResponse::NotFound().finish() };
    match st.cx.blobs.get(&key).await {
        Ok(b) => HttpResponse::Ok()
            .content_type("application/octet-stream")
            .insert_header(("Content-Disposition", format!("attachment; filename=\"{}-{what}.txt\"", id.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>())))
            .insert_header(("X-Content-Type-Options", "nosniff"))
            .body(b),
        Err(e) if e.is_not_found() => HttpResponse::NotFound().body("no longer stored"),
        Err(error) => {
            tracing::warn!(message = "Stored capture not readable.", %error, id);
            HttpResponse::ServiceUnavailable().body("the blob store is unavailable; try again")
        }
    }
}

/// POST /console/messages/{id}/resend
pub async fn resend(req: HttpRequest, path: web::Path<String>, form: web::Form<CsrfForm>, st: St, ss: Ss) -> HttpResponse {
    let Some(s) = ss.post_allowed(&req, form.csrf.as_deref()) else { return auth::refused() };
    let id = path.into_inner();
    match tracking::resend(&st.cx, st.transport.as_ref(), &id, "from the console").await {
        Ok(_) => HttpResponse::SeeOther().insert_header(("Location", format!("/console/messages/{id}"))).finish(),
        Err(e) => page_response(StatusCode::CONFLICT, layout("Resend", "messages", &s.csrf, html! { h1 { "Not resent" } p.error { (e) } p { a href={ "/console/messages/" (id) } { "Back to the message" } } })),
    }
}

#[derive(serde::Deserialize)]
pub struct ReplayedQuery {
    replayed: Option<usize>,
}

/// GET /console/dead: dead letters with their reason and replay buttons.
pub async fn dead(req: HttpRequest, q: web::Query<ReplayedQuery>, st: St, ss: Ss) -> HttpResponse {
    let Some(s) = ss.signed(&req) else { return auth::to_login() };
    let list = match st.transport.dead_letters(500).await {
        Ok(l) => l,
        Err(e) => return unavailable(&s, &e.to_string()),
    };
    let content = html! {
        h1 { "Dead letters" }
        p.muted { "Inputs a stage gave up on, with the reason. Replay puts them back on the queue they came from." }
        @if let Some(n) = q.replayed { p.notice role="status" { (n) " dead letter(s) replayed." } }
        @if list.is_empty() {
            p.empty { "No dead letters." }
        } @else {
            form.inline method="post" action="/console/dead/replay" {
                input type="hidden" name="csrf" value=(s.csrf);
                button type="submit" { "Replay all (" (list.len()) ")" }
            }
            table.dead {
                thead { tr { th { "From queue" } th { "Message" } th { "Reason" } th.num { "Attempts" } th.num { "Bytes" } th {} } }
                tbody {
                    @for d in &list {
                        tr {
                            td { code { (d.queue) } }
                            td { @if let Some(id) = &d.id { a href={ "/console/messages/" (id) } { code { (id) } } } @else { span.muted { "—" } } }
                            td.reason { (d.reason) }
                            td.num { (d.attempts) }
                            td.num { (d.size) }
                            td {
                                @if let Some(id) = &d.id {
                                    form.inline method="post" action="/console/dead/replay" {
                                        input type="hidden" name="csrf" value=(s.csrf);
                                        input type="hidden" name="id" value=(id);
                                        button.small type="submit" { "Replay" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    ok("Dead letters", "dead", &s, content)
}

#[derive(serde::Deserialize)]
pub struct ReplayForm {
    csrf: Option<String>,
    id: Option<String>,
}

/// POST /console/dead/replay (one message's dead letters, or all)
pub async fn replay(req: HttpRequest, form: web::Form<ReplayForm>, st: St, ss: Ss) -> HttpResponse {
    let Some(s) = ss.post_allowed(&req, form.csrf.as_deref()) else { return auth::refused() };
    match st.transport.replay_dead(form.id.as_deref().filter(|i| !i.is_empty())).await {
        Ok(n) => {
            tracing::info!(message = "Dead letters replayed from the console.", count = n);
            HttpResponse::SeeOther().insert_header(("Location", format!("/console/dead?replayed={n}"))).finish()
        }
        Err(e) => unavailable(&s, &e.to_string()),
    }
}

/// GET /console/partners: stations and partners with their certificates, fingerprints and
/// expiry dates (expiring within 30 days highlighted).
pub async fn partners(req: HttpRequest, st: St, ss: Ss) -> HttpResponse {
    let Some(s) = ss.signed(&req) else { return auth::to_login() };
    let d = st.cx.directories.current();
    let certs = st.certs.current();
    let now = crate::certs::now();
    let cert_rows = |owner: &str, kinds: &[&str]| -> Markup {
        html! {
            @for c in certs.iter().filter(|c| c.owner == owner && kinds.contains(&c.kind)) {
                @let days = c.expires_in(now).div_euclid(86_400);
                tr.cert.expiring[c.expiring(now)] {
                    td { (c.kind.replace('_', " ")) }
                    td { (c.subject) }
                    td.fp { code { (c.fingerprint) } }
                    td.nowrap { (c.expiry_date()) }
                    td.nowrap { @if days < 0 { strong { "expired" } } @else if c.expiring(now) { strong { "in " (days) " day(s)" } } @else { "in " (days) " days" } }
                }
            }
        }
    };
    let head = html! { thead { tr { th { "Certificate" } th { "Subject" } th { "SHA-256 fingerprint" } th { "Expires" } th { "" } } } };
    let expiring = certs.iter().filter(|c| c.expiring(now)).count();
    let content = html! {
        h1 { "Partners & certificates" }
        @if expiring > 0 { p.warn role="status" { (expiring) " certificate(s) expire within " (crate::certs::WARN_DAYS) " days or have expired (highlighted)." } }
        h2 { "Stations" }
        @for st in d.stations.values() {
            section.card {
                h3 { (st.name) " " span.muted { "AS2 id " code { (st.as2_id) } } }
                table.certs { (head) tbody { (cert_rows(&st.name, &["station_signing", "station_decryption"])) } }
            }
        }
        h2 { "Partners" }
        @for p in d.partners.values() {
            section.card {
                h3 { (p.name) " " span.muted { "AS2 id " code { (p.as2_id) } " · station " (p.station) } @if p.test { " " span.badge.busy { "test" } } }
                p.muted { "URL: " (p.url.clone().unwrap_or_else(|| "— (receives only)".into())) }
                table.certs { (head) tbody { (cert_rows(&p.name, &["partner_verify", "partner_encryption"])) } }
            }
        }
        @if certs.iter().any(|c| c.kind == "tls_server") {
            h2 { "HTTPS listener" }
            table.certs { (head) tbody { (cert_rows("http", &["tls_server"])) } }
        }
    };
    ok("Partners & certificates", "partners", &s, content)
}

/// GET /console/queues: AS4 user messages per MPC, waiting and leased.
pub async fn queues(req: HttpRequest, st: St, ss: Ss) -> HttpResponse {
    let Some(s) = ss.signed(&req) else { return auth::to_login() };
    let mpcs = match tracking::mpc_queues(&st.cx).await {
        Ok(m) => m,
        Err(e) => return unavailable(&s, &e.to_string()),
    };
    let content = html! {
        h1 { "AS4 queues" }
        p.muted { "User messages waiting to be pulled per MPC, and those pulled and waiting for a receipt (leased)." }
        @if mpcs.is_empty() { p.empty { "No AS4 user message waiting." } } @else {
            table.queues {
                thead { tr { th { "MPC" } th.num { "Pending" } th.num { "Leased" } } }
                tbody { @for (mpc, (pending, leased)) in &mpcs { tr { td { code { (mpc) } } td.num { (pending) } td.num { (leased) } } } }
            }
        }
    };
    ok("AS4 queues", "queues", &s, content)
}

/// GET /console/summary: messages, successes and failures per partner over the last 24 hours.
pub async fn summary(req: HttpRequest, st: St, ss: Ss) -> HttpResponse {
    let Some(s) = ss.signed(&req) else { return auth::to_login() };
    let since = crate::storage::now_ms() - 24 * 3600 * 1000;
    let stats = match tracking::per_partner(&st.cx, since).await {
        Ok(m) => m,
        Err(e) => return unavailable(&s, &e.to_string()),
    };
    let content = html! {
        h1 { "Summary" }
        p.muted { "Per partner, messages since " (fmt_time(since)) " (" a href={ "/console/messages?since=" (input_time(since)) } { "list them" } ")." }
        @if stats.is_empty() { p.empty { "No message in the last 24 hours." } } @else {
            table.summary-table {
                thead { tr { th { "Partner" } th.num { "Inbound" } th.num { "Outbound" } th.num { "Succeeded" } th.num { "Failed" } th.num { "Failure rate" } th.num { "Bytes" } } }
                tbody {
                    @for (p, c) in &stats {
                        @let total = c.inbound + c.outbound;
                        tr.failing[c.failed > 0] {
                            td { a href={ "/console/messages?partner=" (urlencode(p)) } { (p) } }
                            td.num { (c.inbound) } td.num { (c.outbound) } td.num { (c.done) }
                            td.num { a href={ "/console/messages?status=failed&partner=" (urlencode(p)) } { (c.failed) } }
                            td.num { (format!("{:.0} %", if total == 0 { 0.0 } else { 100.0 * c.failed as f64 / total as f64 })) }
                            td.num { (c.bytes) }
                        }
                    }
                }
            }
        }
    };
    ok("Summary", "summary", &s, content)
}
