//! Which route leaves which trace: one table. Every route that is not a plain read (every
//! method but GET) is either audited here or exempted with the reason; a test walks the
//! router's routes and the admin commands and fails on any write missing from it.

use http::Method;

/// How one audited route is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub method: &'static str,
    pub route: &'static str,
    /// The trace name (the spec's, or a chosen one: docs/audit.md).
    pub trace_name: &'static str,
    pub service_type: &'static str,
    pub resource_type: &'static str,
    /// The API Explorer operation id.
    pub operation_id: &'static str,
    pub api_version: &'static str,
    /// The second path segment is the project id.
    pub project_in_path: bool,
    /// The trace name when the request fails (IAM's `loginFailed`), if it differs.
    pub failure_name: Option<&'static str>,
}

const fn entry(
    method: &'static str,
    route: &'static str,
    trace_name: &'static str,
    service_type: &'static str,
    resource_type: &'static str,
    operation_id: &'static str,
    api_version: &'static str,
) -> Entry {
    Entry {
        method,
        route,
        trace_name,
        service_type,
        resource_type,
        operation_id,
        api_version,
        project_in_path: true,
        failure_name: None,
    }
}

/// Audited routes.
pub const AUDITED: &[Entry] = &[
    entry(
        "POST",
        "/v2/{project_id}/enrollment-tokens",
        "createEnrollmentToken",
        "Workspace",
        "enrollmentToken",
        "CreateEnrollmentToken",
        "v2",
    ),
    entry(
        "POST",
        "/v2/{project_id}/enrollment-tokens/revoke",
        "deleteEnrollmentToken",
        "Workspace",
        "enrollmentToken",
        "RevokeEnrollmentToken",
        "v2",
    ),
    entry(
        "POST",
        "/v2/{project_id}/desktops/agents",
        "batchInstallCesAgent",
        "Workspace",
        "workspace",
        "BatchInstallAgent",
        "v2",
    ),
    entry(
        "POST",
        "/v2/{project_id}/workspace-jobs/{job_id}/actions",
        "runActionsOnWorkspaceJob",
        "Workspace",
        "workspace",
        "RunActionsOnWorkspaceJob",
        "v2",
    ),
    entry(
        "POST",
        "/v2/{project_id}/workspace-sub-jobs/batch-delete",
        "batchDeleteSubJob",
        "Workspace",
        "workspace",
        "BatchDeleteSubJobs",
        "v2",
    ),
    entry(
        "POST",
        "/v3/{project_id}/agent-invocations/batch-create",
        "createAgentInvocations",
        "CES",
        "agent",
        "BatchCreateAgentInvocations",
        "v3",
    ),
    Entry {
        project_in_path: false,
        failure_name: Some("loginFailed"),
        ..entry(
            "POST",
            "/v3/auth/tokens",
            "createTokenByPwd",
            "IAM",
            "token",
            "KeystoneCreateUserTokenByPassword",
            "v3",
        )
    },
];

/// A console form: recorded with the trace name of the same change made through the API
/// (or IAM's, for users and keys), as a `ConsoleAction` (see [`super::console`]).
const fn console(
    route: &'static str,
    trace_name: &'static str,
    service_type: &'static str,
    resource_type: &'static str,
) -> Entry {
    Entry {
        project_in_path: false,
        operation_id: route,
        api_version: "",
        ..entry(
            "POST",
            route,
            trace_name,
            service_type,
            resource_type,
            "",
            "",
        )
    }
}

