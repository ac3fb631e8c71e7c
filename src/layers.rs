//! The layer rule as a test: folders are layers, and a file may name
//! (`crate::…`) only its own layer or one below it. The order is written
//! out here, top to bottom; a new top-level module must be placed in it.

use std::path::{Path, PathBuf};

/// Top to bottom. `cli` parses flags and talks to a running service;
/// `app` wires one process; `grpc` is the transport; `service` runs the
/// operations; `outbox` relays what they wrote; `store` is the SQL;
/// `telemetry` logs and measures; `domain` holds the types every layer
/// shares; `crypto` the keys; `pb` the generated code.
const LAYERS: &[&str] = &["cli", "app", "grpc", "service", "outbox", "store", "telemetry", "domain", "crypto", "pb"];

/// Upward imports not yet removed, each `(file, module it names)`, with the
/// reason it is still there. The list only shrinks (it is empty now: keep
/// it so).
const KNOWN: &[(&str, &str)] = &[];

fn layer_of(path: &Path, src: &Path) -> Option<usize> {
    let rel = path.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    LAYERS.iter().position(|l| *l == name)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every top-level module a `crate::` path in `text` names, including the
/// members of `use crate::{a, b::c}` groups.
fn named_modules(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let preceded = rest[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        rest = &rest[at + "crate::".len()..];
        if preceded {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                names.push(name);
            }
        } else {
            names.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    names
}

#[test]
fn dependencies_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let Some(own) = layer_of(file, &src) else { continue };
        let text = std::fs::read_to_string(file).expect("readable source");
        let rel = file.strip_prefix(&src).expect("under src").to_string_lossy().into_owned();
        for name in named_modules(&text) {
            let Some(target) = LAYERS.iter().position(|l| *l == name) else { continue };
            if target < own && !KNOWN.contains(&(rel.as_str(), name.as_str())) {
                upward.push(format!("{rel} (layer {}) names crate::{name}", LAYERS[own]));
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(upward.is_empty(), "imports that point up a layer:\n{}", upward.join("\n"));
}

#[test]
fn every_top_level_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in std::fs::read_dir(&src).expect("src") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if ["lib.rs", "main.rs", "layers.rs", "bin"].contains(&name.as_str()) {
            continue;
        }
        assert!(layer_of(&path, &src).is_some(), "src/{name} is in no layer (add it to LAYERS)");
    }
}

#[test]
fn group_imports_are_read() {
    assert_eq!(named_modules("use crate::{app, store::x};\nlet y = crate::pb::X;"), ["app", "store", "pb"]);
}

/// The domain's types carry no database mapping: no sqlx derives or
/// attributes and no sqlx trait impls (rows and Postgres types are mapped in
/// `store`, `store::rows`). `domain::error` may name `sqlx::Error`: database
/// errors stay typed to the edge, where they are classified once.
#[test]
fn the_domain_has_no_sqlx_derives() {
    let domain = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain");
    let mut files = Vec::new();
    rust_files(&domain, &mut files);
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            let mapping = ["sqlx::FromRow", "sqlx::Type", "sqlx::Encode", "sqlx::Decode", "PgHasArrayType", "#[sqlx("];
            if mapping.iter().any(|m| line.contains(m)) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "database mapping in the domain (move it to store::rows):\n{}", found.join("\n"));
}

/// Constraint names are the store's business: the store says what a
/// violation means (`graph::is_redeem_race`, `waitlist::is_join_race`,
/// `waves::is_erased_recipient`), and the layers above ask it.
#[test]
fn only_the_store_names_constraints() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !f.starts_with(src.join("store"))) {
        let text = std::fs::read_to_string(file).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            let named = ["_key\"", "_fkey\"", "_pkey\"", "_check\"", "is_constraint_violation"];
            if named.iter().any(|m| line.contains(m)) && !line.contains("let named = [") {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "constraint names outside the store (give the store a predicate):\n{}", found.join("\n"));
}
