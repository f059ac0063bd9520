//! Hot side: how a worker picks a backend for a new session (`balance` and the weights).
//!
//! Everything that costs more than a few comparisons is done when the worker builds its
//! route table, never per pick: the weighted round-robin schedule and the Maglev lookup
//! table are precomputed over the route's pickable backends (active, neither down nor
//! drained), and a pick is an index into them. Nothing here allocates, locks or touches
//! another thread's memory.
//!
//! What each strategy sees: the round-robin cursor and the random generator are this
//! worker's own; the session counts that `least_connections` and `p2c` compare are this
//! worker's own, exact and immediate, plus what the other workers held at their last
//! snapshot (merged by the control thread, about a second old: `BackendMetrics::elsewhere`);
//! the Maglev table is the same on every worker (a fixed hash of the backend addresses), so
//! `hash_source` agrees across workers and across restarts. README, "Balancing: strategies
//! and weights".

use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use crate::config::Balance;
use crate::metrics::local::BackendMetrics;

/// What `hash_source` hashes of a client: its IPv4 address, or the /64 of its IPv6 address
/// (an IPv4-mapped IPv6 address counts as IPv4). Computed once at accept; 8 bytes in the
/// session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Source(u64);

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(a) => Source(u64::from(u32::from(a))),
            // The /64: the upper half (a host's addresses within its network share it).
            IpAddr::V6(a) => Source((u128::from(a) >> 64) as u64 | 1 << 63),
        }
    }

    fn hash(self) -> u64 {
        mix(fnv1a(&self.0.to_le_bytes(), FNV_OFFSET))
    }
}

/// How a route's worker-side table picks.
#[derive(Debug)]
pub(super) enum Picker {
    /// The next entry of a smooth weighted schedule.
    RoundRobin {
        schedule: Box<[u32]>,
        next: Cell<usize>,
    },
    /// The fewest sessions per unit of weight; ties go to the next entry of the schedule.
    LeastConnections {
        schedule: Box<[u32]>,
        next: Cell<usize>,
    },
    /// Two draws from the schedule (so in proportion to weight); the lower load per weight.
    P2c {
        schedule: Box<[u32]>,
        rng: Cell<u64>,
    },
    /// The Maglev table entry of the client's hash.
    HashSource { table: Box<[u32]> },
}

impl Picker {
    /// The picker for `backends` (never empty) with their `weights` (1..=256).
    pub(super) fn build(
        balance: Balance,
        backends: &[SocketAddr],
        weights: &[u16],
        seed: u64,
    ) -> Picker {
        match balance {
            Balance::RoundRobin => Picker::RoundRobin {
                schedule: schedule(weights),
                next: Cell::new(0),
            },
            Balance::LeastConnections => Picker::LeastConnections {
                schedule: schedule(weights),
                next: Cell::new(0),
            },
            Balance::P2c => Picker::P2c {
                schedule: schedule(weights),
                rng: Cell::new(seed | 1),
            },
            Balance::HashSource => Picker::HashSource {
                table: maglev(backends, weights, table_size(backends.len())),
            },
        }
    }

    /// The index (into `backends`) of the backend for a new session from `source` (every
    /// backend usable).
    #[cfg(test)]
    pub(super) fn pick(
        &self,
        backends: &[Rc<BackendMetrics>],
        weights: &[u16],
        source: Source,
    ) -> usize {
        self.pick_where(backends, weights, source, |_| true)
    }

