//! Races on the model registry from several threads of one process, for the
//! tests that run two of these processes at once:
//!
//! ```text
//! registry_race STORE promote MODEL FIRST THREADS   # thread i promotes v(FIRST + i) to production, expecting nobody
//! registry_race STORE register MODEL FIRST THREADS  # thread i registers the version of artifact FIRST + i
//! ```
//!
//! `STORE` is a SQLite file or a `postgres://` URL. Each thread prints one
//! JSON line: `{"moved": bool, "to": n}`, `{"conflict": holder}`, `{"version": n}` or
//! `{"error": "..."}`.

use std::sync::{Arc, Barrier};
use zenflow::ext::MetadataStore;
use zenflow::registry::{Expect, ModelRegistry, Promoted, Promotion, RegistryError};

fn open(store: &str) -> Arc<dyn MetadataStore> {
    if store.starts_with("postgres://") {
        Arc::new(zenflow::stacks::metadata::PostgresMetadataStore::open(store, Some(2)).expect("a PostgreSQL store"))
    } else {
        Arc::new(zenflow::stacks::SqliteMetadataStore::open(store).expect("a SQLite store"))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, store, what, model, first, threads] = &args[..] else {
        eprintln!("usage: registry_race STORE promote|register MODEL FIRST THREADS");
        std::process::exit(2);
    };
    let first: i64 = first.parse().expect("FIRST is a number");
    let threads: usize = threads.parse().expect("THREADS is a number");
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (store, what, model, start) = (open(store), what.clone(), model.clone(), start.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                let registry: &dyn ModelRegistry = store.registry().expect("a registry");
                start.wait();
                let line = rt.block_on(async {
                    let n = first + i as i64;
                    match what.as_str() {
                        "promote" => {
                            let ci = zenflow::stacks::local::ci_from_env();
                            let p = Promotion::new(&model, "production", Some(n), Expect::Nobody, &ci);
                            match registry.promote(&p).await {
                                Ok(Promoted::Moved(e)) => serde_json::json!({"moved": true, "to": e.to}),
                                Ok(Promoted::AlreadyHeld) => serde_json::json!({"moved": false, "to": n}),
                                Err(RegistryError::Conflict { holder, .. }) => {
                                    serde_json::json!({"conflict": holder.map(|(v, _)| v)})
                                }
                                Err(e) => serde_json::json!({"error": e.to_string()}),
                            }
                        }
                        _ => {
                            // The artifact version recorded as number `n` of `race.art.output`.
                            let versions =
                                store.artifact_versions(Some("race.art.output"), 10_000).await.expect("versions");
                            let a = versions.iter().find(|v| v.version == n).expect("the artifact exists");
                            let mut v = zenflow::conformance::registry::version_of(&model, &a.run_id, a);
                            v.step_run = None;
                            match registry.register(&v).await {
                                Ok(v) => serde_json::json!({"version": v.version}),
                                Err(e) => serde_json::json!({"error": e.to_string()}),
                            }
                        }
                    }
                });
                rt.block_on(store.flush()).expect("flush");
                line
            })
        })
        .collect();
    for h in handles {
        println!("{}", h.join().expect("a thread panicked"));
    }
}
