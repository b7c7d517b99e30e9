//! The steps' ids and their dependency graph: duplicate and invalid ids,
//! unknown or repeated `dependsOn`, cycles (petgraph's Kosaraju), and the
//! reachability question templates ask ("is that step a dependency of
//! this one?").

use std::collections::{HashMap, HashSet};

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::model::{StepSpec, TaskSpec};

use super::checks::{Checker, is_valid_id};

/// Each step's key (its id, or its index as a string) and the way back.
pub(super) struct StepIds {
    pub(super) keys: Vec<String>,
    pub(super) by_key: HashMap<String, usize>,
    count: usize,
}

impl StepIds {
    /// Names the steps, reporting invalid and duplicate ids.
    pub(super) fn new(c: &mut Checker<'_>, steps: &[StepSpec], spec: &TaskSpec) -> StepIds {
        let is_pipeline = spec.steps.is_some();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        let mut keys = Vec::with_capacity(steps.len());
        for (i, s) in steps.iter().enumerate() {
            let key = match &s.id {
                Some(id) => {
                    if !is_valid_id(id) {
                        c.err(
                            Some(&i.to_string()),
                            format!("steps[{i}].id"),
                            format!("{id:?} is not a valid id: use letters, digits, '-' and '_', not a number alone"),
                        );
                    }
                    if let Some(prev) = by_key.get(id) {
                        c.err(
                            Some(id),
                            format!("steps[{i}].id"),
                            format!("duplicate id {id:?} (also steps[{prev}])"),
                        );
                    }
                    id.clone()
                }
                None if is_pipeline => i.to_string(),
                None => spec.task_type.clone(),
            };
            by_key.entry(key.clone()).or_insert(i);
            keys.push(key);
        }
        StepIds {
            keys,
            by_key,
            count: steps.len(),
        }
    }

    /// The step a `dependsOn` entry or a `{{steps.X}}` names: an id, or an index.
    pub(super) fn lookup(&self, name: &str) -> Option<usize> {
        self.by_key
            .get(name)
            .copied()
            .or_else(|| name.parse::<usize>().ok().filter(|i| *i < self.count))
    }

    /// Up to 20 ids, for "known ids: ..." in errors.
    pub(super) fn known(&self) -> String {
        let shown: Vec<&str> = self.keys.iter().take(20).map(String::as_str).collect();
        let mut s = shown.join(", ");
        if self.keys.len() > 20 {
            s.push_str(&format!(", ... ({} steps)", self.keys.len()));
        }
        s
    }
}

/// The dependency graph, checked for cycles, with each step's ancestors.
pub(super) struct DepGraph {
    /// Per step, the steps it depends on.
    pub(super) deps: Vec<Vec<usize>>,
    /// Per step, a bit set of every step it waits for, directly or not:
    /// one lookup per template reference instead of a graph search. Steps²/8
    /// bytes (125 KB at the default limit of 1,000 steps).
    ancestors: Vec<Vec<u64>>,
    /// Whether any cycle was found (then nothing is reachable).
    cyclic: bool,
}

impl DepGraph {
    /// Reads `dependsOn` (or the order of a sequential pipeline) and reports
    /// self-dependencies, repeats, unknown steps and cycles. Iterative
    /// throughout: a pipeline as long as the limit allows cannot overflow
    /// the stack.
    pub(super) fn build(c: &mut Checker<'_>, steps: &[StepSpec], ids: &StepIds) -> DepGraph {
        let deps = dependencies(c, steps, ids);
        let n = steps.len();
        let Some(order) = topological_order(&deps) else {
            report_cycles(c, &deps, ids);
            return DepGraph {
                deps,
                ancestors: Vec::new(),
                cyclic: true,
            };
        };
        let words = n.div_ceil(64);
        let mut ancestors = vec![vec![0u64; words]; n];
        for &i in &order {
            let mut mine = std::mem::take(&mut ancestors[i]);
            for &d in &deps[i] {
                mine[d / 64] |= 1 << (d % 64);
                for (w, a) in mine.iter_mut().zip(&ancestors[d]) {
                    *w |= a;
                }
            }
            ancestors[i] = mine;
        }
        DepGraph {
            deps,
            ancestors,
            cyclic: false,
        }
    }

