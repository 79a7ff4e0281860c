//! A worker's slice of the relay port range.

use std::ops::RangeInclusive;

use rand::Rng;

/// Which ports of this worker's slice are taken (by an allocation, a reservation, or
/// an allocation still waiting for its socket). One bit per port, so even the whole
/// 16-bit range costs 8 KiB.
#[derive(Debug)]
pub struct PortPool {
    first: u16,
    used: Vec<bool>,
    in_use: usize,
}

impl PortPool {
    pub fn new(range: RangeInclusive<u16>) -> PortPool {
        let (first, last) = (*range.start(), *range.end());
        let len = if last >= first {
            usize::from(last - first) + 1
        } else {
            0
        };
        PortPool {
            first,
            used: vec![false; len],
            in_use: 0,
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        port >= self.first && usize::from(port - self.first) < self.used.len()
    }

    fn slot(&mut self, port: u16) -> Option<&mut bool> {
        let first = self.first;
        port.checked_sub(first)
            .and_then(move |i| self.used.get_mut(usize::from(i)))
    }

    pub fn is_free(&self, port: u16) -> bool {
        self.contains(port) && !self.used[usize::from(port - self.first)]
    }

    /// Take a random free port (random so relayed addresses are hard to guess);
    /// with `even_pair`, an even port whose successor is free too, both taken
    /// (RFC 8656 §7.2 EVEN-PORT with the R bit).
    pub fn take_random(&mut self, rng: &mut impl Rng, even: bool, pair: bool) -> Option<u16> {
        let len = self.used.len();
        if len == 0 {
            return None;
        }
        let start = rng.gen_range(0..len);
        for i in 0..len {
            let port = self.first as usize + (start + i) % len;
            let port = port as u16;
            if (even || pair) && !port.is_multiple_of(2) {
                continue;
            }
            if !self.is_free(port) {
                continue;
            }
            if pair {
                let Some(next) = port.checked_add(1) else {
                    continue;
                };
                if !self.is_free(next) {
                    continue;
                }
                self.take(next);
            }
            self.take(port);
            return Some(port);
        }
        None
    }

    /// Mark a specific port taken; false if it is outside the slice or already taken.
    pub fn take(&mut self, port: u16) -> bool {
        match self.slot(port) {
            Some(used) if !*used => {
                *used = true;
                self.in_use += 1;
                true
            }
            _ => false,
        }
    }

    pub fn release(&mut self, port: u16) {
        if let Some(used) = self.slot(port) {
            if *used {
                *used = false;
                self.in_use -= 1;
            }
        }
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn exhausts_then_frees() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut pool = PortPool::new(50000..=50003);
        let mut got: Vec<u16> = (0..4)
            .map(|_| pool.take_random(&mut rng, false, false).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, vec![50000, 50001, 50002, 50003]);
        assert_eq!(pool.take_random(&mut rng, false, false), None);
        pool.release(50002);
        assert_eq!(pool.take_random(&mut rng, false, false), Some(50002));
    }

    #[test]
    fn even_pairs() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut pool = PortPool::new(50001..=50004);
        let p = pool.take_random(&mut rng, true, true).unwrap();
        assert_eq!(p, 50002);
        assert!(!pool.is_free(50003));
        assert_eq!(pool.take_random(&mut rng, true, true), None);
        assert_eq!(pool.take_random(&mut rng, true, false), Some(50004));
    }
}
