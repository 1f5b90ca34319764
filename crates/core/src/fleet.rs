//! The fleet side of the domain: enrollment, desktop identity, packages, and the reports
//! desktops send about the work they run.

use crate::clock::Millis;
use crate::ids::{DesktopId, ProjectId, SubJobId};
use crate::job::Stage;
use crate::model::{Desktop, Outcome};

/// What a desktop says about itself when it enrolls or reconnects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesktopFacts {
    pub hostname: String,
    /// `Linux`, `Windows` or `Others`.
    pub os_type: String,
    pub ip_addresses: Vec<String>,
}

/// A desktop as its fleet connection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesktopIdentity {
    pub desktop: Desktop,
    /// The OpAMP instance uid (hex), once the desktop has connected.
    pub instance_uid: Option<String>,
    /// The host name the desktop last reported.
    pub hostname: Option<String>,
}

/// What an unexpired, unspent enrollment token lets its holder do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentGrant {
    pub project: ProjectId,
    /// A desktop-bound token names the one desktop (imported, never connected) it may
    /// claim; a project-wide token only ever enrolls new desktops.
    pub desktop: Option<DesktopId>,
}

/// The imported desktop an enrollment claims, with the desktop-bound token that allows
/// it. The token is spent by the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub desktop: DesktopId,
    /// SHA-256 (hex) of the desktop-bound enrollment token.
    pub token_sha256: String,
}

/// Enrolling a desktop: claim the imported desktop a desktop-bound token names, or
/// create a new one. Never an existing desktop's identity: the instance uid must be free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub instance_uid: String,
    pub facts: DesktopFacts,
    /// SHA-256 (hex) of the credential issued to it.
    pub credential_sha256: String,
    /// Set when the connection presented a desktop-bound token.
    pub claim: Option<Claim>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub desktop: Desktop,
    /// True when an imported desktop was claimed rather than a new one created.
    pub matched_import: bool,
}

/// A published agent package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageMeta {
    pub id: String,
    pub name: String,
    pub version: String,
    /// e.g. `linux-x86_64`.
    pub platform: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the archive.
    pub sha256: String,
    /// Hex ed25519 signature of the 32-byte SHA-256 digest.
    pub signature: String,
    pub created_at: Millis,
    /// When the version was withdrawn: it is no longer offered for installs or upgrades,
    /// but still served, so that a desktop can roll back to it.
    pub withdrawn_at: Option<Millis>,
}

/// One report about a sub-job, applied with others in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubJobReport {
    Progress {
        sub_job: SubJobId,
        stage: Stage,
        process: i32,
        execute_by: Millis,
    },
    Finish {
        sub_job: SubJobId,
        outcome: Outcome,
    },
}

/// The latest metrics of a desktop's monitoring agent, as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsRecord {
    pub desktop_id: DesktopId,
    pub project_id: ProjectId,
    pub json: String,
    pub received_at: Millis,
}