    /// Whether step `from`'s result is always there when step `to` runs.
    pub(super) fn reaches(&self, from: usize, to: usize) -> bool {
        !self.cyclic
            && from != to
            && self
                .ancestors
                .get(to)
                .and_then(|a| a.get(from / 64))
                .is_some_and(|w| w & (1 << (from % 64)) != 0)
    }
}

/// Kahn's algorithm: the steps with every dependency before its dependants,
/// or `None` when a cycle leaves some steps out.
fn topological_order(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    let n = deps.len();
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependants = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependants[d].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|i| waiting[*i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop() {
        order.push(i);
        for &j in &dependants[i] {
            waiting[j] -= 1;
            if waiting[j] == 0 {
                ready.push(j);
            }
        }
    }
    (order.len() == n).then_some(order)
}

/// One error per cycle, naming its steps in execution order
/// (petgraph's Kosaraju, which is iterative).
fn report_cycles(c: &mut Checker<'_>, deps: &[Vec<usize>], ids: &StepIds) {
    let mut graph: DiGraph<usize, ()> = DiGraph::with_capacity(deps.len(), deps.len());
    let nodes: Vec<NodeIndex> = (0..deps.len()).map(|i| graph.add_node(i)).collect();
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            graph.add_edge(nodes[d], nodes[i], ());
        }
    }
    let mut cycles: Vec<HashSet<usize>> = kosaraju_scc(&graph)
        .into_iter()
        .filter(|scc| scc.len() > 1)
        .map(|scc| scc.iter().map(|n| graph[*n]).collect())
        .collect();
    cycles.sort_by_key(|m| m.iter().min().copied());
    for members in cycles {
        let cycle = describe_cycle(&members, deps, &ids.keys);
        let first = *members.iter().min().unwrap_or(&0);
        c.err(
            Some(&ids.keys[first]),
            format!("steps[{first}].dependsOn"),
            format!("dependency cycle: {cycle}"),
        );
    }
}

fn dependencies(c: &mut Checker<'_>, steps: &[StepSpec], ids: &StepIds) -> Vec<Vec<usize>> {
    let dag_mode = steps.iter().any(|s| s.depends_on.is_some());
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (i, s) in steps.iter().enumerate() {
        let key = ids.keys[i].as_str();
        if !dag_mode {
            if i > 0 {
                deps[i].push(i - 1);
            }
            continue;
        }
        let mut seen = HashSet::new();
        for (j, d) in s.depends_on.iter().flatten().enumerate() {
            let field = format!("steps[{i}].dependsOn[{j}]");
            match ids.lookup(d) {
                Some(t) if t == i => {
                    c.err(Some(key), field, format!("step {key:?} depends on itself"))
                }
                Some(t) if !seen.insert(t) => {
                    c.err(Some(key), field, format!("{d:?} is listed twice"))
                }
                Some(t) => deps[i].push(t),
                None => c.err(
                    Some(key),
                    field,
                    format!("unknown step {d:?}; known ids: {}", ids.known()),
                ),
            }
        }
    }
    deps
}

fn describe_cycle(members: &HashSet<usize>, deps: &[Vec<usize>], keys: &[String]) -> String {
    // Walk backwards along dependencies inside the component until a node repeats.
    let Some(&start) = members.iter().min() else {
        return String::new();
    };
    let mut path = vec![start];
    let mut seen = HashSet::from([start]);
    let mut cur = start;
    while let Some(&next) = deps[cur].iter().find(|d| members.contains(d)) {
        if !seen.insert(next) {
            let pos = path.iter().position(|p| *p == next).unwrap_or(0);
            path = path[pos..].to_vec();
            path.push(next);
            break;
        }
        path.push(next);
        cur = next;
    }
    // `path` follows "depends on"; show it in execution direction.
    path.reverse();
    path.iter()
        .map(|i| keys[*i].as_str())
        .collect::<Vec<_>>()
        .join(" → ")
}
