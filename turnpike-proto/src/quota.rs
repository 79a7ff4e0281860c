//! Allocation quotas, per user and for the whole relay (RFC 8656 §7.2: 486 and 508).
//!
//! One [`Quotas`] serves every worker, inside [`SharedPool`](crate::shared::SharedPool):
//! a user's allocations may land on any worker (the kernel spreads 5-tuples). It is
//! touched only when an allocation is created or deleted, never per packet, so a mutex
//! is cheap here.

use std::collections::HashMap;
use std::sync::Mutex;

use super::reject::Reject;

/// Allocation counts per user and in total, against their limits.
#[derive(Debug, Default)]
pub struct Quotas {
    state: Mutex<QuotaState>,
}

#[derive(Debug, Default)]
struct QuotaState {
    /// Allocations one user may hold at once; 0 = unlimited. Under the lock with the
    /// counts, so a reload ([`Quotas::set_limits`]) and an allocation never see half
    /// of each other.
    per_user: u32,
    /// Allocations the whole relay may hold at once; 0 = unlimited.
    limit: u32,
    total: u32,
    by_user: HashMap<String, u32>,
}

impl Quotas {
    /// Limits of `per_user` allocations per user and `total` in all; 0 = unlimited.
    pub fn new(per_user: u32, total: u32) -> Quotas {
        Quotas {
            state: Mutex::new(QuotaState {
                per_user,
                limit: total,
                ..QuotaState::default()
            }),
        }
    }

    /// New limits for the allocations made from now on; those held already are kept
    /// even when they exceed the new limits.
    pub fn set_limits(&self, per_user: u32, total: u32) {
        let mut state = self.lock();
        state.per_user = per_user;
        state.limit = total;
    }

    /// Reserve one allocation for `user`: 486 when the user is at quota, 508 when the relay is.
    pub fn acquire(&self, user: &str) -> Result<(), Reject> {
        let mut state = self.lock();
        if state.limit != 0 && state.total >= state.limit {
            return Err(Reject::InsufficientCapacity);
        }
        let held = state.by_user.get(user).copied().unwrap_or(0);
        if state.per_user != 0 && held >= state.per_user {
            return Err(Reject::AllocationQuotaReached);
        }
        state.total += 1;
        state.by_user.insert(user.to_owned(), held + 1);
        Ok(())
    }

    /// Count one allocation of `user` less.
    pub fn release(&self, user: &str) {
        let mut state = self.lock();
        state.total = state.total.saturating_sub(1);
        if let Some(held) = state.by_user.get_mut(user) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                state.by_user.remove(user);
            }
        }
    }

    /// Allocations `user` holds now.
    pub fn held_by(&self, user: &str) -> u32 {
        self.lock().by_user.get(user).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QuotaState> {
        // A worker that panicked while holding the lock left consistent counters (each
        // critical section is a few integer updates), so poisoning is safe to ignore.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_and_total_limits() {
        let q = Quotas::new(2, 3);
        assert_eq!(q.acquire("a"), Ok(()));
        assert_eq!(q.acquire("a"), Ok(()));
        assert_eq!(q.acquire("a"), Err(Reject::AllocationQuotaReached));
        assert_eq!(q.acquire("b"), Ok(()));
        assert_eq!(q.acquire("c"), Err(Reject::InsufficientCapacity));
        q.release("a");
        assert_eq!(q.held_by("a"), 1);
        assert_eq!(q.acquire("c"), Ok(()));
    }

    #[test]
    fn zero_means_unlimited() {
        let q = Quotas::new(0, 0);
        for _ in 0..1000 {
            q.acquire("a").unwrap();
        }
        assert_eq!(q.held_by("a"), 1000);
    }

    #[test]
    fn new_limits_apply_to_the_next_allocation_and_keep_what_is_held() {
        let q = Quotas::new(2, 0);
        assert_eq!(q.acquire("a"), Ok(()));
        assert_eq!(q.acquire("a"), Ok(()));
        q.set_limits(1, 0);
        assert_eq!(q.acquire("a"), Err(Reject::AllocationQuotaReached));
        assert_eq!(q.held_by("a"), 2);
        q.set_limits(3, 2);
        assert_eq!(q.acquire("b"), Err(Reject::InsufficientCapacity));
        q.set_limits(0, 0);
        assert_eq!(q.acquire("a"), Ok(()));
    }
}