/// Audited console forms.
pub const CONSOLE: &[Entry] = &[
    Entry {
        failure_name: Some("loginFailed"),
        ..console("/console/login", "login", "IAM", "user")
    },
    console("/console/logout", "logout", "IAM", "user"),
    console(
        "/console/install",
        "batchInstallCesAgent",
        "Workspace",
        "workspace",
    ),
    console(
        "/console/agents/upgrade",
        "createAgentInvocations",
        "CES",
        "agent",
    ),
    console(
        "/console/agents/rollback",
        "createAgentInvocations",
        "CES",
        "agent",
    ),
    console(
        "/console/enrollment",
        "createEnrollmentToken",
        "Workspace",
        "enrollmentToken",
    ),
    console(
        "/console/enrollment/revoke",
        "deleteEnrollmentToken",
        "Workspace",
        "enrollmentToken",
    ),
    console("/console/users", "createUser", "IAM", "user"),
    console(
        "/console/users/{user_id}/disable",
        "updateUser",
        "IAM",
        "user",
    ),
    console(
        "/console/users/{user_id}/enable",
        "updateUser",
        "IAM",
        "user",
    ),
    console(
        "/console/users/{user_id}/keys",
        "addCredential",
        "IAM",
        "user",
    ),
    console(
        "/console/keys/{access_key}/delete",
        "deleteCredential",
        "IAM",
        "user",
    ),
    console(
        "/console/jobs/{job_id}/retry",
        "runActionsOnWorkspaceJob",
        "Workspace",
        "workspace",
    ),
    console(
        "/console/jobs/{job_id}/cancel",
        "cancelWorkspaceJob",
        "Workspace",
        "workspace",
    ),
];

/// The entry of an audited console form, if it is one.
pub fn lookup_console(method: &Method, route: &str) -> Option<&'static Entry> {
    CONSOLE
        .iter()
        .find(|e| e.method == method.as_str() && e.route == route)
}

/// Routes that take a method other than GET but change nothing a user asked for, and why.
pub const EXEMPT: &[(&str, &str, &str)] = &[
    (
        "POST",
        "/v3/{project_id}/agent-status/batch-query",
        "a query sent as POST (ListAgentStatus); reads are not recorded",
    ),
    (
        "POST",
        "/V1.0/{project_id}/batch-query-metric-data",
        "a query sent as POST (BatchListMetricData); reads are not recorded",
    ),
    (
        "POST",
        "/console/{*rest}",
        "the console's page for an address it does not have: answers 404, changes nothing",
    ),
    (
        "POST",
        "/v1/opamp",
        "a desktop's own reports over OpAMP (progress, health, metrics); the changes they \
         make are the ends of jobs already traced, and enrollment is traced by the fleet",
    ),
];

/// The entry of an audited route, if it is one.
pub fn lookup(method: &Method, route: &str) -> Option<&'static Entry> {
    AUDITED
        .iter()
        .find(|e| e.method == method.as_str() && e.route == route)
}

/// How a refusal (401, 403) on a route that changes nothing is recorded: as
/// `authenticationFailed` or `authorizationDenied` (names chosen; the status tells which)
/// of the service the path belongs to, with the route as `operation_id`.
pub fn refusal_entry(route: &str) -> Entry {
    let (service_type, resource_type, api_version) = if route.starts_with("/v2/") {
        ("Workspace", "workspace", "v2")
    } else if route.ends_with("/traces") || route.ends_with("/trackers") {
        ("CTS", "trace", "v3")
    } else if route.starts_with("/v3/auth") || route == "/v3/projects" {
        ("IAM", "token", "v3")
    } else if route.starts_with("/v3/") || route.starts_with("/V1.0/") {
        ("CES", "agent", "v3")
    } else {
        ("deskfleet", "fleet", "")
    };
    Entry {
        method: "",
        route: "",
        trace_name: "authorizationDenied",
        service_type,
        resource_type,
        operation_id: "",
        api_version,
        project_in_path: route.starts_with("/v2/{project_id}")
            || route.starts_with("/v3/{project_id}")
            || route.starts_with("/V1.0/{project_id}"),
        failure_name: None,
    }
}

/// Admin commands (`deskfleet-server admin ...`) that change the database, and their
/// trace names (IAM's where it has one). Every other admin command is in
/// [`ADMIN_READ_ONLY`]; a test in the binary walks the command tree against both.
pub const ADMIN: &[(&str, &str, &str)] = &[
    // (command path, trace name, resource type)
    ("projects create", "createProject", "project"),
    ("users create", "createUser", "user"),
    ("users grant", "grantRole", "user"),
    ("users disable", "updateUser", "user"),
    ("users enable", "updateUser", "user"),
    ("users revoke-tokens", "revokeUserTokens", "user"),
    ("users unlock", "unlockUser", "user"),
    ("access-keys create", "addCredential", "user"),
    ("access-keys delete", "deleteCredential", "user"),
    ("access-keys unlock", "unlockCredential", "user"),
    ("desktops import", "importDesktops", "workspace"),
    ("desktops delete", "deleteDesktop", "workspace"),
    (
        "enrollment-tokens create",
        "createEnrollmentToken",
        "enrollmentToken",
    ),
    (
        "enrollment-tokens revoke",
        "revokeEnrollmentToken",
        "enrollmentToken",
    ),
    ("packages publish", "publishPackage", "package"),
    ("packages withdraw", "withdrawPackage", "package"),
    ("packages restore", "restorePackage", "package"),
];

