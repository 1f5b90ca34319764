//! Desktops: ListDesktops, ListDesktopsDetail, ShowDesktopDetail.

use crate::AppState;
use crate::auth::Caller;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::{ApiPath, Query};
use crate::openapi::{PrintableId, ProjectIdParam, TAG_WORKSPACE, WorkspaceErrors};
use crate::wire;
use axum::extract::State;
use axum::{Extension, Json};
use deskfleet_core::ids::DesktopId;
use deskfleet_core::model::{AgentFilter, DesktopFilter, Page};
use deskfleet_core::presence::Freshness;
use deskfleet_proto::error::ErrorBody;
use deskfleet_proto::workspace::{
    ListDesktopsDetailResponse, ListDesktopsResponse, ShowDesktopResponse,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_desktops))
        .routes(routes!(list_desktops_detail))
        .routes(routes!(show_desktop))
}

/// The filters both desktop lists share.
fn desktop_filter(query: &Query, fresh: Freshness) -> Result<DesktopFilter, ApiError> {
    let desktop_ids = query
        .all("desktop_id", 100)?
        .into_iter()
        .map(|id| DesktopId::parse(id).map_err(|e| ApiError::invalid(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DesktopFilter {
        desktop_ids,
        computer_name: query.str("computer_name")?,
        ip_address: query.str("desktop_ip")?,
        status: query.str("status")?,
        enterprise_project_id: query.str("enterprise_project_id")?,
        seen_after: Some(fresh.cutoff()),
    })
}

/// ListDesktops: the desktops, in brief.
#[utoipa::path(
    get,
    path = "/v2/{project_id}/desktops",
    tag = TAG_WORKSPACE,
    operation_id = "ListDesktops",
    params(
        ("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)"),
        ("desktop_id" = inline(Option<Vec<PrintableId>>), Query, explode = true, max_items = 100, description = "Only these desktops; up to 100"),
        ("computer_name" = Option<String>, Query, description = "Only desktops of this name"),
        ("desktop_ip" = Option<String>, Query, description = "Only desktops with this address"),
        ("status" = Option<String>, Query, description = "Only desktops in this run state"),
        ("enterprise_project_id" = Option<String>, Query),
        ("limit" = Option<u32>, Query, maximum = 1000, description = "Page size, 0 to 1000 (1000)"),
        ("offset" = Option<u32>, Query, maximum = 2147483647, description = "Rows to skip"),
    ),
    responses((status = 200, description = "A page of desktops", body = ListDesktopsResponse), WorkspaceErrors),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn list_desktops(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    query: Query,
) -> Result<Json<ListDesktopsResponse>, ApiError> {
    let project = state.authorize(&caller, &project_id, Api::ListDesktops)?;
    let page = query.page(1000, 1000, i32::MAX as u32)?;
    let fresh = state.freshness();
    let filter = desktop_filter(&query, fresh)?;
    let (total_count, rows) = state.store.list_desktops(&project, &filter, page).await?;
    Ok(Json(ListDesktopsResponse {
        total_count,
        desktops: rows
            .into_iter()
            .map(|d| wire::simple_desktop(d, fresh))
            .collect(),
    }))
}

/// ListDesktopsDetail: the desktops, in detail.
#[utoipa::path(
    get,
    path = "/v2/{project_id}/desktops/detail",
    tag = TAG_WORKSPACE,
    operation_id = "ListDesktopsDetail",
    params(
        ("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)"),
        ("desktop_id" = inline(Option<Vec<PrintableId>>), Query, explode = true, max_items = 100, description = "Only these desktops; up to 100"),
        ("computer_name" = Option<String>, Query, description = "Only desktops of this name"),
        ("desktop_ip" = Option<String>, Query, description = "Only desktops with this address"),
        ("status" = Option<String>, Query, description = "Only desktops in this run state"),
        ("enterprise_project_id" = Option<String>, Query),
        ("limit" = Option<u32>, Query, maximum = 500, description = "Page size, 0 to 500 (500)"),
        ("offset" = Option<u32>, Query, maximum = 2147483647, description = "Rows to skip"),
    ),
    responses((status = 200, description = "A page of desktops", body = ListDesktopsDetailResponse), WorkspaceErrors),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id))]
async fn list_desktops_detail(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(project_id): ApiPath<String>,
    query: Query,
) -> Result<Json<ListDesktopsDetailResponse>, ApiError> {
    let project = state.authorize(&caller, &project_id, Api::ListDesktopsDetail)?;
    let page = query.page(500, 500, i32::MAX as u32)?;
    let fresh = state.freshness();
    let filter = AgentFilter {
        desktop: desktop_filter(&query, fresh)?,
        is_installed: None,
    };
    let (total_count, rows) = state
        .store
        .list_agent_conditions(&project, &filter, page)
        .await?;
    Ok(Json(ListDesktopsDetailResponse {
        total_count,
        desktops: rows
            .into_iter()
            .map(|c| wire::desktop_detail(c, fresh))
            .collect(),
    }))
}

/// ShowDesktopDetail: one desktop.
#[utoipa::path(
    get,
    path = "/v2/{project_id}/desktops/{desktop_id}",
    tag = TAG_WORKSPACE,
    operation_id = "ShowDesktopDetail",
    params(("project_id" = inline(ProjectIdParam), Path, description = "The project id (32 hex digits)"), ("desktop_id" = inline(PrintableId), Path, description = "The desktop id")),
    responses(
        (status = 200, description = "The desktop", body = ShowDesktopResponse),
        (status = 404, description = "WKS: no such desktop in this project", body = ErrorBody),
        WorkspaceErrors,
    ),
    security(("aksk" = []), ("token" = [])),
)]
#[tracing::instrument(skip_all, fields(project_id = %project_id, desktop_id = %raw_id))]
async fn show_desktop(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((project_id, raw_id)): ApiPath<(String, String)>,
) -> Result<Json<ShowDesktopResponse>, ApiError> {
    let project = state.authorize(&caller, &project_id, Api::ShowDesktopDetail)?;
    let id = DesktopId::parse(raw_id).map_err(|e| ApiError::invalid(e.to_string()))?;
    let filter = AgentFilter {
        desktop: DesktopFilter {
            desktop_ids: vec![id.clone()],
            ..DesktopFilter::default()
        },
        is_installed: None,
    };
    let (_, mut rows) = state
        .store
        .list_agent_conditions(
            &project,
            &filter,
            Page {
                limit: 1,
                offset: 0,
            },
        )
        .await?;
    let row = rows.pop().ok_or_else(|| {
        ApiError::not_found(format!("desktop {id} does not exist in this project"))
    })?;
    Ok(Json(ShowDesktopResponse {
        desktop: wire::desktop_detail(row, state.freshness()),
    }))
}
