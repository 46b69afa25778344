//! As4Submitter: stores user messages put on `edinode.as4.submit` (JSON, as for
//! `POST /api/as4/submit`) into their MPC's queue for the PullSender. A resubmission of a stored
//! message id is acknowledged again; an invalid submission is dead-lettered with the reason;
//! storage trouble is retried by the runner.

use crate::pull_sender::{PullSender, Submission, SubmitError, SUBMIT_QUEUE};
use crate::{Actor, Binding, ActorError, NodeContext, Out};
use std::sync::Arc;

pub struct As4Submitter {
    pub sender: Arc<PullSender>,
}

/// A submission as read from the queue: parsed, or why it could not be.
#[derive(Debug, serde::Deserialize)]
pub enum Queued {
    Submission(Box<Submission>),
    Unreadable(String),
}

impl Actor for As4Submitter {
    const BINDING: Binding = Binding::new("as4_submitter", SUBMIT_QUEUE);
    type Input = Queued;

    fn decode(body: &[u8], _headers: &[(String, String)]) -> Result<Queued, String> {
        Ok(match Submission::from_json(body) {
            Ok(s) => Queued::Submission(Box::new(s)),
            Err(e) => Queued::Unreadable(e),
        })
    }

    async fn handle(&self, cx: &NodeContext, input: Queued) -> Result<Vec<Out>, ActorError> {
        let s = match input {
            Queued::Submission(s) => *s,
            Queued::Unreadable(reason) => return Ok(vec![Out::Dead { reason }]),
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.as_millis() as i64).unwrap_or(0);
        match self.sender.submit(cx, s, now).await {
            Ok(_) => Ok(vec![]),
            Err(SubmitError::Duplicate(id)) => {
                tracing::info!(message = "Submission already queued; acknowledged again.", message_id = %id);
                Ok(vec![])
            }
            Err(SubmitError::Unavailable(error)) => Err(ActorError::Transient(error)),
            Err(SubmitError::Invalid(reason)) => {
                tracing::warn!(message = "AS4 submission refused.", %reason);
                Ok(vec![Out::Dead { reason }])
            }
        }
    }
}
