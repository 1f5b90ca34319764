//! Desktops: ListDesktops, ListDesktopsDetail, ShowDesktopDetail.

use crate::AppState;
use crate::auth::Caller;
use crate::auth::policy::Api;
use crate::error::ApiError;
use crate::extract::{ApiPath, Query};
use crate::wire;
use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Json, Router};
use deskfleet_core::ids::DesktopId;
use deskfleet_core::model::{AgentFilter, DesktopFilter, Page};
use deskfleet_core::presence::Freshness;
use deskfleet_proto::workspace::{
    ListDesktopsDetailResponse, ListDesktopsResponse, ShowDesktopResponse,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/{project_id}/desktops", get(list_desktops))
        .route(
            "/v2/{project_id}/desktops/detail",
            get(list_desktops_detail),
        )
        .route("/v2/{project_id}/desktops/{desktop_id}", get(show_desktop))
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
