//! A retry budget: retries may add at most a fixed share of load, so they never amplify
//! an outage.

use std::sync::atomic::{AtomicU64, Ordering};

/// Budget amounts are kept in thousandths of a retry, so that they fit an atomic.
const UNIT: u64 = 1000;

/// Each request deposits `percent`/100 of a token, each retry spends one whole token.
/// Over any stretch, retries stay within `percent` % of requests (plus the small
/// reserve of `max_balance` tokens a quiet period can save up).
#[derive(Debug)]
pub struct RetryBudget {
    deposit: u64,
    max_balance: u64,
    balance: AtomicU64,
}

impl RetryBudget {
    /// A budget of `percent` % extra requests, saving up at most `max_balance` retries.
    pub fn new(percent: u32, max_balance: u32) -> Self {
        Self {
            deposit: u64::from(percent) * UNIT / 100,
            max_balance: u64::from(max_balance) * UNIT,
            balance: AtomicU64::new(0),
        }
    }

    /// A request went out (not a retry): earn a share of a retry. A full budget is only
    /// read, so that requests on many threads do not fight over it.
    pub fn deposit(&self) {
        let mut current = self.balance.load(Ordering::Relaxed);
        while current < self.max_balance {
            let next = (current + self.deposit).min(self.max_balance);
            match self.balance.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// Spend one retry if the budget has it.
    pub fn try_withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                b.checked_sub(UNIT)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_share() {
        let budget = RetryBudget::new(20, 10);
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit();
            if budget.try_withdraw() {
                retries += 1;
            }
        }
        assert_eq!(retries, 200);
        assert!(!budget.try_withdraw());
    }
}
