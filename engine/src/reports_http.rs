//! `GET /api/v1/reports/{sla,funnel,attribution,copilot}` (PROTOCOL §5,
//! docs/reports.md): managers and admins; `?from=&to=` (RFC 3339; default
//! the last 7 days to now), `?group_by=agent|team` (SLA and funnel; add
//! `,day` for a row per UTC day; attribution and copilot take
//! `group_by=day`), `?format=csv`. A manager limited to teams (`manages`)
//! gets the rows of its teams and of their agents, and the attribution (and
//! the co-pilot's report) of the conversations that first went to its teams
//! (without the ads' spend, which is not kept per team). Answered by the reports' consumer
//! (`crate::reports`) once it holds every event committed before the request.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use protocol::ApiError;
use reports::query::{self, GroupBy, Range};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{error_response, principal};
use crate::server::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/reports/sla", get(|state, headers, query| answer(Kind::Sla, state, headers, query)))
        .route("/api/v1/reports/funnel", get(|state, headers, query| answer(Kind::Funnel, state, headers, query)))
        .route(
            "/api/v1/reports/attribution",
            get(|state, headers, query| answer(Kind::Attribution, state, headers, query)),
        )
        .route("/api/v1/reports/copilot", get(|state, headers, query| answer(Kind::Copilot, state, headers, query)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sla,
    Funnel,
    Attribution,
    Copilot,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sla => "sla",
            Kind::Funnel => "funnel",
            Kind::Attribution => "attribution",
            Kind::Copilot => "copilot",
        }
    }

    /// Grouped by source (attribution, copilot): only `group_by=day`.
    fn by_source(self) -> bool {
        matches!(self, Kind::Attribution | Kind::Copilot)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
    format: Option<String>,
}

/// What a request asks, checked.
#[derive(Debug, PartialEq)]
struct Asked {
    range: Range,
    group_by: Option<GroupBy>,
    by_day: bool,
    csv: bool,
}

/// The longest range a report covers (a year and a day).
const MAX_RANGE_MS: i64 = 366 * reports::DAY_MS;
/// The range when none is given: the last 7 days.
const DEFAULT_RANGE_MS: i64 = 7 * reports::DAY_MS;

