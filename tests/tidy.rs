//! Structural rules that keep the architecture true, checked on every run.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !path.ends_with("target")
                && !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn dependencies(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    value
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn pure_crates_do_no_io() {
    let forbidden = [
        "tokio", "tonic", "sled", "openraft", "prost", "rand", "futures",
    ];
    for name in ["credential", "ledger", "filter"] {
        let deps = dependencies(&root().join("crates").join(name).join("Cargo.toml"));
        for dep in &deps {
            assert!(
                !forbidden.contains(&dep.as_str()),
                "crates/{name} is pure but depends on {dep}"
            );
        }
    }
}

#[test]
fn dependencies_point_one_way() {
    let may_use = [
        ("credential", vec![]),
        ("filter", vec![]),
        ("ledger", vec!["lapse-credential", "lapse-filter"]),
        ("storage", vec!["lapse-ledger", "lapse-credential"]),
        ("wire", vec![]),
        ("metrics", vec![]),
        ("pki", vec![]),
        (
            "broker",
            vec![
                "lapse-credential",
                "lapse-filter",
                "lapse-ledger",
                "lapse-metrics",
                "lapse-pki",
                "lapse-storage",
                "lapse-wire",
            ],
        ),
        (
            "verifier",
            vec![
                "lapse-credential",
                "lapse-filter",
                "lapse-metrics",
                "lapse-pki",
                "lapse-wire",
            ],
        ),
    ];
    for (name, allowed) in may_use {
        for dep in dependencies(&root().join("crates").join(name).join("Cargo.toml")) {
            if dep.starts_with("lapse-") {
                assert!(
                    allowed.contains(&dep.as_str()),
                    "crates/{name} must not depend on {dep}"
                );
            }
        }
    }
}

#[test]
fn every_source_file_says_what_it_is_for_and_leaves_no_debugging_behind() {
    let mut files = Vec::new();
    for dir in ["src", "crates", "tests", "benches"] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() > 10);
    let (dbg, todo) = (concat!("dbg", "!("), concat!("todo", "!("));
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let shown = file.strip_prefix(root()).unwrap().display();
        assert!(
            text.starts_with("//!"),
            "{shown} should open with a //! line saying what it is for"
        );
        assert!(!text.contains(dbg), "{shown} contains a leftover dbg");
        assert!(!text.contains(todo), "{shown} contains a todo");
    }
}

#[test]
fn only_the_broker_api_knows_grpc_and_domain_code_returns_the_broker_error() {
    let src = root().join("crates/broker/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let grpc_layer = |path: &Path| {
        let relative = path.strip_prefix(&src).unwrap();
        relative.starts_with("api")
            || relative.starts_with("node")
            || relative == Path::new("link.rs")
    };
    let string_error = ["Result<", ", String>"];
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let shown = file.strip_prefix(root()).unwrap().display();
        if !grpc_layer(&file) {
            for forbidden in ["tonic::Status", "use tonic", "Status::"] {
                assert!(
                    !text.contains(forbidden),
                    "{shown} is domain code but uses {forbidden:?}: return a BrokerError and let api/ map it"
                );
            }
        }
        for line in text.lines() {
            assert!(
                !(line.contains(string_error[0]) && line.contains(string_error[1])),
                "{shown} returns a Result with a String error: {line}"
            );
        }
    }
}

/// What `cargo tree` says the `lapse` binary links, as crate names.
fn linked_crates(features: &[&str]) -> Vec<String> {
    let output = std::process::Command::new(env!("CARGO"))
        .current_dir(root())
        .args([
            "tree",
            "--offline",
            "-p",
            "lapse",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(features)
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn the_production_binary_does_not_link_the_simulator() {
    let production = linked_crates(&["--no-default-features"]);
    assert!(
        production.iter().any(|c| c == "lapse-broker"),
        "{production:?}"
    );
    for simulator in ["turmoil", "lapse-sim"] {
        assert!(
            !production.iter().any(|c| c == simulator),
            "{simulator} is linked"
        );
    }
    // The check can fail: with the default `sim` feature both are there.
    let default = linked_crates(&[]);
    assert!(default.iter().any(|c| c == "turmoil"), "{default:?}");
}
