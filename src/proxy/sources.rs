//! Hot side: a worker's count of open sessions per route and client source, for
//! `max_connections_per_source`.
//!
//! A source is what [`Source`] keys on: an IPv4 address, or the /64 of an IPv6 address (one
//! host usually holds a whole /64, so counting single IPv6 addresses would limit nothing).
//! Each worker counts only the connections it accepted and allows its equal share of the
//! route's limit (README, "Client limits"). One hash insert or update per session, an entry
//! removed when its count returns to 0; the table's memory is given back once it is empty.

use std::cell::RefCell;
use std::collections::HashMap;

use super::balance::Source;

/// Open sessions by (route id, source), on one worker.
#[derive(Debug, Default)]
pub struct SourceCounts {
    map: RefCell<HashMap<(u64, Source), u32>>,
}

impl SourceCounts {
    /// Takes a place for one more session of `source` on route `route` when it holds fewer
    /// than `max`; false (nothing taken) when it holds `max` already.
    pub fn take(&self, route: u64, source: Source, max: u32) -> bool {
        let mut map = self.map.borrow_mut();
        let n = map.entry((route, source)).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    /// Gives back the place a session of `source` on `route` took.
    pub fn release(&self, route: u64, source: Source) {
        let mut map = self.map.borrow_mut();
        if let Some(n) = map.get_mut(&(route, source)) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&(route, source));
            }
        }
    }

    /// Sources with at least one session (on any route).
    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frees the table's memory once no session is left (after a flood from thousands of
    /// sources it would otherwise stay at its high-water mark; called about once a second).
    pub fn shrink_when_empty(&self) {
        let mut map = self.map.borrow_mut();
        if map.is_empty() && map.capacity() > 0 {
            *map = HashMap::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(s: &str) -> Source {
        Source::of(s.parse().unwrap())
    }

    #[test]
    fn counts_per_route_and_source_up_to_the_share() {
        let c = SourceCounts::default();
        let (web, api) = (1, 2);
        assert!(c.take(web, src("10.0.0.1"), 2));
        assert!(c.take(web, src("10.0.0.1"), 2));
        assert!(!c.take(web, src("10.0.0.1"), 2), "the third is refused");
        assert!(
            c.take(web, src("10.0.0.2"), 2),
            "another address has its own"
        );
        assert!(c.take(api, src("10.0.0.1"), 2), "another route has its own");
        c.release(web, src("10.0.0.1"));
        assert!(
            c.take(web, src("10.0.0.1"), 2),
            "a place given back is taken again"
        );
        for _ in 0..2 {
            c.release(web, src("10.0.0.1"));
        }
        c.release(web, src("10.0.0.2"));
        c.release(api, src("10.0.0.1"));
        // Released more than taken: nothing underflows.
        c.release(api, src("10.0.0.1"));
        assert!(c.is_empty());
        c.shrink_when_empty();
        assert_eq!(c.map.borrow().capacity(), 0);
    }

    /// IPv6 sources count by /64: the addresses of one network share one count, the next
    /// network has its own; an IPv4-mapped address counts as its IPv4 address.
    #[test]
    fn ipv6_sources_share_their_slash_64() {
        let c = SourceCounts::default();
        assert!(c.take(1, src("2001:db8:1:2::1"), 2));
        assert!(c.take(1, src("2001:db8:1:2:ffff:ffff:ffff:ffff"), 2));
        assert!(!c.take(1, src("2001:db8:1:2::99"), 2), "same /64: full");
        assert!(
            c.take(1, src("2001:db8:1:3::1"), 2),
            "the next /64 has its own"
        );
        assert!(c.take(1, src("192.0.2.7"), 1));
        assert!(
            !c.take(1, src("::ffff:192.0.2.7"), 1),
            "IPv4-mapped is the IPv4 source"
        );
        assert_eq!(c.len(), 3);
    }
}
