//! The web console, served under `/console` on the admin listener only (never on the partner
//! listener): server-rendered HTML (maud), one stylesheet served by the node, no script and no
//! external asset, so it works offline.
//!
//! - [`auth`]: sign-in with the admin token, sessions, CSRF.
//! - [`pages`]: messages, a message, dead letters, partners and stations, AS4 queues, summary.
//!
//! The data comes from [`crate::tracking`], the transport and [`crate::certs`], as for the JSON
//! admin API.

pub mod auth;
pub mod pages;

use actix_web::{web, HttpResponse};
use maud::{html, Markup, DOCTYPE};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

const STYLE: &str = include_str!("style.css");

/// Routes of the console (admin listener; the app holds a `web::Data<auth::Sessions>`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/console", web::get().to(pages::home))
        .route("/console/", web::get().to(pages::home))
        .route("/console/style.css", web::get().to(style))
        .route("/console/login", web::get().to(auth::login_page))
        .route("/console/login", web::post().to(auth::login))
        .route("/console/logout", web::post().to(auth::logout))
        .route("/console/messages", web::get().to(pages::messages))
        .route("/console/messages/{id}", web::get().to(pages::message))
        .route("/console/messages/{id}/raw/{what}", web::get().to(pages::raw))
        .route("/console/messages/{id}/resend", web::post().to(pages::resend))
        .route("/console/dead", web::get().to(pages::dead))
        .route("/console/dead/replay", web::post().to(pages::replay))
        .route("/console/partners", web::get().to(pages::partners))
        .route("/console/queues", web::get().to(pages::queues))
        .route("/console/summary", web::get().to(pages::summary));
}

async fn style() -> HttpResponse {
    HttpResponse::Ok().content_type("text/css; charset=utf-8").insert_header(("Cache-Control", "max-age=300")).body(STYLE)
}

/// An HTML answer with the console's security headers: nothing from elsewhere, no framing.
pub fn page_response(status: actix_web::http::StatusCode, body: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("Cache-Control", "no-store"))
        .body(body.into_string())
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · edinode" }
            link rel="stylesheet" href="/console/style.css";
        }
    }
}

/// A page without navigation (sign-in, refusals).
pub fn bare(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare { main { (content) } }
        }
    }
}

/// A console page: navigation (the current entry marked), sign-out form, content.
pub fn layout(title: &str, current: &str, csrf: &str, content: Markup) -> Markup {
    let nav = [("messages", "Messages"), ("dead", "Dead letters"), ("partners", "Partners & certificates"), ("queues", "AS4 queues"), ("summary", "Summary")];
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href="/console/messages" { "edinode" }
                    nav {
                        @for (path, label) in nav {
                            a.current[path == current] href={ "/console/" (path) } { (label) }
                        }
                    }
                    form.logout method="post" action="/console/logout" {
                        input type="hidden" name="csrf" value=(csrf);
                        button.link type="submit" { "Sign out" }
                    }
                }
                main { (content) }
            }
        }
    }
}

const SHOWN: &[BorrowedFormatItem<'_>] = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
const INPUT: &[BorrowedFormatItem<'_>] = format_description!("[year]-[month]-[day]T[hour]:[minute]");
const INPUT_IN: &[BorrowedFormatItem<'_>] = format_description!("[year]-[month]-[day]T[hour]:[minute][optional [:[second][optional [.[subsecond]]]]]");

fn utc(ms: i64) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// Unix ms as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn fmt_time(ms: i64) -> String {
    utc(ms).and_then(|t| t.format(SHOWN).ok()).unwrap_or_default()
}

/// Unix ms as the value of an `<input type="datetime-local">` (UTC).
pub fn input_time(ms: i64) -> String {
    utc(ms).and_then(|t| t.format(INPUT).ok()).unwrap_or_default()
}

/// An `<input type="datetime-local">` value (`YYYY-MM-DDTHH:MM[:SS[.fff]]`, taken as UTC) as
/// Unix ms.
pub fn parse_input_time(v: &str) -> Option<i64> {
    let t = time::PrimitiveDateTime::parse(v.trim(), INPUT_IN).ok()?.assume_utc();
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_time(1_764_606_300_000), "2025-12-01 16:25:00 UTC");
        assert_eq!(parse_input_time("2025-12-01T16:25"), Some(1_764_606_300_000));
        assert_eq!(input_time(1_764_606_300_000), "2025-12-01T16:25");
        assert_eq!(parse_input_time("2024-02-29T00:00:30"), Some(1_709_164_830_000));
        assert_eq!(parse_input_time("nonsense"), None);
        assert_eq!(parse_input_time("2024-13-01T00:00"), None);
    }
}
