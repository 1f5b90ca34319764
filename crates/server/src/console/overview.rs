//! The fleet overview: how many desktops are online, offline, never connected, with the
//! agent and by version, how many are failing now, and the jobs in flight. Counted by the
//! database in one pass (`Store::fleet_summary`).

use super::page::{Area, ConsoleError, layout, page};
use super::session::ConsoleUser;
use crate::AppState;
use crate::auth::policy::Api;
use axum::extract::State;
use axum::response::Response;
use maud::html;

pub async fn show(
    State(state): State<AppState>,
    user: ConsoleUser,
) -> Result<Response, ConsoleError> {
    let project = user.authorize(&state, Api::ListDesktopsDetail)?;
    let fresh = state.freshness();
    let s = state
        .store
        .fleet_summary(&project, fresh.now, fresh.window_ms)
        .await?;
    let tile = |label: &str, n: u64, href: &str| {
        html! {
            li class="tile" {
                a href=(href) {
                    span class="n" { (n) }
                    span class="label" { (label) }
                }
            }
        }
    };
    let body = html! {
        section aria-labelledby="fleet-h" {
            h2 id="fleet-h" { "Fleet" }
            ul class="tiles" {
                (tile("desktops", s.total, "/console/desktops"))
                (tile("online", s.online, "/console/desktops?presence=online"))
                (tile("offline", s.offline, "/console/desktops?presence=offline"))
                (tile("never connected", s.never, "/console/desktops?presence=never"))
                (tile("with the agent", s.with_agent, "/console/desktops?agent=installed"))
                (tile("failing now", s.failing, "/console/desktops?agent=failing"))
                (tile("jobs in flight", s.active_jobs, "/console/jobs"))
            }
        }
        section aria-labelledby="versions-h" {
            h2 id="versions-h" { "Agent versions" }
            @if s.by_version.is_empty() {
                p { "No desktop has reported an agent yet." }
            } @else {
                table {
                    caption { "Desktops by agent version" }
                    thead { tr { th scope="col" { "Version" } th scope="col" { "Desktops" } } }
                    tbody {
                        @for (version, n) in &s.by_version {
                            tr {
                                td { a href={"/console/desktops?version=" (super::page::enc(version))} { (version) } }
                                td { (n) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(layout("Overview", Some(&user), Area::Overview, body)))
}
