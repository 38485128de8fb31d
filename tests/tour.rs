//! The README's tour, as written: every shell block of "A short tour" (but
//! "Running brokers yourself", whose addresses are examples) runs in order
//! in one shell against `lapse dev`, with `cargo run --` standing for the
//! built binary. Every command must succeed, and the verifier must accept
//! the tour's credential (200) before it is revoked and refuse it (403)
//! after `revoke credential --wait all` returns; in the agents section, a
//! tool's delegated credential is accepted, then refused with the
//! executor's once the planner's credential is revoked.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The shell blocks of the README's tour, in order.
fn tour_blocks(readme: &str) -> Vec<String> {
    let start = readme.find("## A short tour").expect("a tour section");
    let end = start
        + readme[start..]
            .find("\n## Simulating")
            .expect("the next section");
    let mut blocks = Vec::new();
    let mut skipping = false;
    let mut block: Option<String> = None;
    for line in readme[start..end].lines() {
        if line.starts_with("### ") {
            skipping = line.starts_with("### Running brokers yourself");
        }
        match (&mut block, line) {
            (None, "```sh") => block = Some(String::new()),
            (Some(text), "```") => {
                if !skipping && text.trim() != "cargo run -- dev" {
                    blocks.push(std::mem::take(text));
                }
                block = None;
            }
            (Some(text), line) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn the_readme_tour_runs_as_written_and_shows_a_revocation_taking_effect() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let blocks = tour_blocks(&readme);
    assert!(blocks.len() >= 3, "tour blocks: {blocks:#?}");
    let binary = env!("CARGO_BIN_EXE_lapse");
    let script: String = blocks
        .iter()
        .map(|b| {
            b.replace("cargo run -q --", binary)
                .replace("cargo run --", binary)
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!script.contains("cargo "), "{script}");

    // `lapse dev` in the folder the tour runs in, on the README's ports.
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Command::new(binary)
        .arg("dev")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut printed = String::new();
    while !printed.contains("Ctrl-C stops the cluster") {
        assert!(
            Instant::now() < deadline,
            "lapse dev did not start: {printed}"
        );
        match lines.next() {
            Some(Ok(line)) => {
                printed.push_str(&line);
                printed.push('\n');
            }
            _ => panic!("lapse dev ended: {printed}"),
        }
    }
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});

    let output = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}"
        ))
        .current_dir(dir.path())
        .env_remove("LAPSE_BROKER")
        .env_remove("LAPSE_TOKEN")
        .output()
        .unwrap();
    let _ = Command::new("kill")
        .args(["-INT", &dev.id().to_string()])
        .status();
    let _ = dev.wait();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the tour failed:\n--- script\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let codes: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| *l == "200" || *l == "403")
        .collect();
    // The edge section: accepted, then refused once revoked; the agents
    // section: the tool's credential accepted, then it and the executor's
    // refused once the planner's is revoked.
    assert_eq!(
        codes,
        ["200", "403", "200", "403", "403"],
        "the verifiers should accept, then refuse:\n{stdout}\n{stderr}"
    );
    // `lapse propagation` tells the truth: its largest delay is the one
    // revocation made while the verifiers were subscribed, no more than
    // what `revoke --wait` saw (both run from the commit stamp on the
    // cluster's clock; --wait's to when it saw every verifier hold the
    // epoch, so however late the wait began), not the seconds since
    // revocations made before the verifiers started.
    let waited_ms: f64 = stdout
        .lines()
        .find_map(|l| {
            let rest = l.split_once("verifiers (")?.1;
            rest.split(" ms after the commit").next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no --wait time in:\n{stdout}"));
    let all_row: Vec<f64> = stdout
        .lines()
        .find(|l| l.starts_with("(all)"))
        .unwrap_or_else(|| panic!("no propagation table in:\n{stdout}"))
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    let (samples, max_ms) = (all_row[1], all_row[4]);
    assert_eq!(samples, 3.0, "one sample per verifier:\n{stdout}");
    assert!(
        max_ms <= waited_ms + 100.0,
        "propagation max {max_ms} ms, but --wait saw {waited_ms} ms:\n{stdout}"
    );

    // The retried revocation was applied once: the second answer is the
    // first, marked as a duplicate.
    assert!(
        stdout.contains("duplicate") || stderr.contains("duplicate"),
        "{stdout}\n{stderr}"
    );
}
