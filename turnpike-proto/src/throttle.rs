//! Throttling failed sign-ins per source, in a table of fixed size shared by all cores.
//!
//! A source (an IPv4 address or an IPv6 /64) that fails
//! authentication `failures` times within a minute — requests that carried
//! MESSAGE-INTEGRITY and were refused with 401, never the credential-less challenge that
//! precedes every sign-in — is throttled for `cooldown`: its signed requests are dropped
//! unanswered, before any password is checked, so a guesser learns nothing and costs
//! us no HMAC.
//!
//! A legitimate client behind the same NAT still signs in. Each source remembers the
//! last few usernames that failed from it ([`BAD_USERNAMES`]); while throttled, a
//! request for one of them is dropped, and a request for any other username is checked
//! as usual — accepted if right, and dropped (its username remembered) if wrong. So a
//! guesser is held to `failures` guesses per cool-down plus one per free username slot,
//! a guesser spraying many usernames locks its source completely, and a neighbour with
//! its own username and the right password is never slowed down. What is unanswered
//! cannot be told from loss, so the guesser cannot even see when the cool-down ends.
//!
//! The table is `SETS` sets of `WAYS` entries, each set behind its own mutex, taken
//! only for requests that carry credentials. A source's set is chosen by a keyed hash
//! (HMAC-SHA256 with a key chosen at start-up), so nobody can aim many sources at one
//! set; memory never grows, whatever the number of sources. A full set replaces the
//! entry seen longest ago, sparing throttled ones while it can. Spoofed sources cannot
//! fill it at all: a failure counts only with a valid nonce, which is bound to the
//! source's address and only ever sent there.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Sets in the table (a power of two).
const SETS: usize = 1024;
/// Entries per set: 4096 sources are followed at once.
const WAYS: usize = 4;
/// Usernames remembered per source (see the module docs).
pub const BAD_USERNAMES: usize = 4;
/// Failures are counted over windows of this length.
const WINDOW_SECS: u32 = 60;

/// What to do with a signed request from a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthGate {
    /// Not throttled: check the credentials as usual.
    Open,
    /// Throttled, but this username has not failed from here: check it; drop it
    /// unanswered if it is wrong.
    Probe,
    /// Throttled: drop unanswered, without checking the credentials.
    Drop,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// Which source this is (the hash's upper bits; 0 = empty).
    tag: u64,
    /// Seconds since the table's origin: start of the counting window, last activity,
    /// end of the cool-down (0: not throttled).
    window_start: u32,
    last_seen: u32,
    until: u32,
    failures: u32,
    /// Hashes of usernames that failed from this source (0 = free slot).
    usernames: [u32; BAD_USERNAMES],
}

impl Entry {
    fn throttled(&self, now: u32) -> bool {
        self.until > now
    }
    fn knows(&self, user: u32) -> bool {
        self.usernames.contains(&user)
    }
}

/// The shared table; see the module docs.
pub struct AuthThrottle {
    /// Failures per minute that throttle a source; 0 turns throttling off.
    failures: u32,
    cooldown_secs: u32,
    key: [u8; 32],
    /// Times are kept as seconds since this instant.
    origin: Instant,
    sets: Box<[Mutex<[Entry; WAYS]>]>,
}

impl std::fmt::Debug for AuthThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthThrottle")
            .field("failures", &self.failures)
            .field("cooldown_secs", &self.cooldown_secs)
            .finish_non_exhaustive()
    }
}

impl AuthThrottle {
    /// A table that throttles a source after `failures` failed sign-ins within a minute
    /// (0: never) for `cooldown`. `key` keys the hash that places sources (random in
    /// production); `origin` is any instant not after the first `now` it will see.
    pub fn new(failures: u32, cooldown: Duration, key: [u8; 32], origin: Instant) -> AuthThrottle {
        let sets = (0..if failures == 0 { 0 } else { SETS })
            .map(|_| Mutex::new([Entry::default(); WAYS]))
            .collect();
        AuthThrottle {
            failures,
            cooldown_secs: u32::try_from(cooldown.as_secs()).unwrap_or(u32::MAX),
            key,
            origin,
            sets,
        }
    }

