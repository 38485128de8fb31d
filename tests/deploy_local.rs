//! `deploy/local/run.sh` as CI's smoke test: a real cluster of `lapse`
//! processes (three voters, a learner in a second region, verifiers in
//! both) issues, verifies, revokes and stops; then every metric the Grafana
//! dashboard in `deploy/grafana/` charts is checked against the scrapes the
//! run saved.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Ports the script uses from its base port on.
const PORTS: u16 = 24;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A base port whose whole block is free now, away from the fixed ports of
/// other tests (7400-7700) and below the kernel's ephemeral range.
fn free_block() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    for attempt in 0..200u64 {
        let base = 20_000 + ((seed.wrapping_mul(7919) + attempt * 997) % 12_000) as u16;
        if (base..base + PORTS).all(free) {
            return base;
        }
    }
    panic!("no block of {PORTS} free loopback ports between 20000 and 32000");
}

/// Metric names in the sample lines of a Prometheus text scrape.
fn sampled_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Every `lapse_*` name in the dashboard's queries (panel `expr`s and the
/// template variables' `query` and `definition`), as written.
fn dashboard_names(dashboard: &serde_json::Value, out: &mut BTreeSet<String>) {
    match dashboard {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                if matches!(key.as_str(), "expr" | "query" | "definition")
                    && let Some(expr) = value.as_str()
                {
                    let mut rest = expr;
                    while let Some(at) = rest.find("lapse_") {
                        let name: String = rest[at..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        rest = &rest[at + name.len()..];
                        out.insert(name);
                    }
                } else {
                    dashboard_names(value, out);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_names(v, out)),
        _ => {}
    }
}

fn check_dashboard(scrapes: &Path) {
    let mut sampled = BTreeSet::new();
    for entry in std::fs::read_dir(scrapes).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        sampled.extend(sampled_names(&text));
    }
    assert!(
        sampled.contains("lapse_propagation_delay_seconds_bucket")
            && sampled.contains("lapse_verifier_fresh"),
        "the scrapes lack the broker's or the verifier's metrics: {sampled:?}"
    );
    let path = root().join("deploy/grafana/lapse.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard JSON");
    let mut used = BTreeSet::new();
    dashboard_names(&dashboard, &mut used);
    assert!(used.len() >= 10, "the dashboard charts only {used:?}");
    let missing: Vec<_> = used.difference(&sampled).collect();
    assert!(
        missing.is_empty(),
        "deploy/grafana/lapse.json charts metrics no broker or verifier exposes: {missing:?}"
    );
}

#[test]
fn local_cluster_issues_verifies_revokes_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("cluster");
    let output = dir.path().join("run.log");
    let base = free_block();
    let log = std::fs::File::create(&output).unwrap();
    let started = Instant::now();
    let mut script = Command::new("bash")
        .arg(root().join("deploy/local/run.sh"))
        .args(["--base-port", &base.to_string()])
        .arg(&work)
        .env("LAPSE_BIN", env!("CARGO_BIN_EXE_lapse"))
        .env_remove("LAPSE_CA")
        .env_remove("LAPSE_CERT")
        .env_remove("LAPSE_KEY")
        .env_remove("LAPSE_BROKER")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("bash runs deploy/local/run.sh");
    let limit = Duration::from_secs(150);
    let status = loop {
        if let Some(status) = script.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            // TERM lets the script's trap stop what it started.
            let _ = Command::new("kill")
                .args(["-TERM", &script.id().to_string()])
                .status();
            let grace = Instant::now();
            while script.try_wait().unwrap().is_none() && grace.elapsed() < Duration::from_secs(15)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = script.kill();
            let _ = script.wait();
            panic!(
                "run.sh took over {limit:?}:\n{}",
                std::fs::read_to_string(&output).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&output).unwrap();
    println!("{text}\nrun.sh took {:?}", started.elapsed());
    assert!(status.success(), "run.sh failed ({status}):\n{text}");
    assert!(text.contains("== smoke test passed"), "{text}");
    assert!(text.contains("== stopping 6 processes"), "{text}");
    // Torn down: every port is free again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(base..base + PORTS).all(free) {
        assert!(
            Instant::now() < deadline,
            "a port of {base}..{} is still held after run.sh stopped",
            base + PORTS
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    check_dashboard(&work.join("scrapes"));
}
