//! Presence: which sessions on this node watch which users, and the change notices nodes
//! exchange on the bus's presence channel.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// A user went online or offline (published on the presence channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub user: String,
    pub online: bool,
    pub last_seen: Option<u64>,
}

/// Users one session may watch; more are refused (each costs memory and messages).
pub const MAX_WATCHED: usize = 1000;

/// Watch lists of this node's sessions, both ways.
#[derive(Debug, Default)]
pub struct Watchers {
    by_user: HashMap<String, BTreeSet<u64>>,
    by_session: HashMap<u64, BTreeSet<String>>,
}

impl Watchers {
    /// Add `users` to `session`'s list; returns those newly added (up to the cap).
    pub fn watch(&mut self, session: u64, users: &[String]) -> Vec<String> {
        let list = self.by_session.entry(session).or_default();
        let mut added = Vec::new();
        for user in users {
            if list.len() >= MAX_WATCHED {
                break;
            }
            if list.insert(user.clone()) {
                self.by_user
                    .entry(user.clone())
                    .or_default()
                    .insert(session);
                added.push(user.clone());
            }
        }
        added
    }

    /// Sessions watching `user`.
    pub fn watching(&self, user: &str) -> Vec<u64> {
        self.by_user
            .get(user)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn forget_session(&mut self, session: u64) {
        for user in self.by_session.remove(&session).unwrap_or_default() {
            if let Some(set) = self.by_user.get_mut(&user) {
                set.remove(&session);
                if set.is_empty() {
                    self.by_user.remove(&user);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_and_forget() {
        let mut w = Watchers::default();
        let users = vec!["bob".to_string(), "carol".to_string()];
        assert_eq!(w.watch(1, &users), users);
        assert_eq!(w.watch(1, &users), Vec::<String>::new());
        w.watch(2, &users[..1]);
        assert_eq!(w.watching("bob"), vec![1, 2]);
        w.forget_session(1);
        assert_eq!(w.watching("bob"), vec![2]);
        assert!(w.watching("carol").is_empty());
    }
}