/// Admin commands that change nothing in the database, and why.
pub const ADMIN_READ_ONLY: &[(&str, &str)] = &[
    ("packages list", "reads"),
    ("decode-authorization-message", "decodes its argument"),
    ("backup", "copies the database file"),
    ("audit verify", "reads the trail"),
    ("audit export", "reads the trail"),
    (
        "audit seal",
        "adds a seal, which is not a change of anything a trace describes",
    ),
];

/// The trace name and resource type of an admin command, if it changes the database.
pub fn admin_entry(path: &str) -> Option<(&'static str, &'static str)> {
    ADMIN
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, name, kind)| (*name, *kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every operation of the OpenAPI document (the API's routes are declared there,
    /// through `utoipa_axum::routes!`), and every `.route("path", method(..))` in the
    /// server's sources (the console's and the trail's own), as (METHOD, path) pairs.
    fn routes_in_sources() -> Vec<(String, String)> {
        let mut found = Vec::new();
        for (path, item) in &crate::routes::document().paths.paths {
            for (method, operation) in [
                ("GET", &item.get),
                ("POST", &item.post),
                ("PUT", &item.put),
                ("DELETE", &item.delete),
                ("PATCH", &item.patch),
            ] {
                if operation.is_some() {
                    found.push((method.to_owned(), path.clone()));
                }
            }
        }
        found.extend(route_calls_in_sources());
        found
    }

    fn route_calls_in_sources() -> Vec<(String, String)> {
        fn walk(dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|x| x == "rs") {
                    out.push(std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        let mut sources = Vec::new();
        walk(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut sources,
        );
        let mut found = Vec::new();
        for src in sources {
            let mut rest = src.as_str();
            while let Some(i) = rest.find(".route(") {
                rest = &rest[i + ".route(".len()..];
                // The call's text: up to its closing parenthesis.
                let mut depth = 1;
                let end = rest
                    .char_indices()
                    .find(|(_, c)| {
                        match c {
                            '(' => depth += 1,
                            ')' => depth -= 1,
                            _ => {}
                        }
                        depth == 0
                    })
                    .map_or(rest.len(), |(i, _)| i);
                let call = &rest[..end];
                let Some(path) = call.split('"').nth(1) else {
                    continue;
                };
                let methods = &call[call.find(path).unwrap() + path.len() + 1..];
                for m in ["get", "post", "put", "delete", "patch"] {
                    let direct = methods
                        .trim_start_matches([',', ' ', '\n'])
                        .starts_with(&format!("{m}("));
                    if direct || methods.contains(&format!(".{m}(")) {
                        found.push((m.to_uppercase(), path.to_owned()));
                    }
                }
            }
        }
        found
    }

    #[test]
    fn every_write_route_leaves_a_trace_or_says_why_not() {
        let routes = routes_in_sources();
        assert!(
            routes
                .iter()
                .any(|(m, p)| m == "POST" && p == "/v2/{project_id}/desktops/agents"),
            "the route walk found the install route: {routes:?}"
        );
        let mut missing = Vec::new();
        for (method, path) in &routes {
            if method == "GET" {
                continue;
            }
            let audited = AUDITED
                .iter()
                .chain(CONSOLE)
                .any(|e| e.method == method && e.route == path);
            let exempt = EXEMPT.iter().any(|(m, p, _)| m == method && p == path);
            if !audited && !exempt {
                missing.push(format!("{method} {path}"));
            }
        }
        assert!(
            missing.is_empty(),
            "writes without a trace name: {missing:?}; add them to audit::catalog"
        );
        // And the tables name only real routes.
        for e in AUDITED.iter().chain(CONSOLE) {
            assert!(
                routes.iter().any(|(m, p)| m == e.method && p == e.route),
                "{} {} is not a route",
                e.method,
                e.route
            );
        }
    }
}
