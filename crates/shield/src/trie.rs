//! A binary prefix trie from network prefixes to values: the index behind the block and allow
//! lists. A lookup walks one node per address bit, so it costs at most 32 steps for IPv4 and
//! 128 for IPv6 whatever the number of rules.
//!
//! Nodes live in one arena addressed by `u32`, so a node is 12 bytes and removal returns
//! nodes to a free list instead of leaving holes. Each stored prefix of length `L` needs at
//! most `L` nodes besides the root; [`PrefixTrie::node_bound`] states the worst case.

/// Marks "no child" and "no value" in the arena.
const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    child: [u32; 2],
    value: u32,
}

const EMPTY: Node = Node { child: [NONE, NONE], value: NONE };

/// Prefix trie over left-aligned `u128` keys with prefix lengths up to `max_len`.
#[derive(Debug, Clone)]
pub struct PrefixTrie<T> {
    nodes: Vec<Node>,
    free_nodes: Vec<u32>,
    values: Vec<Option<(u128, u8, T)>>,
    free_values: Vec<u32>,
    max_len: u8,
    len: usize,
}

fn bit(key: u128, depth: u8) -> usize {
    ((key >> (127 - u32::from(depth))) & 1) as usize
}

impl<T> PrefixTrie<T> {
    /// An empty trie for keys of `max_len` bits (32 for IPv4, 128 for IPv6).
    pub fn new(max_len: u8) -> Self {
        Self {
            nodes: vec![EMPTY],
            free_nodes: Vec::new(),
            values: Vec::new(),
            free_values: Vec::new(),
            max_len: max_len.min(128),
            len: 0,
        }
    }

    /// Number of stored prefixes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most arena nodes `entries` prefixes can need: one root plus `max_len` per prefix.
    pub fn node_bound(&self, entries: usize) -> usize {
        1 + entries * usize::from(self.max_len)
    }

    /// Nodes currently allocated (in use or free).
    pub fn nodes_allocated(&self) -> usize {
        self.nodes.len()
    }

    fn alloc_node(&mut self) -> u32 {
        if let Some(i) = self.free_nodes.pop() {
            self.nodes[i as usize] = EMPTY;
            i
        } else {
            self.nodes.push(EMPTY);
            (self.nodes.len() - 1) as u32
        }
    }

    /// Stores `value` under `key/len` (bits below `len` are ignored), returning the value it
    /// replaced. `len` above `max_len` is clamped.
    pub fn insert(&mut self, key: u128, len: u8, value: T) -> Option<T> {
        let len = len.min(self.max_len);
        let key = key & mask(len);
        let mut at = 0u32;
        for depth in 0..len {
            let b = bit(key, depth);
            let next = self.nodes[at as usize].child[b];
            at = if next == NONE {
                let fresh = self.alloc_node();
                self.nodes[at as usize].child[b] = fresh;
                fresh
            } else {
                next
            };
        }
        let slot = self.nodes[at as usize].value;
        if slot != NONE {
            let old = self.values[slot as usize].replace((key, len, value));
            return old.map(|(_, _, v)| v);
        }
        let slot = match self.free_values.pop() {
            Some(i) => {
                self.values[i as usize] = Some((key, len, value));
                i
            }
            None => {
                self.values.push(Some((key, len, value)));
                (self.values.len() - 1) as u32
            }
        };
        self.nodes[at as usize].value = slot;
        self.len += 1;
        None
    }

    /// Removes exactly `key/len` (not longer or shorter prefixes), pruning nodes left empty.
    pub fn remove(&mut self, key: u128, len: u8) -> Option<T> {
        let len = len.min(self.max_len);
        let key = key & mask(len);
        // The path from the root, so empty nodes can be unlinked bottom-up without recursion.
        let mut path = [0u32; 129];
        let mut at = 0u32;
        for depth in 0..len {
            let next = self.nodes[at as usize].child[bit(key, depth)];
            if next == NONE {
                return None;
            }
            path[usize::from(depth) + 1] = next;
            at = next;
        }
        let slot = self.nodes[at as usize].value;
        if slot == NONE {
            return None;
        }
        self.nodes[at as usize].value = NONE;
        let removed = self.values[slot as usize].take().map(|(_, _, v)| v);
        self.free_values.push(slot);
        self.len -= 1;
        for depth in (1..=usize::from(len)).rev() {
            let node = self.nodes[path[depth] as usize];
            if node.value != NONE || node.child != [NONE, NONE] {
                break;
            }
            self.free_nodes.push(path[depth]);
            let parent = path[depth - 1] as usize;
            self.nodes[parent].child[bit(key, (depth - 1) as u8)] = NONE;
        }
        removed
    }

