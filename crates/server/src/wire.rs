//! Conversions from domain records to wire DTOs, and the time formats of the wire.
//!
//! Times: job and desktop times are UTC ISO 8601 with milliseconds
//! (`2026-11-28T20:24:10.123Z`); IAM times use microseconds as Keystone does.

use chrono::{DateTime, Utc};
use deskfleet_core::clock::Millis;
use deskfleet_core::model::{AgentCondition, Desktop, Job, SubJob};
use deskfleet_core::presence::{Freshness, Presence};
use deskfleet_proto::workspace as w;
use std::collections::BTreeMap;

fn datetime(ms: Millis) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub fn api_time(ms: Millis) -> String {
    datetime(ms).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

pub fn iam_time(ms: Millis) -> String {
    datetime(ms).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub fn sub_job(s: SubJob) -> w::SubJobInfo {
    w::SubJobInfo {
        id: s.id.into_string(),
        job_id: s.job_id.into_string(),
        job_type: s.job_type,
        project_id: Some(s.project_id.into_string()),
        entities: w::JobEntities {
            desktop_id: Some(s.desktop_id.into_string()),
            desktop_name: Some(s.desktop_name.clone()),
            ip_address: Some(s.ip_address.clone()),
            product_id: None,
            user_name: None,
        },
        status: s.status.to_string(),
        process: Some(s.process),
        begin_time: s.begin_time.map(api_time),
        end_time: s.end_time.map(api_time),
        message: s.fail_reason.clone(),
        error_code: s.error_code,
        fail_reason: s.fail_reason,
        host: None,
        desktop_name: Some(s.desktop_name),
        ip_address: Some(s.ip_address),
    }
}

pub fn job(j: Job, sub_jobs: Vec<SubJob>) -> w::JobInfo {
    w::JobInfo {
        id: j.id.into_string(),
        job_type: j.job_type,
        status: j.status.to_string(),
        begin_time: j.begin_time.map(api_time),
        end_time: j.end_time.map(api_time),
        job_error_code: j.error_code,
        fail_reason: j.fail_reason,
        sub_jobs_total: j.sub_jobs_total as i32,
        sub_jobs: sub_jobs.into_iter().map(sub_job).collect(),
    }
}

fn tags(d: &Desktop) -> Vec<w::Tag> {
    d.tags
        .iter()
        .map(|t| w::Tag {
            key: t.key.clone(),
            value: t.value.clone(),
        })
        .collect()
}

/// The run state as the guest's connection tells it: a desktop whose guest connected
/// once and is offline now is `SHUTOFF` (deskfleet sees a desktop only through its guest);
/// otherwise the stored state.
fn run_status(status: String, presence: Presence) -> String {
    match presence {
        Presence::Offline { .. } => "SHUTOFF".into(),
        Presence::Online { .. } | Presence::Never => status,
    }
}

/// `login_status` / `connect_status`: `REGISTERED` while the guest is online, else
/// `UNREGISTER`. `CONNECTED` and `DISCONNECTED` describe end-user sessions, which
/// deskfleet does not broker; they are never sent.
fn login_status(presence: Presence) -> &'static str {
    if presence.is_online() {
        "REGISTERED"
    } else {
        "UNREGISTER"
    }
}

/// The `connection` extension object.
pub fn connection(presence: Presence) -> w::ConnectionInfo {
    let since = match presence {
        Presence::Online { since, .. } | Presence::Offline { since, .. } => Some(since),
        Presence::Never => None,
    };
    w::ConnectionInfo {
        state: presence.as_str().into(),
        since: since.map(api_time),
        last_seen_at: presence.last_seen().map(api_time),
    }
}

pub fn simple_desktop(d: Desktop, fresh: Freshness) -> w::SimpleDesktopInfo {
    let presence = fresh.presence(&d.connection);
    w::SimpleDesktopInfo {
        connect_status: login_status(presence).into(),
        connection: Some(connection(presence)),
        tags: tags(&d),
        desktop_id: d.id.into_string(),
        os_host_name: Some(d.computer_name.clone()),
        computer_name: d.computer_name,
        status: run_status(d.status, presence),
        task_status: String::new(),
        ip_address: d.ip_address,
        created: api_time(d.created_at),
        enterprise_project_id: d.enterprise_project_id,
        project_id: d.project_id.into_string(),
        desktop_type: "DEDICATED".into(),
    }
}

/// A desktop in detail, with its in-flight install (if any) as `task_status`/`process`.
pub fn desktop_detail(c: AgentCondition, fresh: Freshness) -> w::DesktopDetailInfo {
    let d = c.desktop;
    let presence = fresh.presence(&d.connection);
    let mut metadata = BTreeMap::new();
    metadata.insert("os_type".to_string(), d.os_type.clone());
    let task_status = c.in_flight.map(|s| s.to_string()).unwrap_or_default();
    let process = c.in_flight.and(c.process);
    w::DesktopDetailInfo {
        tags: tags(&d),
        agent_version: d.agent.as_ref().map(|a| a.version.clone()),
        login_status: login_status(presence).into(),
        connection: Some(connection(presence)),
        desktop_id: d.id.into_string(),
        os_host_name: Some(d.computer_name.clone()),
        computer_name: d.computer_name,
        status: run_status(d.status, presence),
        task_status,
        ipv4: Some(d.ip_address.clone()),
        ip_addresses: vec![d.ip_address],
        created: api_time(d.created_at),
        metadata,
        enterprise_project_id: d.enterprise_project_id,
        project_id: d.project_id.into_string(),
        desktop_type: "DEDICATED".into(),
        process,
    }
}

pub fn agents_condition(c: AgentCondition, fresh: Freshness) -> w::AgentsCondition {
    let d = c.desktop;
    let presence = fresh.presence(&d.connection);
    let agent_info = vec![match &d.agent {
        Some(a) => w::AgentInfo {
            agent_name: w::AGENT_NAME.into(),
            agent_version: a.version.clone(),
            is_installed: true,
        },
        None => w::AgentInfo {
            agent_name: w::AGENT_NAME.into(),
            agent_version: String::new(),
            is_installed: false,
        },
    }];
    w::AgentsCondition {
        desktop_id: d.id.into_string(),
        desktop_name: d.computer_name,
        desktop_pool_id: None,
        status: run_status(d.status, presence),
        task_status: c.in_flight.map(|s| s.to_string()).unwrap_or_default(),
        ip_address: d.ip_address,
        enterprise_project_id: d.enterprise_project_id,
        process: c.process,
        agent_info,
        connection: Some(connection(presence)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_render_in_utc() {
        assert_eq!(api_time(1_735_689_600_123), "2025-01-01T00:00:00.123Z");
        assert_eq!(iam_time(1_735_689_600_123), "2025-01-01T00:00:00.123000Z");
    }
}
