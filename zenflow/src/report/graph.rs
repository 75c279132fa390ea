//! The plan as a diagram: a mermaid flowchart (styled by step status) or
//! graphviz dot.

use super::StepReport;
use std::fmt::Write as _;
use zenflow_core::Plan;

/// The plan as a mermaid flowchart; with step reports, nodes are styled by status.
pub fn mermaid(plan: &Plan, steps: Option<&[StepReport]>) -> String {
    let mut out = String::from("flowchart LR\n");
    for s in &plan.steps {
        let label = if s.id == s.step { s.id.clone() } else { format!("{}<br/><small>{}</small>", s.id, s.step) };
        let _ = writeln!(out, "  {}[\"{}\"]", node_id(&s.id), label.replace('"', "'"));
    }
    for s in &plan.steps {
        for input in &s.inputs {
            let mut sources: Vec<&str> = input.from.iter().map(|r| r.step.as_str()).collect();
            sources.dedup();
            for from in sources {
                let _ = writeln!(out, "  {} -->|{}| {}", node_id(from), input.name, node_id(&s.id));
            }
        }
        for a in &s.after {
            let _ = writeln!(out, "  {} -.-> {}", node_id(a), node_id(&s.id));
        }
    }
    if let Some(steps) = steps {
        out.push_str(
            "  classDef completed fill:#d4edda,stroke:#28a745\n  classDef cached fill:#e2e3e5,stroke:#6c757d\n  \
             classDef failed fill:#f8d7da,stroke:#dc3545\n  classDef skipped fill:#fff3cd,stroke:#ffc107\n",
        );
        for s in steps {
            if matches!(s.status.as_str(), "completed" | "cached" | "failed" | "skipped") {
                let _ = writeln!(out, "  class {} {}", node_id(&s.id), s.status);
            }
        }
    }
    out
}

/// The plan as Graphviz dot.
pub fn dot(plan: &Plan) -> String {
    let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box];\n", plan.pipeline.replace('"', "'"));
    for s in &plan.steps {
        let _ = writeln!(out, "  \"{}\" [label=\"{}\\n({})\"];", s.id, s.id, s.step);
    }
    for s in &plan.steps {
        for input in &s.inputs {
            for r in &input.from {
                let _ = writeln!(out, "  \"{}\" -> \"{}\" [label=\"{}\"];", r.step, s.id, input.name);
            }
        }
        for a in &s.after {
            let _ = writeln!(out, "  \"{a}\" -> \"{}\" [style=dashed];", s.id);
        }
    }
    out.push_str("}\n");
    out
}

/// Mermaid node ids must be plain words; invocation ids are, but keep it safe.
fn node_id(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}