fn time(name: &str, text: Option<&str>) -> Result<Option<i64>, ApiError> {
    text.map(|text| {
        protocol::time::parse_rfc3339(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{name}` must be an RFC 3339 time such as 2026-11-30T00:00:00Z, not {text:?}"
            ))
        })
    })
    .transpose()
}

fn parse(kind: Kind, uri: &Uri, now: i64) -> Result<Asked, ApiError> {
    let query: ReportQuery = crate::http::parse_query(uri)?;
    let to = time("to", query.to.as_deref())?.unwrap_or(now);
    let from = time("from", query.from.as_deref())?.unwrap_or(to - DEFAULT_RANGE_MS);
    if from >= to {
        return Err(ApiError::bad_request("`from` must be before `to`"));
    }
    if to - from > MAX_RANGE_MS {
        return Err(ApiError::bad_request("a report covers at most 366 days; narrow `from`/`to`"));
    }
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(ApiError::bad_request(format!("`format` is json or csv, not {other:?}"))),
    };
    let groups = query.group_by.as_deref().unwrap_or(if kind.by_source() { "" } else { "team" });
    let mut group_by = None;
    let mut by_day = false;
    for part in groups.split(',').map(str::trim).filter(|part| !part.is_empty()) {
        match (part, kind) {
            ("day", _) => by_day = true,
            ("agent", Kind::Sla | Kind::Funnel) if group_by.is_none() => group_by = Some(GroupBy::Agent),
            ("team", Kind::Sla | Kind::Funnel) if group_by.is_none() => group_by = Some(GroupBy::Team),
            _ => {
                let allowed = if kind.by_source() { "`day`" } else { "`agent` or `team`, and `day`" };
                return Err(ApiError::bad_request(format!(
                    "`group_by` of the {} report takes {allowed} (e.g. group_by=agent,day), not {groups:?}",
                    kind.name()
                )));
            }
        }
    }
    if !kind.by_source() && group_by.is_none() {
        group_by = Some(GroupBy::Team);
    }
    Ok(Asked { range: Range { from, to }, group_by, by_day, csv })
}

/// For a manager limited to teams: the team and agent ids whose rows it sees.
fn scope(system: &actors::System, principal: &actors::shared::Principal) -> Option<(HashSet<String>, HashSet<String>)> {
    let manages: HashSet<String> = system.scope(principal)?.into_iter().collect();
    let agents = system
        .agent_views()
        .into_iter()
        .filter(|agent| agent.teams.iter().any(|team| manages.contains(team)))
        .map(|agent| agent.id)
        .collect();
    Some((manages, agents))
}

async fn answer(kind: Kind, State(state): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    let answer = async {
        let principal = principal(&state, &headers)?;
        if !principal.role.sees_everything() {
            return Err(ApiError::forbidden("reports are for managers and admins"));
        }
        let system =
            state.system().ok_or_else(|| ApiError::unavailable("the engine is still starting; retry shortly"))?;
        let asked = parse(kind, &uri, system.now())?;
        let scope = scope(system, &principal);
        let reports = state.reports.get().ok_or_else(|| ApiError::unavailable("the engine is still starting"))?;
        let campaigns = state.config.campaigns();
        let Asked { range, group_by, by_day, csv } = asked;
        let teams = scope.as_ref().map(|(teams, _)| teams.clone());
        let question: Box<dyn FnOnce(&reports::Projection) -> reports::Report + Send> = Box::new(move |projection| {
            let rollups = &projection.rollups;
            match (kind, group_by) {
                (Kind::Sla, Some(group_by)) => query::sla(rollups, range, group_by, by_day),
                (Kind::Funnel, Some(group_by)) => query::funnel(rollups, range, group_by, by_day),
                (Kind::Copilot, _) => query::copilot(rollups, range, by_day, &campaigns, teams.as_ref()),
                _ => query::attribution(rollups, range, by_day, &campaigns, teams.as_ref()),
            }
        });
        let mut report = reports.ask(question).await.map_err(|error| {
            tracing::warn!(%error, "a report could not be answered");
            ApiError::unavailable("the reports cannot be read right now; try again")
        })?;
        let group_key = match group_by {
            Some(GroupBy::Agent) => "agent",
            Some(GroupBy::Team) => "team",
            None => "source",
        };
        if let Some((teams, agents)) = &scope
            && !kind.by_source()
        {
            report.rows.retain(|row| {
                let id = row[group_key].as_str().unwrap_or_default();
                if group_key == "team" { teams.contains(id) } else { agents.contains(id) }
            });
        }
        if csv {
            let mut lead = vec![group_key];
            if by_day {
                lead.push("day");
            }
            let body = query::to_csv(&report.rows, &lead);
            let disposition = format!("attachment; filename=\"{}.csv\"", kind.name());
            return Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                body,
            )
                .into_response());
        }
        let mut answer = json!({
            "from": protocol::time::format_rfc3339(report.from),
            "to": protocol::time::format_rfc3339(report.to),
            "rows": report.rows,
        });
        if group_by.is_some() {
            answer["group_by"] = Value::String(if by_day { format!("{group_key},day") } else { group_key.to_owned() });
        } else if by_day {
            answer["group_by"] = json!("day");
        }
        Ok(Json(answer).into_response())
    }
    .await;
    answer.unwrap_or_else(error_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_083_200_000;

    fn uri(query: &str) -> Uri {
        format!("/api/v1/reports/sla?{query}").parse().unwrap()
    }

    #[test]
    fn a_query_is_read_and_checked() {
        let asked = parse(Kind::Sla, &uri(""), NOW).unwrap();
        assert_eq!(
            asked,
            Asked {
                range: Range { from: NOW - DEFAULT_RANGE_MS, to: NOW },
                group_by: Some(GroupBy::Team),
                by_day: false,
                csv: false
            }
        );
        let asked = parse(
            Kind::Funnel,
            &uri("from=2026-11-01T00:00:00Z&to=2026-11-30T00:00:00Z&group_by=agent,day&format=csv"),
            NOW,
        )
        .unwrap();
        assert_eq!((asked.group_by, asked.by_day, asked.csv), (Some(GroupBy::Agent), true, true));
        assert_eq!(parse(Kind::Attribution, &uri("group_by=day"), NOW).unwrap().group_by, None);
        for bad in [
            "from=yesterday",
            "from=2026-11-30T00:00:00Z&to=2026-11-01T00:00:00Z",
            "from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "group_by=contact",
            "group_by=agent,team",
            "format=xml",
            "colour=red",
        ] {
            assert_eq!(parse(Kind::Sla, &uri(bad), NOW).unwrap_err().code, protocol::ErrorCode::BadRequest, "{bad}");
        }
        assert!(parse(Kind::Attribution, &uri("group_by=agent"), NOW).is_err());
        assert_eq!(parse(Kind::Copilot, &uri(""), NOW).unwrap().group_by, None);
        let asked = parse(Kind::Copilot, &uri("group_by=day&format=csv"), NOW).unwrap();
        assert_eq!((asked.group_by, asked.by_day, asked.csv), (None, true, true));
        for bad in ["group_by=team", "group_by=agent,day", "source=paid"] {
            assert!(parse(Kind::Copilot, &uri(bad), NOW).is_err(), "{bad}");
        }
    }
}
