//! The desktops table: search by name or address, filters on connection state, agent
//! state, version and tag, sorting on any column, and paging, all done by the database
//! (`Store::query_desktops`), so a page costs the same at 10 desktops or 10,000.
//! With the install right, rows have checkboxes and the table leads to the install page.

use super::page::{Area, ConsoleError, enc, layout, opt_time, page};
use super::session::ConsoleUser;
use crate::AppState;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::Query;
use axum::extract::State;
use axum::response::Response;
use deskfleet_core::console::{AgentFilterState, DesktopQuery, DesktopSort, PresenceFilter};
use deskfleet_core::model::{AgentCondition, Page};
use deskfleet_core::presence::Freshness;
use maud::{Markup, html};

/// Rows per page.
pub const PAGE_ROWS: u32 = 50;

/// The table's filters as the URL carries them, kept raw for links and hidden fields.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub q: String,
    pub presence: String,
    pub agent: String,
    pub version: String,
    pub tag: String,
    pub sort: String,
    pub dir: String,
}

impl Filters {
    pub fn from_query(query: &Query) -> Result<Self, ApiError> {
        let get = |k: &str| query.str(k).map(|v| v.unwrap_or_default());
        Ok(Self {
            q: get("q")?,
            presence: get("presence")?,
            agent: get("agent")?,
            version: get("version")?,
            tag: get("tag")?,
            sort: get("sort")?,
            dir: get("dir")?,
        })
    }

    /// The store's query, or a `WKS.0001` naming the parameter to fix.
    pub fn to_query(&self, fresh: Freshness) -> Result<DesktopQuery, ApiError> {
        let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        let presence = match self.presence.as_str() {
            "" => None,
            "online" => Some(PresenceFilter::Online),
            "offline" => Some(PresenceFilter::Offline),
            "never" => Some(PresenceFilter::Never),
            other => {
                return Err(ApiError::invalid(format!(
                    "presence must be online, offline or never, not {other:?}"
                )));
            }
        };
        let agent = match self.agent.as_str() {
            "" => None,
            "installed" => Some(AgentFilterState::Installed),
            "missing" => Some(AgentFilterState::Missing),
            "failing" => Some(AgentFilterState::Failing),
            "busy" => Some(AgentFilterState::Busy),
            other => {
                return Err(ApiError::invalid(format!(
                    "agent must be installed, missing, failing or busy, not {other:?}"
                )));
            }
        };
        let sort = match self.sort.as_str() {
            "" | "name" => DesktopSort::Name,
            "address" => DesktopSort::Address,
            "last_seen" => DesktopSort::LastSeen,
            "version" => DesktopSort::Version,
            "created" => DesktopSort::Created,
            other => {
                return Err(ApiError::invalid(format!(
                    "sort must be name, address, last_seen, version or created, not {other:?}"
                )));
            }
        };
        let descending = match self.dir.as_str() {
            "" | "asc" => false,
            "desc" => true,
            other => {
                return Err(ApiError::invalid(format!(
                    "dir must be asc or desc, not {other:?}"
                )));
            }
        };
        let tag = opt(&self.tag).map(|t| match t.split_once('=') {
            Some((k, v)) => (k.trim().to_owned(), Some(v.trim().to_owned())),
            None => (t, None),
        });
        Ok(DesktopQuery {
            search: opt(&self.q),
            presence,
            agent,
            version: opt(&self.version),
            tag,
            sort,
            descending,
            now: fresh.now,
            window_ms: fresh.window_ms,
        })
    }

    /// The filters as URL parameters (`k=v&...`), without paging.
    pub fn params(&self) -> String {
        [
            ("q", &self.q),
            ("presence", &self.presence),
            ("agent", &self.agent),
            ("version", &self.version),
            ("tag", &self.tag),
            ("sort", &self.sort),
            ("dir", &self.dir),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&")
    }

    /// The filters as hidden form fields (sort and direction left out).
    pub fn hidden(&self) -> Markup {
        html! {
            @for (k, v) in [("q", &self.q), ("presence", &self.presence), ("agent", &self.agent),
                            ("version", &self.version), ("tag", &self.tag)] {
                @if !v.is_empty() { input type="hidden" name=(k) value=(v); }
            }
        }
    }
}

/// A desktop's connection state in words.
pub fn presence_word(c: &AgentCondition, fresh: Freshness) -> &'static str {
    fresh.presence(&c.desktop.connection).as_str()
}