    /// The index (into `backends`) of the backend for a new session from `source`, among
    /// those `ok` accepts (not ejected, not at their own `max_connections`): round robin
    /// moves on along its schedule, `least_connections` compares only those, `p2c` keeps the
    /// usable one of its two draws, `hash_source` probes the table a few more times for the
    /// client (so that its clients spread by weight and stay put while it is out), then takes
    /// the next usable one in the list. When `ok` accepts none, the strategy's own choice.
    #[inline]
    pub(super) fn pick_where(
        &self,
        backends: &[Rc<BackendMetrics>],
        weights: &[u16],
        source: Source,
        ok: impl Fn(usize) -> bool,
    ) -> usize {
        let n = backends.len();
        let next_ok = |from: usize| (1..n).map(|k| (from + k) % n).find(|&j| ok(j));
        match self {
            Picker::RoundRobin { schedule, next } => {
                let turn = || {
                    let i = next.get();
                    next.set(if i + 1 >= schedule.len() { 0 } else { i + 1 });
                    at(schedule, i)
                };
                let first = turn();
                if ok(first) {
                    return first;
                }
                (1..schedule.len())
                    .map(|_| turn())
                    .find(|&j| ok(j))
                    .unwrap_or(first)
            }
            Picker::LeastConnections { schedule, next } => {
                let i = next.get();
                next.set(if i + 1 >= schedule.len() { 0 } else { i + 1 });
                // Scan from the schedule's candidate: it wins every tie.
                let start = at(schedule, i).min(n - 1);
                let mut best = None;
                for k in 0..n {
                    let j = if start + k >= n {
                        start + k - n
                    } else {
                        start + k
                    };
                    if !ok(j) {
                        continue;
                    }
                    let l = load(&backends[j]);
                    let w = u64::from(weights[j]);
                    // l / w < best_load / best_w, without division.
                    match best {
                        Some((_, bl, bw)) if l * bw >= bl * w => {}
                        _ => best = Some((j, l, w)),
                    }
                }
                best.map_or(start, |(j, _, _)| j)
            }
            Picker::P2c { schedule, rng } => {
                let r = xorshift(rng);
                let len = schedule.len() as u64;
                let a = at(schedule, ((r & 0xffff_ffff) % len) as usize).min(n - 1);
                let mut b = at(schedule, ((r >> 32) % len) as usize).min(n - 1);
                if b == a && n > 1 {
                    // Two distinct candidates: the other one, drawn again uniformly.
                    b = (a + 1 + (r >> 16) as usize % (n - 1)) % n;
                }
                match (ok(a), ok(b)) {
                    (true, true) => {
                        let (la, wa) = (load(&backends[a]), u64::from(weights[a]));
                        let (lb, wb) = (load(&backends[b]), u64::from(weights[b]));
                        if lb * wa < la * wb { b } else { a }
                    }
                    (true, false) => a,
                    (false, true) => b,
                    (false, false) => next_ok(a).unwrap_or(a),
                }
            }
            Picker::HashSource { table } => {
                let len = table.len() as u64;
                let h = source.hash();
                let first = at(table, (h % len) as usize).min(n - 1);
                if ok(first) {
                    return first;
                }
                (1..=8u64)
                    .map(|k| {
                        at(
                            table,
                            (h.wrapping_add(k.wrapping_mul(PROBE)) % len) as usize,
                        )
                        .min(n - 1)
                    })
                    .find(|&j| ok(j))
                    .or_else(|| next_ok(first))
                    .unwrap_or(first)
            }
        }
    }
}

/// The stride of `hash_source`'s extra probes when the client's backend is out (odd, large:
/// the probes land far apart in the table).
const PROBE: u64 = 0x9e37_79b9_7f4a_7c15;

/// Sessions open or connecting on this backend: this worker's own count, plus what the
/// other workers held at their last snapshot (sent by the control thread about once a
/// second; 0 with one worker).
#[inline]
fn load(b: &BackendMetrics) -> u64 {
    b.active.get() + b.connecting.get() + b.elsewhere.get()
}

#[inline]
fn at(list: &[u32], i: usize) -> usize {
    list.get(i).map_or(0, |&x| x as usize)
}

/// xorshift64: per worker, per route; good enough to break ties, never shared.
#[inline]
fn xorshift(state: &Cell<u64>) -> u64 {
    let mut x = state.get();
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state.set(x);
    x
}

