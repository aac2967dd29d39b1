//! Liveness and readiness facts reported by the parts of the process that
//! know them: each shard says when it serves its sockets (and when it
//! stops), the function runtime says which configured functions compiled.
//! `/readyz` reads them. Written rarely (start-up, shutdown, compiles), never
//! on the request path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// Compile state of one configured function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunctionState {
    Compiling,
    Ready,
    Failed(String),
}

/// See the module documentation.
#[derive(Debug)]
pub struct Health {
    shards: Box<[AtomicBool]>,
    functions: Mutex<Vec<(String, FunctionState)>>,
}

static GLOBAL: OnceLock<Health> = OnceLock::new();

/// Create the process's health record for `shards` shards (once).
pub fn init(shards: usize) -> &'static Health {
    GLOBAL.get_or_init(|| Health::new(shards))
}

/// The process's health record, once [`init`] ran.
pub fn global() -> Option<&'static Health> {
    GLOBAL.get()
}

impl Health {
    pub fn new(shards: usize) -> Health {
        Health {
            shards: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            functions: Mutex::new(Vec::new()),
        }
    }

    /// Shard `index` serves its sockets (`true`) or stopped (`false`).
    pub fn set_shard_serving(&self, index: usize, serving: bool) {
        if let Some(s) = self.shards.get(index) {
            s.store(serving, Ordering::Release);
        }
    }

    /// The functions the configuration names; each starts as compiling.
    pub fn expect_functions<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut f = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        f.clear();
        f.extend(
            names
                .into_iter()
                .map(|n| (n.to_owned(), FunctionState::Compiling)),
        );
        publish_counts(&f);
    }

    /// A configured function compiled (or failed to, with the reason).
    pub fn set_function(&self, name: &str, state: FunctionState) {
        let mut f = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        match f.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = state,
            None => f.push((name.to_owned(), state)),
        }
        publish_counts(&f);
    }

    /// What readiness still waits for; empty when ready.
    pub fn waiting_for(&self) -> Vec<String> {
        let mut out = Vec::new();
        let down: Vec<String> = self
            .shards
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.load(Ordering::Acquire))
            .map(|(i, _)| i.to_string())
            .collect();
        if !down.is_empty() {
            out.push(format!("shard(s) {} not serving", down.join(", ")));
        }
        let f = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        for (name, state) in f.iter() {
            match state {
                FunctionState::Ready => {}
                FunctionState::Compiling => out.push(format!("function {name:?} still compiling")),
                FunctionState::Failed(why) => {
                    out.push(format!("function {name:?} failed to compile: {why}"))
                }
            }
        }
        out
    }
}

fn publish_counts(f: &[(String, FunctionState)]) {
    let ready = f.iter().filter(|(_, s)| *s == FunctionState::Ready).count();
    crate::metrics::set_functions_compiled(ready, f.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_when_every_shard_serves_and_every_function_compiled() {
        let h = Health::new(2);
        assert_eq!(h.waiting_for(), vec!["shard(s) 0, 1 not serving"]);
        h.set_shard_serving(0, true);
        h.set_shard_serving(1, true);
        h.set_shard_serving(7, true); // no such shard: ignored
        assert!(h.waiting_for().is_empty());
        h.expect_functions(["a", "b"]);
        assert_eq!(h.waiting_for().len(), 2);
        h.set_function("a", FunctionState::Ready);
        h.set_function("b", FunctionState::Failed("bad magic".into()));
        assert_eq!(
            h.waiting_for(),
            vec!["function \"b\" failed to compile: bad magic"]
        );
        h.set_function("b", FunctionState::Ready);
        assert!(h.waiting_for().is_empty());
        h.set_shard_serving(1, false);
        assert_eq!(h.waiting_for(), vec!["shard(s) 1 not serving"]);
    }
}