pub async fn show(
    State(state): State<AppState>,
    user: ConsoleUser,
    query: Query,
) -> Result<Response, ConsoleError> {
    let project = user.authorize(&state, Api::ListDesktopsDetail)?;
    let filters = Filters::from_query(&query)?;
    let fresh = state.freshness();
    let q = filters.to_query(fresh)?;
    let page_no = query.int("page", 1_000_000, 1)?.max(1);
    let (total, rows) = state
        .store
        .query_desktops(
            &project,
            &q,
            Page {
                limit: PAGE_ROWS,
                offset: (page_no - 1).saturating_mul(PAGE_ROWS),
            },
        )
        .await?;
    let pages = (total as u64).div_ceil(u64::from(PAGE_ROWS)).max(1);
    let may_install = user.may(Api::BatchInstallAgent);
    let may_change = user.may(Api::BatchCreateAgentInvocations);
    let sort_link = |key: &str, label: &str| {
        let current = filters.sort.as_str() == key || (filters.sort.is_empty() && key == "name");
        let desc = current && filters.dir == "desc";
        let mut f = filters.clone();
        f.sort = key.to_owned();
        f.dir = if current && !desc { "desc" } else { "asc" }.to_owned();
        let aria = match (current, desc) {
            (false, _) => "none",
            (true, false) => "ascending",
            (true, true) => "descending",
        };
        html! {
            th scope="col" aria-sort=(aria) {
                a href={"/console/desktops?" (f.params())} { (label)
                    @if current { span aria-hidden="true" { @if desc { " ▼" } @else { " ▲" } } }
                }
            }
        }
    };
    let base = filters.params();
    let page_link = |n: u64| {
        if base.is_empty() {
            format!("/console/desktops?page={n}")
        } else {
            format!("/console/desktops?{base}&page={n}")
        }
    };
    let body = html! {
        form method="get" action="/console/desktops" class="filters" role="search" aria-label="Filter desktops" {
            label { "Search name or address" input type="search" name="q" value=(filters.q); }
            label { "Connection"
                select name="presence" {
                    @for (v, l) in [("", "any"), ("online", "online"), ("offline", "offline"), ("never", "never connected")] {
                        option value=(v) selected[filters.presence == v] { (l) }
                    }
                }
            }
            label { "Agent"
                select name="agent" {
                    @for (v, l) in [("", "any"), ("installed", "installed"), ("missing", "not installed"), ("failing", "failing"), ("busy", "work in flight")] {
                        option value=(v) selected[filters.agent == v] { (l) }
                    }
                }
            }
            label { "Version" input name="version" value=(filters.version) size="8"; }
            label { "Tag (key or key=value)" input name="tag" value=(filters.tag) size="12"; }
            @if !filters.sort.is_empty() { input type="hidden" name="sort" value=(filters.sort); }
            @if !filters.dir.is_empty() { input type="hidden" name="dir" value=(filters.dir); }
            button type="submit" { "Apply filters" }
        }
        form method="get" action="/console/install" {
            (filters.hidden())
            p role="status" { (total) " desktops match. Page " (page_no) " of " (pages) "." }
            @if may_install {
                div class="actions" {
                    button type="submit" name="scope" value="selected" { "Install on selected" }
                    button type="submit" name="scope" value="filter" { "Install on all " (total) " matching" }
                    @if may_change {
                        button type="submit" name="scope" value="selected" formaction="/console/agents/upgrade" { "Upgrade selected" }
                        button type="submit" name="scope" value="selected" formaction="/console/agents/rollback" { "Roll back selected" }
                    }
                }
            }
            table class="desktops" {
                caption { "Desktops" }
                thead {
                    tr {
                        @if may_install {
                            th scope="col" {
                                input type="checkbox" data-select-all="desktop_id" aria-label="Select all desktops on this page";
                            }
                        }
                        (sort_link("name", "Name"))
                        (sort_link("address", "Address"))
                        th scope="col" { "Connection" }
                        (sort_link("last_seen", "Last seen"))
                        (sort_link("version", "Agent"))
                        th scope="col" { "Work" }
                        th scope="col" { "Tags" }
                    }
                }
                tbody {
                    @for c in &rows {
                        @let d = &c.desktop;
                        @let presence = presence_word(c, fresh);
                        tr {
                            @if may_install {
                                td {
                                    input type="checkbox" name="desktop_id" value=(d.id.as_str())
                                        aria-label={"Select " (d.computer_name)};
                                }
                            }
                            th scope="row" { a href={"/console/desktops/" (d.id.as_str())} { (d.computer_name) } }
                            td { (d.ip_address) }
                            td { span class={"state " (presence)} { (presence) } }
                            td { (opt_time(d.connection.last_seen_at)) }
                            td {
                                @match &d.agent {
                                    Some(a) => { (a.version) @if !a.healthy { " (unhealthy)" } }
                                    None => { "none" }
                                }
                            }
                            td {
                                @match c.in_flight {
                                    Some(stage) => { (stage.to_string()) @if let Some(p) = c.process { " " (p) "%" } }
                                    None => { "-" }
                                }
                            }
                            td {
                                @for t in &d.tags {
                                    span class="tag" { (t.key) @if !t.value.is_empty() { "=" (t.value) } } " "
                                }
                            }
                        }
                    }
                }
            }
        }
        nav aria-label="Pages" class="pager" {
            @if page_no > 1 { a href=(page_link(u64::from(page_no) - 1)) rel="prev" { "Previous page" } }
            @if u64::from(page_no) < pages { a href=(page_link(u64::from(page_no) + 1)) rel="next" { "Next page" } }
        }
    };
    Ok(page(layout("Desktops", Some(&user), Area::Desktops, body)))
}
