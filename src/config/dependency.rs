//! Service dependency order: `B depends_on A` means every host of A is on the new
//! version, and healthy, before any host of B restarts.
//!
//! Ordering is a topological sort whose ties are broken by declaration order, so the
//! same playbook always gives the same plan. Cycles are reported as paths an operator
//! can follow: `api -> cache -> api`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// `deps[i]` lists the services `i` depends on. Returns every service in an order where
/// dependencies come first, or every dependency cycle (each starts and ends with the
/// same service, beginning at its earliest-declared member).
pub fn order(deps: &[Vec<usize>]) -> Result<Vec<usize>, Vec<Vec<usize>>> {
    let n = deps.len();
    let mut waiting_on: Vec<usize> = deps.iter().map(|d| dedup(d).len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in &dedup(ds) {
            dependents[d].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..n)
        .filter(|&i| waiting_on[i] == 0)
        .map(Reverse)
        .collect();
    let mut out = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        out.push(i);
        for &j in &dependents[i] {
            waiting_on[j] -= 1;
            if waiting_on[j] == 0 {
                ready.push(Reverse(j));
            }
        }
    }
    if out.len() == n {
        Ok(out)
    } else {
        Err(cycles(deps))
    }
}

fn dedup(v: &[usize]) -> Vec<usize> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// One cycle per strongly connected component that has one (Tarjan's algorithm).
fn cycles(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct Tarjan<'a> {
        deps: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        sccs: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.deps[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    _ => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                self.sccs.push(scc);
            }
        }
    }
    let n = deps.len();
    let mut t = Tarjan {
        deps,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        sccs: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    let mut found: Vec<Vec<usize>> = t
        .sccs
        .into_iter()
        .filter(|scc| scc.len() > 1 || deps[scc[0]].contains(&scc[0]))
        .map(|scc| shortest_cycle(deps, &scc))
        .collect();
    found.sort();
    found
}

/// The shortest cycle through the earliest member of `scc`, by breadth-first search.
fn shortest_cycle(deps: &[Vec<usize>], scc: &[usize]) -> Vec<usize> {
    let start = *scc.iter().min().expect("non-empty component");
    let mut parent: Vec<Option<usize>> = vec![None; deps.len()];
    let mut queue = std::collections::VecDeque::from([start]);
    let mut seen = vec![false; deps.len()];
    seen[start] = true;
    while let Some(v) = queue.pop_front() {
        let mut next: Vec<usize> = deps[v]
            .iter()
            .copied()
            .filter(|w| scc.contains(w))
            .collect();
        next.sort_unstable();
        for w in next {
            if w == start {
                // Walk the BFS tree back from `v`, then read it forwards.
                let mut cycle = vec![v];
                while let Some(p) = parent[*cycle.last().expect("non-empty")] {
                    cycle.push(p);
                }
                cycle.reverse();
                cycle.push(start);
                return cycle;
            }
            if !seen[w] {
                seen[w] = true;
                parent[w] = Some(v);
                queue.push_back(w);
            }
        }
    }
    unreachable!("a strongly connected component has a cycle through each member")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_first_ties_by_declaration() {
        // 0 web -> 2 api -> 1 db; 3 cron independent
        let deps = vec![vec![2], vec![], vec![1], vec![]];
        assert_eq!(order(&deps).unwrap(), [1, 2, 0, 3]);
    }

    #[test]
    fn diamond() {
        // 0 A; 1 B -> A; 2 C -> A; 3 D -> B, C
        let deps = vec![vec![], vec![0], vec![0], vec![1, 2]];
        assert_eq!(order(&deps).unwrap(), [0, 1, 2, 3]);
    }

    #[test]
    fn cycles_are_named_in_order() {
        // 0 api -> 1 cache -> 0 api ; 2 self-loop; 3 -> 0 (downstream, not a cycle)
        let deps = vec![vec![1], vec![0], vec![2], vec![0]];
        assert_eq!(order(&deps).unwrap_err(), vec![vec![0, 1, 0], vec![2, 2]]);
    }

    #[test]
    fn longer_cycle_keeps_its_direction() {
        // 0 -> 2 -> 1 -> 0
        let deps = vec![vec![2], vec![0], vec![1]];
        assert_eq!(order(&deps).unwrap_err(), vec![vec![0, 2, 1, 0]]);
    }
}
