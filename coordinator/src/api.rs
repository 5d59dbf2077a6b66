//! The gRPC services, kept thin: `agent` serves each agent's stream (with `checks` on what a
//! batch may hold and `pace` on how fast it is read), `operator` the admin and query API (with
//! `list_status` answering `ListStatus` a slice at a time). Both
//! translate between the wire and the hub; hub errors become `tonic::Status` here, in one place.
//! Who may call what is declared once, in `auth::METHODS`.

mod agent;
mod checks;
mod list_status;
mod operator;
mod pace;

use tonic::Status;

pub use agent::{AgentEndpoint, history_entries, screen};
pub use checks::{check_batch, check_result};
pub use list_status::AdminServer;
pub use operator::{AdminEndpoint, MAX_URLS_PER_REQUEST};
pub use pace::{DEFAULT_AGENT_BYTES, DEFAULT_AGENT_RATE};

use crate::hub::HubError;

impl From<HubError> for Status {
    fn from(e: HubError) -> Status {
        match e {
            HubError::Invalid(spec) => Status::invalid_argument(spec.to_string()),
            HubError::NoTarget(url) => Status::not_found(format!("no target {url}")),
            HubError::Refused(reason) => Status::invalid_argument(reason),
            HubError::Forbidden(reason) => Status::permission_denied(reason),
            HubError::Full(reason) => Status::resource_exhausted(reason),
            HubError::Conflict(reason) => Status::failed_precondition(reason),
            HubError::Closed => Status::unavailable("the coordinator is shutting down"),
            HubError::Store(e) => {
                tracing::error!(error = %e, "store failure");
                Status::internal("storage failure; see the coordinator's log")
            }
        }
    }
}
