//! `lapse sim run` through the binary: a report on a passing run, and a
//! malformed scenario file refused with its line (exit 3), an unknown
//! scenario as bad usage (exit 2); a broken invariant exits 7.

use std::process::Command;

fn lapse() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lapse"))
}

#[test]
fn a_run_prints_a_table_and_writes_a_report_and_a_picture() {
    let report = tempfile::tempdir().unwrap();
    let output = lapse()
        .args(["sim", "run", "leader-crash", "--seed", "2", "--report"])
        .arg(report.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("leader-crash"), "{stdout}");
    assert!(stdout.contains("p99 ms"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["runs"][0]["seed"], 2);
    assert_eq!(json["runs"][0]["passed"], true);
    assert!(
        json["scenarios"][0]["propagation_samples"]
            .as_u64()
            .unwrap()
            > 0
    );
    let svg = std::fs::read_to_string(report.path().join("leader-crash-propagation.svg")).unwrap();
    assert!(svg.starts_with("<svg"));
}

#[test]
fn a_malformed_scenario_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "name = \"bad\"\nduration_s = 10\nsettle_s = 5\n\n[topology]\nregions = [{ name = \"eu\", voters = \"three\" }]\n",
    )
    .unwrap();
    let output = lapse().args(["sim", "run"]).arg(&path).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(3),
        "a malformed file is invalid input"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml:6:"),
        "the error should name line 6: {stderr}"
    );

    let output = lapse()
        .args(["sim", "run", "no-such-scenario"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "an unknown scenario is bad usage"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("leader-partition"),
        "known names listed: {stderr}"
    );
}
