//! Which job types nothing runs: types with waiting jobs that no worker takes, so a queue
//! that only grows says so instead of waiting in silence.

use super::{JobAdmin, JobFilter, JobState};
use crate::Result;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Most waiting jobs [`waiting_by_type`] reads: enough to see every type that waits in a
/// healthy queue, bounded so a flooded queue does not make stats slow.
pub const MOST_COUNTED: usize = 10_000;

/// A job type with jobs waiting and no worker seen for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UnattendedType {
    /// The job type.
    #[serde(rename = "type")]
    pub job_type: String,
    /// How many of its jobs wait (among the first [`MOST_COUNTED`] waiting jobs).
    pub waiting: u64,
}

/// The job types some worker takes, gathered from whatever a server knows of its workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attendance {
    any: bool,
    types: BTreeSet<String>,
}

impl Attendance {
    /// Note a worker taking `types`; one that names none takes every type.
    pub fn worker<I, S>(&mut self, types: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let named: Vec<String> = types.into_iter().map(Into::into).collect();
        self.any |= named.is_empty();
        self.types.extend(named);
    }

    /// Note one type as attended (e.g. it has jobs in flight, so someone runs it).
    pub fn job_type(&mut self, job_type: impl Into<String>) {
        self.types.insert(job_type.into());
    }

    /// The types in `waiting` (counts per type) that no worker takes, busiest first.
    pub fn unattended(&self, waiting: BTreeMap<String, u64>) -> Vec<UnattendedType> {
        if self.any {
            return Vec::new();
        }
        let mut found: Vec<UnattendedType> = waiting
            .into_iter()
            .filter(|(job_type, n)| *n > 0 && !self.types.contains(job_type))
            .map(|(job_type, waiting)| UnattendedType { job_type, waiting })
            .collect();
        found.sort_by_key(|u| std::cmp::Reverse(u.waiting));
        found
    }
}

/// Waiting jobs per type, counted over the first [`MOST_COUNTED`] in the order they run.
pub async fn waiting_by_type(queue: &dyn JobAdmin) -> Result<BTreeMap<String, u64>> {
    count_by_type(queue, JobState::Waiting).await
}

/// Jobs in `state` per type, counted over the first [`MOST_COUNTED`] of them: a bounded
/// read however deep the queue is.
pub async fn count_by_type(queue: &dyn JobAdmin, state: JobState) -> Result<BTreeMap<String, u64>> {
    const PAGE: usize = 1_000;
    let mut counts = BTreeMap::new();
    let mut offset = 0;
    while offset < MOST_COUNTED {
        let filter = JobFilter {
            state: Some(state),
            offset,
            limit: Some(PAGE),
            ..JobFilter::default()
        };
        let page = queue.list(&filter).await?;
        for job in &page {
            *counts.entry(job.job_type.clone()).or_default() += 1;
        }
        if page.len() < PAGE {
            break;
        }
        offset += PAGE;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;
    use crate::jobs::{JobQueue, MemoryJobQueue, NewJob};
    use serde_json::json;

    #[tokio::test]
    async fn types_nobody_takes_are_unattended_busiest_first() {
        let queue = MemoryJobQueue::new(clock::system());
        for job_type in ["report", "backup", "backup", "price-calculation"] {
            queue
                .enqueue(NewJob::new(job_type, json!({})))
                .await
                .unwrap();
        }
        let waiting = waiting_by_type(&queue).await.unwrap();
        assert_eq!(waiting.get("backup"), Some(&2));

        let mut attendance = Attendance::default();
        attendance.worker(["price-calculation"]);
        let names: Vec<(String, u64)> = attendance
            .unattended(waiting.clone())
            .into_iter()
            .map(|u| (u.job_type, u.waiting))
            .collect();
        assert_eq!(names, [("backup".into(), 2), ("report".into(), 1)]);

        attendance.job_type("backup");
        assert_eq!(attendance.unattended(waiting.clone()).len(), 1);
        attendance.worker(Vec::<String>::new());
        assert!(attendance.unattended(waiting).is_empty(), "any-type worker");
    }
}