/// A smooth weighted round-robin order: each backend appears `weight / g` times (g: the
/// weights' greatest common divisor), spread evenly — the k-th turn of backend i sits at
/// (k + ½) / wᵢ (Sainte-Laguë), ties to the lower index. All weights 1: 0, 1, …, n-1.
/// Weights 1:3: B A B B.
pub(super) fn schedule(weights: &[u16]) -> Box<[u32]> {
    let g = weights
        .iter()
        .fold(0u64, |g, &w| gcd(g, u64::from(w)))
        .max(1);
    let w: Vec<u64> = weights.iter().map(|&x| u64::from(x.max(1)) / g).collect();
    let total: u64 = w.iter().sum();

    // Min-heap on (2k + 1) / wᵢ.
    #[derive(PartialEq, Eq)]
    struct Turn {
        k: u64,
        w: u64,
        i: usize,
    }
    impl Ord for Turn {
        fn cmp(&self, o: &Self) -> Ordering {
            // Reversed: BinaryHeap is a max-heap.
            ((2 * o.k + 1) * self.w)
                .cmp(&((2 * self.k + 1) * o.w))
                .then(o.i.cmp(&self.i))
        }
    }
    impl PartialOrd for Turn {
        fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
            Some(self.cmp(o))
        }
    }
    let mut heap: BinaryHeap<Turn> = w
        .iter()
        .enumerate()
        .map(|(i, &w)| Turn { k: 0, w, i })
        .collect();
    let mut out = Vec::with_capacity(total as usize);
    while (out.len() as u64) < total {
        let Some(mut t) = heap.pop() else { break };
        out.push(t.i as u32);
        t.k += 1;
        if t.k < t.w {
            heap.push(t);
        }
    }
    out.into_boxed_slice()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The Maglev table size for `n` backends: a prime of at least 100 per backend (65,537 up to
/// 655 backends), so that each backend's share is within about 1 % of its weight.
pub(super) fn table_size(n: usize) -> usize {
    const SMALL: usize = 65_537;
    let want = n.saturating_mul(100);
    if want <= SMALL {
        return SMALL;
    }
    (want..).find(|&m| is_prime(m)).unwrap_or(want)
}

fn is_prime(m: usize) -> bool {
    m >= 2
        && (2..)
            .take_while(|d| d * d <= m)
            .all(|d| !m.is_multiple_of(d))
}

/// Maglev's lookup table (Eisenbud et al., NSDI 2016) of `size` (a prime) entries, each an
/// index into `backends`. Each backend fills the table along its own permutation (an offset
/// and a step from a fixed hash of its address), taking `weight` turns per round, so its
/// share follows its weight; when one of N backends leaves, about 1/N of the entries move.
/// The hash is FNV-1a with a fixed finaliser, written out here: the same table on every
/// worker, every run and every Rust version.
pub(super) fn maglev(backends: &[SocketAddr], weights: &[u16], size: usize) -> Box<[u32]> {
    const EMPTY: u32 = u32::MAX;
    let m = size as u64;
    let n = backends.len();
    let mut table = vec![EMPTY; size];
    if n == 0 || size < 2 {
        return table.into_iter().map(|_| 0).collect();
    }
    let perm: Vec<(u64, u64)> = backends
        .iter()
        .map(|a| {
            let key = addr_bytes(a);
            let offset = mix(fnv1a(&key, FNV_OFFSET)) % m;
            let skip = mix(fnv1a(&key, FNV_OFFSET ^ 0x5bd1_e995)) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; n];
    let mut filled = 0usize;
    'fill: loop {
        for i in 0..n {
            for _ in 0..weights.get(i).copied().unwrap_or(1).max(1) {
                let (offset, skip) = perm[i];
                let mut c = ((offset + next[i] % m * skip) % m) as usize;
                while table[c] != EMPTY {
                    next[i] += 1;
                    c = ((offset + next[i] % m * skip) % m) as usize;
                }
                table[c] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
        }
    }
    table.into_boxed_slice()
}

/// A backend's identity for the hash: its IP's bytes and port (big-endian).
fn addr_bytes(a: &SocketAddr) -> Vec<u8> {
    let mut key = match a.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    key.extend_from_slice(&a.port().to_be_bytes());
    key
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 (fixed constants: stable across builds).
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes
        .iter()
        .fold(seed, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// MurmurHash3's 64-bit finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn addrs(n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, 0, 1 + i as u8], 8080)))
            .collect()
    }

    fn metrics(n: usize) -> Vec<Rc<BackendMetrics>> {
        let m = crate::metrics::local::WorkerMetrics::default();
        let r = m.route("t");
        addrs(n).into_iter().map(|a| r.backend(a)).collect()
    }

    fn clients(n: u32) -> impl Iterator<Item = Source> {
        (0..n).map(|i| Source::of(IpAddr::V4(Ipv4Addr::from(0x0a64_0000 + i * 7))))
    }

    #[test]
    fn the_schedule_is_smooth_and_weighted() {
        assert_eq!(&*schedule(&[1, 1, 1]), &[0, 1, 2]);
        assert_eq!(&*schedule(&[1, 3]), &[1, 0, 1, 1]);
        // Reduced by the common divisor.
        assert_eq!(&*schedule(&[2, 6]), &[1, 0, 1, 1]);
        let s = schedule(&[5, 1, 2]);
        assert_eq!(s.len(), 8);
        for (i, w) in [5, 1, 2].into_iter().enumerate() {
            assert_eq!(s.iter().filter(|&&x| x as usize == i).count(), w);
        }
        // Smooth: the heavy backend never runs more than twice in a row here.
        assert!(!s.windows(3).any(|w| w.iter().all(|&x| x == 0)), "{s:?}");
        let big = schedule(&[256, 255]);
        assert_eq!(big.len(), 511);
    }

    #[test]
    fn round_robin_follows_the_weights() {
        let b = metrics(2);
        let w = [1, 3];
        let p = Picker::build(Balance::RoundRobin, &addrs(2), &w, 1);
        let mut n = [0; 2];
        for _ in 0..4000 {
            n[p.pick(&b, &w, Source::default())] += 1;
        }
        assert_eq!(n, [1000, 3000]);
    }

    /// Least connections: fewest sessions per weight; ties follow the weighted schedule.
    #[test]
    fn least_connections_prefers_the_least_loaded_per_weight() {
        let b = metrics(3);
        let w = [1, 1, 2];
        let p = Picker::build(Balance::LeastConnections, &addrs(3), &w, 1);
        // All idle: the schedule (2 appears twice in four).
        let picks: Vec<usize> = (0..4).map(|_| p.pick(&b, &w, Source::default())).collect();
        let mut sorted = picks.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2, 2], "{picks:?}");
        // 0 holds 5, 1 holds 2, 2 holds 3 (1.5 per weight): 2 wins.
        b[0].active.set(5);
        b[1].active.set(2);
        b[2].active.set(3);
        for _ in 0..10 {
            assert_eq!(p.pick(&b, &w, Source::default()), 2);
        }
        // Connecting attempts count too ...
        b[2].connecting.set(3);
        assert_eq!(p.pick(&b, &w, Source::default()), 1);
        // ... and what the other workers hold (sent by the control thread).
        b[1].elsewhere.set(10);
        assert_eq!(p.pick(&b, &w, Source::default()), 2);
    }

    #[test]
    fn p2c_draws_by_weight_and_avoids_the_loaded() {
        let b = metrics(2);
        let w = [1, 3];
        let p = Picker::build(Balance::P2c, &addrs(2), &w, 0x1234_5678);
        let mut n = [0; 2];
        for _ in 0..10_000 {
            n[p.pick(&b, &w, Source::default())] += 1;
        }
        // Idle: two distinct candidates, ties to the first draw (by weight): about 1:3.
        let share = f64::from(n[1]) / 10_000.0;
        assert!((0.70..=0.80).contains(&share), "{n:?}");
        // Backend 1 loaded far past its weight: 0 takes everything.
        b[1].active.set(100);
        for _ in 0..100 {
            assert_eq!(p.pick(&b, &w, Source::default()), 0);
        }
    }

    #[test]
    fn sources_key_ipv4_and_the_ipv6_slash_64() {
        let v6 = |s: &str| Source::of(s.parse().unwrap());
        assert_eq!(v6("2001:db8:1:2::1"), v6("2001:db8:1:2:ffff::9"));
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"));
        assert_eq!(v6("::ffff:10.1.2.3"), v6("10.1.2.3"));
        assert_ne!(v6("10.1.2.3"), v6("10.1.2.4"));
    }

    /// The hash is fixed: the same input gives the same table on every build and run.
    #[test]
    fn the_maglev_table_is_stable() {
        assert_eq!(fnv1a(b"a", FNV_OFFSET), 0xaf63_dc4c_8601_ec8c);
        let t = maglev(&addrs(3), &[1, 1, 1], 65_537);
        let head: Vec<u32> = t[..8].to_vec();
        assert_eq!(maglev(&addrs(3), &[1, 1, 1], 65_537)[..8], head[..]);
        let key = Source::of(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))).hash();
        assert_eq!(key, Source::of("192.0.2.1".parse().unwrap()).hash());
    }

    #[test]
    fn table_sizes_are_primes_of_100_per_backend() {
        assert_eq!(table_size(1), 65_537);
        assert_eq!(table_size(655), 65_537);
        let m = table_size(1000);
        assert!(m >= 100_000 && is_prime(m), "{m}");
    }

    /// Each backend's share of the table follows its weight (within 2 %).
    #[test]
    fn maglev_shares_follow_the_weights() {
        for weights in [vec![1u16; 5], vec![1, 3], vec![1, 2, 3, 4]] {
            let n = weights.len();
            let t = maglev(&addrs(n), &weights, 65_537);
            let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
            for (i, &w) in weights.iter().enumerate() {
                let got = t.iter().filter(|&&x| x as usize == i).count() as f64 / t.len() as f64;
                let want = f64::from(w) / total;
                assert!(
                    (got - want).abs() < 0.02,
                    "{weights:?}: {i} has {got}, want {want}"
                );
            }
        }
    }

    /// When one of N backends leaves, at most 1.2/N of 10,000 clients move (those of the
    /// leaver, about 1/N, and few others); a backend joining moves about 1/(N+1).
    #[test]
    fn maglev_moves_about_one_nth_when_a_backend_leaves() {
        for n in [2usize, 3, 5, 10] {
            let all = addrs(n);
            let w = vec![1u16; n];
            let size = table_size(n);
            let before = maglev(&all, &w, size);
            let gone = n / 2;
            let rest: Vec<SocketAddr> = all.iter().copied().filter(|a| *a != all[gone]).collect();
            let after = maglev(&rest, &w[1..], size);
            let mut moved = 0;
            for s in clients(10_000) {
                let h = (s.hash() % size as u64) as usize;
                let a = all[before[h] as usize];
                let b = rest[after[h] as usize];
                if a != b {
                    moved += 1;
                    // Nobody moves onto the leaver, obviously; most movers were on it.
                }
            }
            let share = f64::from(moved) / 10_000.0;
            let bound = 1.2 / n as f64;
            assert!(
                share <= bound,
                "{n} backends: {share} moved (bound {bound})"
            );
            assert!(share >= 0.8 / n as f64, "{n} backends: only {share} moved");
        }
    }

    /// Backends `ok` refuses (ejected, full) are passed over by every strategy while
    /// another is usable; when none is, the strategy's own choice stands.
    #[test]
    fn every_strategy_passes_over_unusable_backends() {
        let b = metrics(3);
        let w = [1, 2, 1];
        for balance in Balance::ALL {
            let p = Picker::build(balance, &addrs(3), &w, 7);
            let mut n = [0; 3];
            for s in clients(3000) {
                n[p.pick_where(&b, &w, s, |i| i != 1)] += 1;
            }
            assert_eq!(n[1], 0, "{balance}: {n:?}");
            assert!(n[0] > 500 && n[2] > 500, "{balance}: the rest share: {n:?}");
            // Nothing usable: still an answer (the route decides what to do with it).
            let i = p.pick_where(&b, &w, Source::default(), |_| false);
            assert!(i < 3);
        }
        // hash_source: a client whose backend is out goes to the same other one each time,
        // and the others keep theirs.
        let p = Picker::build(Balance::HashSource, &addrs(3), &w, 1);
        for s in clients(500) {
            let home = p.pick(&b, &w, s);
            let away = p.pick_where(&b, &w, s, |i| i != 1);
            if home != 1 {
                assert_eq!(away, home);
            } else {
                assert_eq!(p.pick_where(&b, &w, s, |i| i != 1), away);
            }
        }
    }

    /// hash_source: the same client always gets the same backend; clients spread.
    #[test]
    fn hash_source_is_sticky_and_spreads() {
        let b = metrics(3);
        let w = [1, 1, 1];
        let p = Picker::build(Balance::HashSource, &addrs(3), &w, 1);
        let mut n = [0; 3];
        for s in clients(3000) {
            let first = p.pick(&b, &w, s);
            assert_eq!(p.pick(&b, &w, s), first);
            n[first] += 1;
        }
        assert!(n.iter().all(|&c| c > 800), "{n:?}");
    }
}
