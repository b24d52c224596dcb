//! The layering of ARCHITECTURE.md, checked: no module imports from a layer
//! above its own (entry > faces > services > core), and the two faces share
//! only `web`.

use std::collections::BTreeSet;
use std::path::Path;

fn layer(module: &str) -> Option<u8> {
    Some(match module {
        "config" | "store" | "shared" | "telemetry" | "run" | "check" | "util" => 0,
        "backup" | "ops" => 1,
        "web" | "http" | "console" => 2,
        "cli" | "main" => 3,
        _ => return None,
    })
}

/// Top-level modules named by `crate::` paths in `text` (including `use crate::{a, b}`).
fn uses(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut violations = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs");
        let Some(own) = layer(module) else { continue };
        let text = std::fs::read_to_string(f).unwrap();
        for used in uses(&text) {
            let Some(l) = layer(&used) else { continue };
            // Upward, or sideways between the two faces (they share only `web`).
            let sideways = own == 2 && l == 2 && used != module && used != "web";
            if l > own || sideways {
                violations.push(format!("{} uses crate::{used}", rel.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "upward imports:\n{}",
        violations.join("\n")
    );
    // The checker itself sees what it must see.
    assert!(uses("use crate::{http::x, store};").contains("http"));
    assert_eq!(layer("http"), Some(2));
}
