//! `/api/schedules`: cron schedules that submit a task at each tick
//! (docs/api.md, "Schedules"; docs/tasks.md, "Schedules").

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::IntoParams;

use dwa_core::schedule::{ScheduleList, ScheduleSpec, ScheduleView};

use super::{ApiError, AppState, ErrorBody, Path, Query, body_bytes};

/// The routes, under `/api`.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/schedules", post(create_schedule).get(list_schedules))
        .route("/schedules/{id}", get(get_schedule).delete(delete_schedule))
        .route("/schedules/{id}/pause", post(pause_schedule))
        .route("/schedules/{id}/resume", post(resume_schedule))
}

/// Create a schedule (dwa): its task is checked now and submitted at each
/// tick of its cron expression, exactly once per tick across hosts.
#[utoipa::path(post, path = "/api/schedules", request_body = ScheduleSpec,
    responses((status = 201, body = ScheduleView), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "the id is taken, or DWA_MAX_SCHEDULES reached"),
              (status = 422, body = ErrorBody, description = "its task cannot run")))]
pub(super) async fn create_schedule(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ScheduleView>), ApiError> {
    let body = body_bytes(body)?;
    let view = st.engine.create_schedule(&body).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Paging of the schedule list.
#[derive(Debug, Deserialize, IntoParams)]
pub(super) struct ScheduleQuery {
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `nextCursor` of the previous page.
    cursor: Option<String>,
}

/// List schedules in id order (dwa).
#[utoipa::path(get, path = "/api/schedules", params(ScheduleQuery),
    responses((status = 200, body = ScheduleList), (status = 400, body = ErrorBody)))]
pub(super) async fn list_schedules(
    State(st): State<AppState>,
    Query(q): Query<ScheduleQuery>,
) -> Result<Json<ScheduleList>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Query(format!(
            "limit {limit} is not between 1 and 1000"
        )));
    }
    let cursor = q.cursor.filter(|c| !c.is_empty());
    Ok(Json(st.engine.schedules(cursor.as_deref(), limit).await?))
}

/// A schedule: its definition, next tick and recent runs (dwa).
#[utoipa::path(get, path = "/api/schedules/{id}", params(("id" = String, Path, description = "schedule id")),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody)))]
pub(super) async fn get_schedule(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(st.engine.schedule(&id).await?))
}

/// Delete a schedule; the tasks it submitted stay (dwa).
#[utoipa::path(delete, path = "/api/schedules/{id}", params(("id" = String, Path, description = "schedule id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_schedule(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    st.engine.delete_schedule(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pause a schedule: no tick fires until it is resumed (dwa).
#[utoipa::path(post, path = "/api/schedules/{id}/pause", params(("id" = String, Path, description = "schedule id")),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody)))]
pub(super) async fn pause_schedule(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(st.engine.pause_schedule(&id, true).await?))
}

/// Resume a schedule from its next tick; the paused ticks are not caught up (dwa).
#[utoipa::path(post, path = "/api/schedules/{id}/resume", params(("id" = String, Path, description = "schedule id")),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody)))]
pub(super) async fn resume_schedule(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(st.engine.pause_schedule(&id, false).await?))
}
