//! Which steps of a run may start: the scheduling rule every orchestrator
//! of this crate shares.

use std::collections::VecDeque;

/// The nodes of a run's graph (steps, or chains of steps run as one) in
/// the order they may start: a node is ready once every node it depends on
/// has succeeded, so a node downstream of a failure never becomes ready.
/// Ready nodes start first come, first served.
#[derive(Debug)]
pub(crate) struct ReadyQueue {
    /// Per node: the nodes it depends on that have not succeeded.
    waiting: Vec<usize>,
    /// Per node: the nodes that depend on it.
    dependents: Vec<Vec<usize>>,
    ready: VecDeque<usize>,
}

impl ReadyQueue {
    /// The queue of a graph where node `i` depends on `dependencies[i]`
    /// (nodes of a lower index): the nodes without dependencies are ready.
    pub(crate) fn new(dependencies: &[Vec<usize>]) -> Self {
        let mut dependents = vec![Vec::new(); dependencies.len()];
        for (node, deps) in dependencies.iter().enumerate() {
            for &d in deps {
                dependents[d].push(node);
            }
        }
        let waiting: Vec<usize> = dependencies.iter().map(Vec::len).collect();
        let ready = (0..waiting.len()).filter(|&i| waiting[i] == 0).collect();
        ReadyQueue { waiting, dependents, ready }
    }

    /// The next ready node, taken off the queue.
    pub(crate) fn next(&mut self) -> Option<usize> {
        self.ready.pop_front()
    }

    /// Whether a node is ready.
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Node `node` succeeded: the nodes that waited only for it are ready.
    pub(crate) fn succeeded(&mut self, node: usize) {
        for &d in &self.dependents[node] {
            self.waiting[d] -= 1;
            if self.waiting[d] == 0 {
                self.ready.push_back(d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReadyQueue;

    #[test]
    fn nodes_start_once_what_they_depend_on_succeeded_and_never_after_a_failure() {
        // 0 -> 1 -> 3, 0 -> 2 -> 3, 4 alone; 5 after 2.
        let mut q = ReadyQueue::new(&[vec![], vec![0], vec![0], vec![1, 2], vec![], vec![2]]);
        assert_eq!((q.next(), q.next(), q.next()), (Some(0), Some(4), None));
        q.succeeded(0);
        assert_eq!((q.next(), q.next()), (Some(1), Some(2)));
        q.succeeded(1);
        assert!(!q.has_ready(), "3 still waits for 2");
        // 2 failed: neither 3 nor 5 ever starts.
        assert_eq!(q.next(), None);
        q.succeeded(4);
        assert!(!q.has_ready());
    }
}