    /// A table that never throttles.
    pub fn off() -> AuthThrottle {
        AuthThrottle::new(0, Duration::ZERO, [0; 32], Instant::now())
    }

    /// Whether throttling is on.
    pub fn is_on(&self) -> bool {
        self.failures != 0
    }

    /// What to do with a request from `source` that carries credentials for `username`.
    pub fn gate(&self, source: IpAddr, username: &[u8], now: Instant) -> AuthGate {
        if !self.is_on() {
            return AuthGate::Open;
        }
        let (set, tag, user) = self.place(source, username);
        let now = self.secs(now);
        let entries = self.lock(set);
        let Some(entry) = entries.iter().find(|e| e.tag == tag) else {
            return AuthGate::Open;
        };
        if !entry.throttled(now) {
            AuthGate::Open
        } else if entry.knows(user) || !entry.usernames.contains(&0) {
            AuthGate::Drop
        } else {
            AuthGate::Probe
        }
    }

    /// Count a failed sign-in of `username` from `source`. True when the source was
    /// already throttled, so the failure goes unanswered; the failure that reaches the
    /// limit is answered (false), as it would have been had it come first. Deciding
    /// here, under the set's lock, keeps the count exact when several workers check
    /// guesses from one source at once.
    pub fn failed(&self, source: IpAddr, username: &[u8], now: Instant) -> bool {
        if !self.is_on() {
            return false;
        }
        let (set, tag, user) = self.place(source, username);
        let now = self.secs(now);
        let mut entries = self.lock(set);
        let entry = match entries.iter().position(|e| e.tag == tag) {
            Some(i) => &mut entries[i],
            None => {
                let victim = entries
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, e)| (e.tag != 0, e.throttled(now), e.last_seen))
                    .map_or(0, |(i, _)| i);
                entries[victim] = Entry {
                    tag,
                    window_start: now,
                    ..Entry::default()
                };
                &mut entries[victim]
            }
        };
        entry.last_seen = now;
        if entry.throttled(now) {
            // Remember the username while a slot is free; never evict one, or a
            // guesser could rotate usernames to reopen slots.
            if !entry.knows(user) {
                if let Some(slot) = entry.usernames.iter_mut().find(|u| **u == 0) {
                    *slot = user;
                }
            }
            return true;
        }
        if now.saturating_sub(entry.window_start) >= WINDOW_SECS || entry.until != 0 {
            // A new window (or the first after a cool-down): start counting afresh.
            *entry = Entry {
                tag,
                window_start: now,
                last_seen: now,
                ..Entry::default()
            };
        }
        entry.failures += 1;
        if !entry.knows(user) {
            // Outside a cool-down the slots are a ring of the latest usernames.
            entry.usernames.rotate_right(1);
            entry.usernames[0] = user;
        }
        if entry.failures >= self.failures {
            entry.until = now.saturating_add(self.cooldown_secs.max(1));
        }
        false
    }

    /// The set, tag and username hash for a request; one keyed hash over both.
    fn place(&self, source: IpAddr, username: &[u8]) -> (usize, u64, u32) {
        // A 32-byte key is always accepted.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        source_key(source, |bytes| mac.update(bytes));
        let source = mac.clone().finalize().into_bytes();
        mac.update(&[0xFF]);
        mac.update(username);
        let user = mac.finalize().into_bytes();
        let word = |b: &[u8], at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let set = (word(&source, 0) as usize) & (SETS - 1);
        // Never 0, which marks an empty entry or slot.
        let tag = word(&source, 8) | 1;
        let user = (word(&user, 0) as u32) | 1;
        (set, tag, user)
    }

    fn secs(&self, now: Instant) -> u32 {
        // Starts at 1, so that 0 can mean "never" in an entry.
        let secs = now.saturating_duration_since(self.origin).as_secs() + 1;
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    fn lock(&self, set: usize) -> std::sync::MutexGuard<'_, [Entry; WAYS]> {
        // `set` < SETS = sets.len() (the table is only used when on). A poisoned lock
        // only means a panic elsewhere; the entries are plain values and stay usable.
        self.sets[set].lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What identifies a source: an IPv4 address (IPv4-mapped IPv6 counts as IPv4) or the
/// /64 of an IPv6 address (one subscriber's prefix).
fn source_key(source: IpAddr, mut feed: impl FnMut(&[u8])) {
    match source {
        IpAddr::V4(ip) => feed(&ip.octets()),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => feed(&v4.octets()),
            None => feed(&ip.octets()[..8]),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ip: &str) -> IpAddr {
        ip.parse().unwrap()
    }

    #[test]
    fn throttles_after_the_limit_and_lets_other_usernames_probe() {
        let t0 = Instant::now();
        let t = AuthThrottle::new(3, Duration::from_secs(60), [7; 32], t0);
        let attacker = client("198.51.100.7");
        for _ in 0..3 {
            assert_eq!(t.gate(attacker, b"alice", t0), AuthGate::Open);
            assert!(!t.failed(attacker, b"alice", t0));
        }
        // A guess that raced past the gate on another worker still goes unanswered.
        assert!(t.failed(attacker, b"alice", t0));
        // Another client on the same address (a NAT neighbour) is the same source.
        let neighbour = client("198.51.100.7");
        assert_eq!(t.gate(neighbour, b"alice", t0), AuthGate::Drop);
        assert_eq!(t.gate(neighbour, b"bob", t0), AuthGate::Probe);
        // Another source is untouched.
        assert_eq!(t.gate(client("198.51.100.8"), b"alice", t0), AuthGate::Open);
        // The cool-down ends.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(t.gate(attacker, b"alice", later), AuthGate::Open);
    }

    #[test]
    fn spraying_usernames_fills_the_slots_and_locks_the_source() {
        let t0 = Instant::now();
        let t = AuthThrottle::new(2, Duration::from_secs(30), [1; 32], t0);
        let c = client("203.0.113.9");
        t.failed(c, b"u0", t0);
        t.failed(c, b"u1", t0);
        // Two slots hold u0 and u1; two free slots let two more usernames probe.
        for name in [&b"u2"[..], b"u3"] {
            assert_eq!(t.gate(c, name, t0), AuthGate::Probe);
            assert!(t.failed(c, name, t0));
        }
        assert_eq!(t.gate(c, b"u4", t0), AuthGate::Drop);
        assert_eq!(t.gate(c, b"anyone", t0), AuthGate::Drop);
    }

    #[test]
    fn window_resets_and_ipv6_is_per_prefix() {
        let t0 = Instant::now();
        let t = AuthThrottle::new(2, Duration::from_secs(10), [2; 32], t0);
        let a = client("2001:db8:1:2::1");
        let same_prefix = client("2001:db8:1:2::ffff");
        assert!(!t.failed(a, b"x", t0));
        // The next failure falls in a new window: the count starts again.
        assert!(!t.failed(same_prefix, b"x", t0 + Duration::from_secs(61)));
        assert!(!t.failed(same_prefix, b"x", t0 + Duration::from_secs(62)));
        assert_eq!(
            t.gate(a, b"x", t0 + Duration::from_secs(62)),
            AuthGate::Drop
        );
        let other_prefix = client("2001:db8:1:3::1");
        assert_eq!(
            t.gate(other_prefix, b"x", t0 + Duration::from_secs(62)),
            AuthGate::Open
        );
    }

    #[test]
    fn many_sources_never_grow_the_table_and_off_is_off() {
        let t0 = Instant::now();
        let t = AuthThrottle::new(1, Duration::from_secs(60), [3; 32], t0);
        for i in 0..20_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0A00_0000 + i);
            t.failed(client(&ip.to_string()), b"x", t0);
        }
        assert_eq!(t.sets.len(), SETS);
        let off = AuthThrottle::off();
        assert!(!off.failed(client("10.0.0.1"), b"x", t0));
        assert_eq!(off.gate(client("10.0.0.1"), b"x", t0), AuthGate::Open);
    }
}
