//! A retry budget: retries may add at most a fixed share of load, so they never amplify
//! an outage.

use parking_lot::Mutex;

/// Each request deposits `percent`/100 of a token, each retry spends one whole token.
/// Over any stretch, retries stay within `percent` % of requests (plus the small
/// reserve of `max_balance` tokens a quiet period can save up).
#[derive(Debug)]
pub struct RetryBudget {
    deposit: f64,
    max_balance: f64,
    balance: Mutex<f64>,
}

impl RetryBudget {
    /// A budget of `percent` % extra requests, saving up at most `max_balance` retries.
    pub fn new(percent: u32, max_balance: u32) -> Self {
        Self {
            deposit: f64::from(percent) / 100.0,
            max_balance: f64::from(max_balance),
            balance: Mutex::new(0.0),
        }
    }

    /// A request went out (not a retry): earn a share of a retry.
    pub fn deposit(&self) {
        let mut balance = self.balance.lock();
        *balance = (*balance + self.deposit).min(self.max_balance);
    }

    /// Spend one retry if the budget has it.
    pub fn try_withdraw(&self) -> bool {
        let mut balance = self.balance.lock();
        if *balance >= 1.0 - 1e-9 {
            *balance -= 1.0;
            true
        } else {
            false
        }
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
