//! Control side: published changes waiting for every worker's acknowledgement, and what
//! happens once they have it — the answer to the caller, the state file, the rollback watch
//! of a switch, the systemd notification of a reload.

use std::time::{Duration, Instant};

use super::messages::Answer;
use super::reload::Trigger;
use super::routes::SwitchRecord;
use super::{Control, ControlError, Reply, notify};
use crate::api::{ChangeDoc, ReloadDoc};

/// How long workers get to acknowledge a generation before the caller hears of it.
pub(super) const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// A published generation whose completion someone waits for.
pub(super) struct PendingCommit {
    pub generation: u64,
    pub since: Instant,
    pub then: Then,
}

/// What to do once every worker has the generation.
pub(super) enum Then {
    Switch {
        record: SwitchRecord,
        reply: Option<Reply>,
    },
    Change {
        doc: ChangeDoc,
        reply: Option<Reply>,
    },
    Reload {
        doc: ReloadDoc,
        reply: Option<Reply>,
        trigger: Trigger,
    },
}

impl Control {
    /// Waits for every worker to acknowledge `generation`, then does `then`.
    pub(super) fn when_applied(&mut self, generation: u64, then: Then) {
        self.commits.push(PendingCommit {
            generation,
            since: Instant::now(),
            then,
        });
        self.settle();
    }

    /// Completes every change that all workers have acknowledged (or that timed out).
    pub(super) fn settle(&mut self) {
        let acked = self.applied.iter().copied().min().unwrap_or(0);
        let now = Instant::now();
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.commits)
            .into_iter()
            .partition(|c| c.generation <= acked || now - c.since > ACK_TIMEOUT);
        self.commits = waiting;
        for c in done {
            let complete = c.generation <= acked;
            if !complete {
                tracing::error!(
                    generation = c.generation,
                    "not every worker acknowledged the generation in time"
                );
            }
            self.complete(c, complete);
        }
    }

    fn complete(&mut self, c: PendingCommit, acknowledged: bool) {
        let late = ControlError::NotAcknowledged {
            generation: c.generation,
            seconds: ACK_TIMEOUT.as_secs(),
        };
        match c.then {
            Then::Switch { record, reply } => self.finish_switch(record, reply, acknowledged),
            Then::Change { doc, reply } => {
                self.persist();
                let answer = if acknowledged {
                    Ok(Answer::Change(doc))
                } else {
                    Err(late)
                };
                if let Some(reply) = reply {
                    let _ = reply.send(answer);
                }
            }
            Then::Reload {
                doc,
                reply,
                trigger,
            } => {
                self.persist();
                notify::ready();
                tracing::info!(
                    file = %doc.file,
                    trigger = trigger.as_str(),
                    generation = doc.generation.unwrap_or(self.generation),
                    "reload applied by every worker"
                );
                let answer = if acknowledged {
                    Ok(Answer::Reload(doc))
                } else {
                    Err(late)
                };
                if let Some(reply) = reply {
                    let _ = reply.send(answer);
                }
            }
        }
    }
}
