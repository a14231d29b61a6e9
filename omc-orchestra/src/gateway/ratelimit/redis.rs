//! Counters in Redis, shared by every gateway replica.
//!
//! Key layout (one key per consumer key, window and window index, all of one consumer
//! key under one hash tag so the script touches one slot):
//!
//! - `{prefix}:rl:{<key>}:<window>:<index>` — string counter; `PEXPIRE` to the end of its
//!   window plus a second, so every counter disappears on its own.
//!
//! One script increments every window's counter and returns the counts; the caller
//! compares, so concurrent requests on any number of replicas never overshoot.

use super::{window_at, Limit, RateLimitStore, WindowCount};
use crate::{RedisStore, Result, SharedClock};
use async_trait::async_trait;

const HIT: &str = r"
local counts = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then
    redis.call('PEXPIRE', key, ARGV[i])
  end
  counts[i] = n
end
return counts
";

/// Rate-limit counters in Redis.
#[derive(Debug, Clone)]
pub struct RedisRateLimits {
    store: RedisStore,
    clock: SharedClock,
    script: redis::Script,
}

impl RedisRateLimits {
    /// Counters in `store`, windows timed by `clock`.
    pub fn new(store: RedisStore, clock: SharedClock) -> Self {
        Self {
            store,
            clock,
            script: redis::Script::new(HIT),
        }
    }
}

fn tag(key: &str) -> String {
    key.replace(['{', '}'], "_")
}

#[async_trait]
impl RateLimitStore for RedisRateLimits {
    async fn hit(&self, key: &str, limits: &[Limit]) -> Result<Vec<WindowCount>> {
        let now = self.clock.now_ms();
        let tag = tag(key);
        let windows: Vec<(String, i64)> = limits
            .iter()
            .map(|limit| {
                let (index, reset_ms) = window_at(now, limit.window.millis());
                (
                    self.store
                        .key("rl", &tag, &format!("{}:{index}", limit.window.tag())),
                    reset_ms,
                )
            })
            .collect();
        let counts: Vec<u64> = self
            .store
            .retry(|mut conn| {
                let mut invocation = self.script.prepare_invoke();
                for (key, reset_ms) in &windows {
                    invocation.key(key).arg(reset_ms + 1_000);
                }
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(limits
            .iter()
            .zip(windows)
            .zip(counts)
            .map(|((limit, (_, reset_ms)), count)| WindowCount {
                limit: *limit,
                count,
                reset_ms,
            })
            .collect())
    }
}
