//! Inputs: random bytes, a dictionary word followed by random bytes, and seeds from the
//! corpus changed by a few mutations (bit flips, byte sets, truncations, insertions,
//! removals, dictionary words, 8/16/24-bit length fields set to edge values or nudged,
//! duplicated and spliced chunks). Mutations pick their positions modulo the input's
//! length, so every generated value applies to every seed, and proptest can shrink them.

use proptest::prelude::*;
use proptest::sample::Index;

/// Longest random input; the parsers' callers hold at most 32 KiB.
const MAX_RANDOM: usize = 2048;
/// Most mutations applied to one seed.
const MAX_OPS: usize = 8;

/// One change to an input.
#[derive(Debug, Clone)]
pub enum Op {
    Flip(Index, u8),
    Set(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Remove(Index, Index),
    Word(Index, Index),
    /// Big-endian length field of 1, 2 or 3 bytes at a position: set or nudged.
    Length(Index, u8, LengthChange),
    Duplicate(Index, Index, Index),
    /// Replace the tail with another seed's tail.
    Splice(Index, Index, Index),
}

#[derive(Debug, Clone)]
pub enum LengthChange {
    Edge(Index),
    Nudge(i32),
    Any(u32),
}

/// Lengths that parsers tend to get wrong.
const EDGES: &[u32] = &[
    0, 1, 2, 3, 4, 5, 0x7f, 0x80, 0xff, 0x100, 0x3fff, 0x4000, 0x4001, 0x47ff, 0x4800, 0x4801,
    0x7fff, 0x8000, 0xfffe, 0xffff, 0x1_0000, 0x1_0001, 0xff_ffff,
];

fn op() -> impl Strategy<Value = Op> {
    let change = prop_oneof![
        any::<Index>().prop_map(LengthChange::Edge),
        (-8i32..=8).prop_map(LengthChange::Nudge),
        any::<u32>().prop_map(LengthChange::Any),
    ];
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Op::Flip(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Op::Set(i, b)),
        1 => any::<Index>().prop_map(Op::Truncate),
        2 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Op::Insert(i, b)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(i, n)| Op::Remove(i, n)),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(i, w)| Op::Word(i, w)),
        3 => (any::<Index>(), 1u8..=3, change).prop_map(|(i, w, c)| Op::Length(i, w, c)),
        1 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(a, n, b)| Op::Duplicate(a, n, b)),
        1 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(s, a, b)| Op::Splice(s, a, b)),
    ]
}

/// Applies `ops` to a copy of `seed`.
pub fn apply(seed: &[u8], ops: &[Op], seeds: &[Vec<u8>], words: &[&[u8]]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for op in ops {
        let at = |i: &Index, v: &Vec<u8>| i.index(v.len() + 1);
        match op {
            Op::Flip(i, bit) => {
                if !v.is_empty() {
                    let k = i.index(v.len());
                    v[k] ^= 1 << bit;
                }
            }
            Op::Set(i, b) => {
                if !v.is_empty() {
                    let k = i.index(v.len());
                    v[k] = *b;
                }
            }
            Op::Truncate(i) => {
                let k = at(i, &v);
                v.truncate(k);
            }
            Op::Insert(i, bytes) => {
                let k = at(i, &v);
                v.splice(k..k, bytes.iter().copied());
            }
            Op::Remove(i, n) => {
                let k = at(i, &v);
                let n = n.index(v.len() - k + 1).min(64);
                v.drain(k..k + n);
            }
            Op::Word(i, w) => {
                if !words.is_empty() {
                    let k = at(i, &v);
                    let word = words[w.index(words.len())];
                    v.splice(k..k, word.iter().copied());
                }
            }
            Op::Length(i, width, change) => {
                let width = usize::from(*width);
                if v.len() >= width {
                    let k = i.index(v.len() - width + 1);
                    let old = v[k..k + width]
                        .iter()
                        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
                    let new = match change {
                        LengthChange::Edge(e) => EDGES[e.index(EDGES.len())],
                        LengthChange::Nudge(d) => old.wrapping_add_signed(*d),
                        LengthChange::Any(x) => *x,
                    };
                    let bytes = new.to_be_bytes();
                    v[k..k + width].copy_from_slice(&bytes[4 - width..]);
                }
            }
            Op::Duplicate(a, n, b) => {
                if !v.is_empty() {
                    let start = a.index(v.len());
                    let len = n.index(v.len() - start + 1).min(256);
                    let chunk = v[start..start + len].to_vec();
                    let k = at(b, &v);
                    v.splice(k..k, chunk);
                }
            }
            Op::Splice(s, a, b) => {
                if !seeds.is_empty() {
                    let other = &seeds[s.index(seeds.len())];
                    let k = at(a, &v);
                    let from = b.index(other.len() + 1);
                    v.truncate(k);
                    v.extend_from_slice(&other[from..]);
                }
            }
        }
        // Keep inputs within what a caller would ever hold.
        v.truncate(64 * 1024);
    }
    v
}

/// The inputs for one target: `seeds` (corpus files and generated ones) and `words`
/// (its dictionary).
pub fn inputs(
    seeds: Vec<Vec<u8>>,
    words: &'static [&'static [u8]],
    structured: Option<BoxedStrategy<Vec<u8>>>,
) -> BoxedStrategy<Vec<u8>> {
    let random = proptest::collection::vec(any::<u8>(), 0..MAX_RANDOM);
    let worded = (
        any::<Index>(),
        proptest::collection::vec(any::<u8>(), 0..MAX_RANDOM),
    )
        .prop_map(move |(w, tail)| {
            let mut v = words
                .get(w.index(words.len().max(1)))
                .map(|w| w.to_vec())
                .unwrap_or_default();
            v.extend(tail);
            v
        });
    // Mostly one or two mutations: more rarely leave anything parseable.
    let ops = || {
        prop_oneof![
            3 => proptest::collection::vec(op(), 1..=2),
            1 => proptest::collection::vec(op(), 1..=MAX_OPS),
        ]
    };
    let pool = seeds.clone();
    let mutated = (any::<Index>(), ops())
        .prop_map(move |(s, ops)| apply(&pool[s.index(pool.len())], &ops, &pool, words));
    let bytes = prop_oneof![1 => random, 1 => worded, 6 => mutated];
    match structured {
        None => bytes.boxed(),
        Some(documents) => {
            let pool = seeds;
            // Well-formed documents, now and then with a mutation or two.
            let documents = (documents, prop_oneof![3 => Just(Vec::new()), 1 => ops()])
                .prop_map(move |(doc, ops)| apply(&doc, &ops, &pool, words));
            prop_oneof![1 => bytes, 1 => documents].boxed()
        }
    }
}