    /// The value stored under exactly `key/len`.
    pub fn get(&self, key: u128, len: u8) -> Option<&T> {
        let len = len.min(self.max_len);
        let mut at = 0u32;
        for depth in 0..len {
            at = self.nodes[at as usize].child[bit(key, depth)];
            if at == NONE {
                return None;
            }
        }
        self.value_of(&self.nodes[at as usize]).map(|(_, _, v)| v)
    }

    fn value_of(&self, node: &Node) -> Option<&(u128, u8, T)> {
        if node.value == NONE { None } else { self.values.get(node.value as usize)?.as_ref() }
    }

    /// The longest stored prefix containing the full-length address `key` whose value passes
    /// `keep` (e.g. "not expired"), as `(prefix bits, prefix length, value)`. At most
    /// `max_len + 1` nodes are visited.
    pub fn longest_match(&self, key: u128, mut keep: impl FnMut(&T) -> bool) -> Option<(u128, u8, &T)> {
        // Every refused or admitted request walks this, up to 33 nodes for an IPv4 host
        // entry: the key is shifted one bit a step rather than indexed, and a node's value
        // is looked up only where it has one.
        let mut best = None;
        let mut at = 0u32;
        let mut rest = key;
        for _ in 0..=self.max_len {
            let Some(node) = self.nodes.get(at as usize) else { break };
            if let Some((k, l, v)) = self.value_of(node)
                && keep(v)
            {
                best = Some((*k, *l, v));
            }
            at = node.child[(rest >> 127) as usize];
            rest <<= 1;
            if at == NONE {
                break;
            }
        }
        best
    }

    /// Every stored `(prefix bits, prefix length, value)`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u128, u8, &T)> {
        self.values.iter().flatten().map(|(k, l, v)| (*k, *l, v))
    }

    /// Removes every entry for which `keep` is false; returns how many were removed.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) -> usize {
        let doomed: Vec<(u128, u8)> =
            self.values.iter().flatten().filter(|(_, _, v)| !keep(v)).map(|(k, l, _)| (*k, *l)).collect();
        for &(k, l) in &doomed {
            self.remove(k, l);
        }
        doomed.len()
    }
}

const fn mask(len: u8) -> u128 {
    if len == 0 { 0 } else { u128::MAX << (128 - len as u32) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn longest_match_prefers_the_most_specific_kept_prefix() {
        let mut t = PrefixTrie::new(32);
        let net = |a: u32| u128::from(a) << 96;
        t.insert(net(0x0a00_0000), 8, "ten");
        t.insert(net(0x0a01_0000), 16, "ten-one");
        assert_eq!(t.longest_match(net(0x0a01_0203), |_| true).map(|m| *m.2), Some("ten-one"));
        assert_eq!(t.longest_match(net(0x0a02_0203), |_| true).map(|m| *m.2), Some("ten"));
        assert_eq!(t.longest_match(net(0x0a01_0203), |v| *v != "ten-one").map(|m| *m.2), Some("ten"));
        assert!(t.longest_match(net(0x0b00_0000), |_| true).is_none());
        assert_eq!(t.insert(net(0x0a00_0000), 8, "TEN"), Some("ten"));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn removal_prunes_nodes_and_reuses_them() {
        let mut t = PrefixTrie::new(128);
        t.insert(u128::MAX, 128, 1);
        assert_eq!(t.nodes_allocated(), 129);
        assert_eq!(t.remove(u128::MAX, 127), None, "only the exact prefix is removed");
        assert_eq!(t.remove(u128::MAX, 128), Some(1));
        assert!(t.is_empty());
        t.insert(0, 128, 2);
        assert_eq!(t.nodes_allocated(), 129, "freed nodes were reused");
        assert_eq!(t.get(0, 128), Some(&2));
    }

    #[test]
    fn zero_length_prefix_matches_everything() {
        let mut t = PrefixTrie::new(32);
        t.insert(0, 0, ());
        assert!(t.longest_match(u128::MAX, |_| true).is_some());
        assert_eq!(t.remove(0, 0), Some(()));
    }

    proptest! {
        #[test]
        fn node_count_stays_within_the_bound(ops in proptest::collection::vec((any::<u128>(), 0u8..=128, any::<bool>()), 0..60)) {
            let mut t = PrefixTrie::new(128);
            let mut peak = 0;
            for (k, l, ins) in ops {
                if ins { t.insert(k, l, ()); } else { t.remove(k, l); }
                peak = peak.max(t.len());
                let live = t.nodes_allocated() - t.free_nodes.len();
                prop_assert!(live <= t.node_bound(t.len()));
            }
            prop_assert!(t.nodes_allocated() <= t.node_bound(peak));
        }
    }
}
