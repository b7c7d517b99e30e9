//! The steps' ids and their dependency graph: duplicate and invalid ids,
//! unknown or repeated `dependsOn`, cycles (petgraph's Tarjan), and the
//! reachability question templates ask ("is that step a dependency of
//! this one?").

use std::collections::{HashMap, HashSet};

use petgraph::algo::{DfsSpace, has_path_connecting, tarjan_scc};
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

/// The dependency graph, checked for cycles.
pub(super) struct DepGraph {
    /// Per step, the steps it depends on.
    pub(super) deps: Vec<Vec<usize>>,
    graph: DiGraph<usize, ()>,
    nodes: Vec<NodeIndex>,
    dfs: DfsSpace<NodeIndex, <DiGraph<usize, ()> as petgraph::visit::Visitable>::Map>,
    /// Whether any cycle was found (then nothing is reachable).
    pub(super) cyclic: bool,
}

impl DepGraph {
    /// Reads `dependsOn` (or the order of a sequential pipeline) and reports
    /// self-dependencies, repeats, unknown steps and cycles.
    pub(super) fn build(c: &mut Checker<'_>, steps: &[StepSpec], ids: &StepIds) -> DepGraph {
        let deps = dependencies(c, steps, ids);
        let mut graph: DiGraph<usize, ()> = DiGraph::with_capacity(steps.len(), steps.len());
        let nodes: Vec<NodeIndex> = (0..steps.len()).map(|i| graph.add_node(i)).collect();
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                graph.add_edge(nodes[d], nodes[i], ());
            }
        }
        let mut cyclic = false;
        for scc in tarjan_scc(&graph) {
            if scc.len() > 1 {
                cyclic = true;
                let members: HashSet<usize> = scc.iter().map(|n| graph[*n]).collect();
                let cycle = describe_cycle(&members, &deps, &ids.keys);
                let first = *members.iter().min().unwrap_or(&0);
                c.err(
                    Some(&ids.keys[first]),
                    format!("steps[{first}].dependsOn"),
                    format!("dependency cycle: {cycle}"),
                );
            }
        }
        let dfs = DfsSpace::new(&graph);
        DepGraph {
            deps,
            graph,
            nodes,
            dfs,
            cyclic,
        }
    }

    /// Whether step `from`'s result is always there when step `to` runs.
    pub(super) fn reaches(&mut self, from: usize, to: usize) -> bool {
        !self.cyclic
            && from != to
            && has_path_connecting(
                &self.graph,
                self.nodes[from],
                self.nodes[to],
                Some(&mut self.dfs),
            )
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
