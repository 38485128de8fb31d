//! The command line as a newcomer meets it, through real `lapse`
//! processes: exit codes and what the help says about them, refusals made
//! before any call, messages that say what to do next, a closed pipe, human
//! times in text output, `sim run` reports, revoking the credential you
//! hold, `--wait` with no verifiers, what a verifier says it follows, join
//! tokens kept off the command line, and key files private whatever the
//! umask.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use support::edge::VerifierProcess;
use support::*;

const WORKLOAD: &str = "spiffe://example.org/payments";
const POLICY: &str = r#"
permit(principal == Workload::"spiffe://example.org/payments",
       action == Action::"issue", resource == Tenant::"acme")
when { ["payments:read"].containsAll(context.scopes)
       && ["billing"].containsAll(context.audiences)
       && context.ttl_seconds <= 900 };
"#;

/// A scenario small enough to simulate in well under a second.
const TINY_SCENARIO: &str = r#"
name = "tiny"
description = "One broker and one verifier for a few seconds."
duration_s = 3
settle_s = 3

[topology]
regions = [{ name = "eu", voters = 1, verifiers = 1 }]
"#;

/// Wait for `child` to exit (failing, after killing it, if it has not
/// within `seconds`), then collect what it wrote to its pipes.
fn finish(mut child: Child, seconds: u64, what: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {seconds} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = Vec::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_end(&mut stdout);
    }
    let mut stderr = Vec::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_end(&mut stderr);
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Run `lapse args` with standard output a pipe whose reader is closed at
/// once, as `lapse ... | head` leaves it; what it wrote to standard error.
fn with_closed_stdout(
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> (Output, String) {
    let mut command = lapse();
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn lapse");
    drop(child.stdout.take());
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // The command may have finished without reading it all.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = finish(child, 60, &format!("lapse {args:?}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stderr)
}

fn assert_quiet_exit(args: &[&str], out: &Output, stderr: &str) {
    assert!(
        !stderr.contains("panicked"),
        "lapse {args:?} panicked on a closed pipe: {stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "lapse {args:?} with a closed stdout: {stderr}"
    );
}

/// `lapse args` with `input` on standard input, against `broker`, with no
/// admin token from the environment.
fn run(args: &[&str], input: &[u8], broker: &str, dir: &Path) -> Output {
    let mut child = lapse()
        .args(args)
        .env("LAPSE_BROKER", broker)
        .env_remove("LAPSE_TOKEN")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lapse");
    let mut pipe = child.stdin.take().expect("stdin");
    // The command may refuse without reading it all.
    let _ = pipe.write_all(input);
    drop(pipe);
    finish(child, 60, &format!("lapse {args:?}"))
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_help_lists_every_exit_code_and_what_a_secret_hash_covers() {
    let help = lapse().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for line in [
        "  0  success",
        "  1  failed here: a file could not be written",
        "  2  bad command-line usage",
        "  3  refused",
        "  4  not authorised",
        "  5  unavailable",
        "  6  revoked, but --wait could not confirm",
        "  7  lapse sim run: a simulation run broke an invariant",
    ] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
    let secret = lapse()
        .args(["revoke", "secret", "--help"])
        .output()
        .unwrap();
    let secret = String::from_utf8_lossy(&secret.stdout);
    assert!(secret.contains("except one trailing newline"), "{secret}");
    let credential = lapse()
        .args(["revoke", "credential", "--help"])
        .output()
        .unwrap();
    let credential = String::from_utf8_lossy(&credential.stdout);
    assert!(
        credential.contains("status.status_list.idx") && credential.contains("`-` reads"),
        "{credential}"
    );
    let help_of = |what: &str| {
        let out = lapse().args(["revoke", what, "--help"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for what in ["index", "chain"] {
        let help = help_of(what);
        assert!(
            help.contains("every credential delegated from it"),
            "revoke {what}: {help}"
        );
    }
    let task = help_of("task");
    assert!(
        task.contains("<TENANT> <TASK_ID>")
            && task.contains("1 to 128 bytes")
            && task.contains("--wait"),
        "{task}"
    );
}

#[test]
fn bad_input_is_refused_before_any_call() {
    // Nothing listens here: a command that got as far as calling a broker
    // would exit 5, not 3.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();

    for input in [&b""[..], b"\n", b" \t\r\n"] {
        let out = run(
            &["revoke", "secret", "--stdin"],
            input,
            &nowhere,
            dir.path(),
        );
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(3), "{input:?}: {stderr}");
        assert!(stderr.contains("empty or only whitespace"), "{stderr}");
    }

    let long_task = "t".repeat(129);
    for task in ["run 42", "run;42", &long_task, ""] {
        let out = run(&["revoke", "task", "acme", task], b"", &nowhere, dir.path());
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(3), "{task:?}: {stderr}");
        assert!(
            stderr.contains("task id must be 1 to 128 bytes"),
            "{stderr}"
        );
    }

    let not_a_jwt = dir.path().join("not-a-jwt.txt");
    std::fs::write(&not_a_jwt, "hello\n").unwrap();
    let no_claim = dir.path().join("no-claim.jwt");
    // A well-formed JWT whose payload is {"sub":"x"}.
    std::fs::write(&no_claim, "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln\n").unwrap();
    for (file, reason) in [
        (&not_a_jwt, "not a JWT"),
        (&no_claim, "no status.status_list.idx claim"),
    ] {
        let out = run(
            &["revoke", "credential", file.to_str().unwrap()],
            b"",
            &nowhere,
            dir.path(),
        );
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains(reason), "{stderr}");
    }
    let from_stdin = run(
        &["revoke", "credential", "-"],
        b"a.b\n",
        &nowhere,
        dir.path(),
    );
    assert_eq!(from_stdin.status.code(), Some(3));
    assert!(stderr_of(&from_stdin).contains("standard input: not a JWT"));

    // A file that is not there is bad usage, not a refusal.
    let missing = run(
        &["revoke", "credential", "no-such-file.jwt"],
        b"",
        &nowhere,
        dir.path(),
    );
    let stderr = stderr_of(&missing);
    assert_eq!(missing.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot read no-such-file.jwt"), "{stderr}");

    // Valid input gets as far as the broker, and the failure says where
    // brokers come from.
    let unreachable = run(
        &["revoke", "secret", "--stdin"],
        b"hunter2\n",
        &nowhere,
        dir.path(),
    );
    let stderr = stderr_of(&unreachable);
    assert_eq!(unreachable.status.code(), Some(5), "{stderr}");
    for hint in ["lapse dev", "--broker", "LAPSE_BROKER"] {
        assert!(stderr.contains(hint), "{hint} missing: {stderr}");
    }
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let args = ["sim", "list"];
    let (out, stderr) = with_closed_stdout(&args, &[], None);
    assert_quiet_exit(&args, &out, &stderr);

    // Output that only comes after a simulation has run: the reader is
    // certainly gone by then.
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("tiny.toml");
    std::fs::write(&scenario, TINY_SCENARIO).unwrap();
    let report = dir.path().join("report");
    let args = [
        "sim",
        "run",
        scenario.to_str().unwrap(),
        "--seed",
        "1",
        "--report",
        report.to_str().unwrap(),
    ];
    let (out, stderr) = with_closed_stdout(&args, &[], None);
    assert_quiet_exit(&args, &out, &stderr);
}

#[test]
fn sim_reports_go_into_the_report_directory_under_the_scenario_name() {
    let dir = tempfile::tempdir().unwrap();
    let scenarios = dir.path().join("scenarios");
    std::fs::create_dir(&scenarios).unwrap();
    let scenario = scenarios.join("a-file-name.toml");
    std::fs::write(&scenario, TINY_SCENARIO).unwrap();
    let report = dir.path().join("report");
    let child = lapse()
        .args(["sim", "run"])
        .arg(&scenario)
        .args(["--seed", "1", "--report"])
        .arg(&report)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = finish(child, 120, "lapse sim run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");

    // Named by the scenario's name, not its path; everything in --report.
    assert!(report.join("tiny-propagation.svg").is_file(), "{stdout}");
    assert!(report.join("report.json").is_file());
    let beside: Vec<_> = std::fs::read_dir(&scenarios)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        beside,
        vec!["a-file-name.toml"],
        "nothing beside the scenario"
    );
    assert!(stdout.contains("tiny"), "{stdout}");
    assert!(!stdout.contains("a-file-name"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["scenarios"][0]["scenario"], "tiny", "{json}");

    // Standard error is a pipe here, so no progress bar frames.
    assert!(
        !stderr.contains('\r'),
        "progress frames in a pipe: {stderr:?}"
    );
}

/// Issue a credential through the CLI's text output: (credential, status
/// index, what the CLI said on standard error).
fn issue_text(cluster: &TestCluster) -> (String, u64, String) {
    let token = cli_json(
        cluster,
        1,
        &[
            "join-token",
            "create",
            "--tenant",
            "acme",
            "--workload",
            WORKLOAD,
            "--json",
        ],
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = cluster.cli(
        1,
        &[
            "issue",
            "--join-token",
            &token,
            "--audience",
            "billing",
            "--scope",
            "payments:read",
            "--ttl",
            "10m",
        ],
    );
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    let index: u64 = stderr
        .split("status index ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no status index in {stderr:?}"));
    let credential = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (credential, index, stderr)
}

/// Poll `check` until it holds, failing after `seconds`.
async fn eventually(seconds: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {seconds} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_cluster() {
    let cluster = TestCluster::start(3, FAST_RAFT);
    let leader = cluster.wait_for_leader().await;
    wait_for_keys(&cluster, 3).await;
    set_policy(&cluster, "acme", POLICY);
    let broker = cluster.address(1);
    let elsewhere = tempfile::tempdir().unwrap();

    // Without a token, the refusal says where a token comes from; with a
    // wrong one, which token was refused.
    let no_token = run(&["revoke", "index", "1"], b"", &broker, elsewhere.path());
    let stderr = stderr_of(&no_token);
    assert_eq!(no_token.status.code(), Some(4), "{stderr}");
    for place in ["--token", "LAPSE_TOKEN", ".lapse-dev/admin-token"] {
        assert!(stderr.contains(place), "{place} missing: {stderr}");
    }
    let wrong = run(
        &["revoke", "index", "1", "--token", "not-the-admin-token"],
        b"",
        &broker,
        elsewhere.path(),
    );
    let stderr = stderr_of(&wrong);
    assert_eq!(wrong.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("the token given by --token or LAPSE_TOKEN"),
        "{stderr}"
    );

    // Text output shows times as RFC 3339 and how far off.
    let (credential, index, said) = issue_text(&cluster);

    // A join token on the command line is in the process list for every
    // local user to read; from standard input or a file it never is.
    let join_token = || {
        cli_json(
            &cluster,
            1,
            &[
                "join-token",
                "create",
                "--tenant",
                "acme",
                "--workload",
                WORKLOAD,
                "--json",
            ],
        )["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let issue_args = [
        "--audience",
        "billing",
        "--scope",
        "payments:read",
        "--json",
    ];
    let token = join_token();
    let mut child = lapse()
        .args(["issue", "--join-token", "-"])
        .args(issue_args)
        .env("LAPSE_BROKER", &broker)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let command_line = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    assert!(!String::from_utf8_lossy(&command_line).contains(&token));
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(format!("{token}\n").as_bytes()).unwrap();
    drop(pipe);
    let from_stdin = finish(child, 60, "issue --join-token -");
    assert!(from_stdin.status.success(), "{}", stderr_of(&from_stdin));
    let token = join_token();
    let token_file = elsewhere.path().join("join.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let from_file = cluster.cli(
        1,
        &[
            &["issue", "--join-token-file", token_file.to_str().unwrap()][..],
            &issue_args[..],
        ]
        .concat(),
    );
    assert!(from_file.status.success(), "{}", stderr_of(&from_file));
    // Spent: the same token again is refused, and not repeated.
    let again = cluster.cli(
        1,
        &[
            &["issue", "--join-token-file", token_file.to_str().unwrap()][..],
            &issue_args[..],
        ]
        .concat(),
    );
    assert_eq!(again.status.code(), Some(3), "{}", stderr_of(&again));
    assert!(stderr_of(&again).contains("join-token-spent"));
    assert!(!stderr_of(&again).contains(&token), "{}", stderr_of(&again));
    assert!(said.contains("Z, in 10 min"), "{said}");
    let keys = cluster.cli(1, &["keys"]);
    let keys = String::from_utf8_lossy(&keys.stdout);
    assert!(
        keys.contains("valid until") && keys.contains("Z, in "),
        "{keys}"
    );

    // `--wait` with no verifier at all says so and exits 6 at once.
    let block = lease(&cluster, leader, 4).await;
    let out = cluster.cli(
        1,
        &[
            "revoke",
            "index",
            &block.start.to_string(),
            "--wait",
            "all",
            "--wait-timeout",
            "60s",
        ],
    );
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("no verifier is subscribed"), "{stderr}");

    // A verifier that cannot bind its HTTP port exits without subscribing.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_address = taken.local_addr().unwrap().to_string();
    let child = lapse()
        .args(["verifier", "--brokers", &broker, "--id", "cannot-bind"])
        .args(["--audience", "billing"])
        .args(["--http", &taken_address])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = finish(child, 30, "a verifier whose port is taken");
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen on"), "{stderr}");

    // A verifier that can: it says which broker it follows, by address
    // and id, and is the only one the cluster knows.
    let verifier = VerifierProcess::start(
        cluster.dir.path(),
        "edge",
        "eu",
        1,
        std::slice::from_ref(&broker),
        &[],
    );
    eventually(30, "the verifier reports broker 1", || {
        verifier.status()["edge"]["following_broker"]
            == serde_json::json!({"address": broker, "broker_id": 1})
    })
    .await;
    eventually(30, "the cluster lists the verifier", || {
        let report = cli_json(&cluster, 1, &["propagation", "--all", "--json"]);
        report["verifiers"]
            .as_array()
            .is_some_and(|all| all.iter().any(|v| v["verifier"] == "edge"))
    })
    .await;
    let report = cli_json(&cluster, 1, &["propagation", "--all", "--json"]);
    let names: Vec<&str> = report["verifiers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["verifier"].as_str())
        .collect();
    assert_eq!(names, vec!["edge"], "{report}");

    // Revoke the credential itself, as the README's tour does.
    let file = cluster.dir.path().join("credential.jwt");
    std::fs::write(&file, format!("{credential}\n")).unwrap();
    let revoked = cli_json(
        &cluster,
        1,
        &[
            "revoke",
            "credential",
            file.to_str().unwrap(),
            "--wait",
            "all",
            "--json",
        ],
    );
    assert_eq!(revoked["status_index"], index, "{revoked}");
    assert_eq!(revoked["propagated"]["verifiers"], 1, "{revoked}");
    let (valid, answers) = verifier.verify_all(&credential);
    assert_eq!(valid, 0, "{answers:?}");
    // It was that index: revoking it again, either way, is refused.
    let again = cluster.cli(1, &["revoke", "index", &index.to_string()]);
    let stderr = stderr_of(&again);
    assert_eq!(again.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("already-revoked"), "{stderr}");
    let mut child = lapse()
        .args(["revoke", "credential", "-"])
        .env("LAPSE_BROKER", &broker)
        .env("LAPSE_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(credential.as_bytes())
        .unwrap();
    let out = finish(child, 60, "lapse revoke credential -");
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));

    // The audit log in text shows times, not milliseconds.
    eventually(30, "the issuance reaches the audit log", || {
        let audit = cli_json(&cluster, 1, &["audit", "--tenant", "acme", "--json"]);
        audit["records"].as_array().is_some_and(|r| !r.is_empty())
    })
    .await;
    let records = cli_json(&cluster, 1, &["audit", "--tenant", "acme", "--json"]);
    let at_ms = records["records"][0]["at_ms"].as_u64().unwrap();
    let audit = cluster.cli(1, &["audit", "--tenant", "acme"]);
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.starts_with("20") && audit.contains("Z, ") && audit.contains("  broker "),
        "{audit}"
    );
    assert!(!audit.contains(&at_ms.to_string()), "{audit}");

    // A closed pipe is no panic, for a command that calls the cluster.
    let env = [
        ("LAPSE_BROKER", broker.as_str()),
        ("LAPSE_TOKEN", ADMIN_TOKEN),
    ];
    for args in [
        &["status"][..],
        &["audit", "--json"],
        &["propagation", "--all"],
    ] {
        let (out, stderr) = with_closed_stdout(args, &env, None);
        assert_quiet_exit(args, &out, &stderr);
    }
}

#[test]
fn admin_tokens_are_made_and_hashed_without_ever_being_printed() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ci.token");
    let out = lapse()
        .args(["admin-token", "create", "--name", "ci", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert_eq!(token.len(), 64);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let entry = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let printed = format!("{entry}{}", stderr_of(&out));
    assert!(
        !printed.contains(&token),
        "the token was printed: {printed}"
    );
    assert!(entry.starts_with("{ name = \"ci\", sha256 = \""), "{entry}");

    // `hash` gives the same entry for the token read from stdin.
    let mut child = lapse()
        .args(["admin-token", "hash", "--name", "ci"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\n").as_bytes())
        .unwrap();
    let hashed = child.wait_with_output().unwrap();
    assert!(hashed.status.success(), "{}", stderr_of(&hashed));
    assert_eq!(String::from_utf8_lossy(&hashed.stdout).trim(), entry);

    // No overwrite without --overwrite, bad names and short tokens are
    // refused (exit 3), and the file is unchanged.
    let again = lapse()
        .args(["admin-token", "create", "--name", "ci", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(3), "{}", stderr_of(&again));
    assert!(stderr_of(&again).contains("--overwrite"));
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    let bad = lapse()
        .args(["admin-token", "create", "--name", "c i", "--out"])
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(3), "{}", stderr_of(&bad));
    assert!(!dir.path().join("other").exists());
    let mut child = lapse()
        .args(["admin-token", "hash", "--name", "ci"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"short\n").unwrap();
    let short = child.wait_with_output().unwrap();
    assert_eq!(short.status.code(), Some(3), "{}", stderr_of(&short));
    assert!(!String::from_utf8_lossy(&short.stdout).contains("sha256"));
}

#[test]
fn a_join_token_from_standard_input_or_a_file_is_checked_before_any_call() {
    let dir = tempfile::tempdir().unwrap();
    let issue = ["issue", "--audience", "billing"];
    // Empty standard input, an empty file, a missing file, both ways at once.
    let empty = dir.path().join("empty.token");
    std::fs::write(&empty, "\n").unwrap();
    let missing = dir.path().join("missing.token");
    for (extra, input, code) in [
        (vec!["--join-token", "-"], &b""[..], 2),
        (vec!["--join-token-file", empty.to_str().unwrap()], b"", 2),
        (vec!["--join-token-file", missing.to_str().unwrap()], b"", 1),
        (
            vec![
                "--join-token",
                "lapse-join-x",
                "--join-token-file",
                empty.to_str().unwrap(),
            ],
            b"",
            2,
        ),
        (vec!["--join-token", "-"], &[b'x'; 5000][..], 1),
    ] {
        let args = [&issue[..], &extra[..]].concat();
        let out = run(&args, input, "127.0.0.1:1", dir.path());
        assert_eq!(
            out.status.code(),
            Some(code),
            "{extra:?}: {}",
            stderr_of(&out)
        );
    }
    // A broker told to join needs the token, from any of the three.
    let out = run(
        &[
            "broker",
            "--node-id",
            "9",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "data",
            "--join",
            "127.0.0.1:1",
        ],
        b"",
        "127.0.0.1:1",
        dir.path(),
    );
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--join-token-file") && stderr.contains("--join-token -"),
        "{stderr}"
    );
}

#[test]
fn key_and_token_files_are_private_even_under_a_permissive_umask() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    // With umask 000 a file written plainly would be readable (and
    // writable) by every local user.
    let permissive = |args: &[&str]| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("umask 000; exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_lapse"))
            .args(args)
            .env("LAPSE_INSECURE_PLAINTEXT", "true")
            .env("LAPSE_BROKER", "127.0.0.1:1")
            .current_dir(dir.path())
            .output()
            .unwrap();
        (out.status.code(), stderr_of(&out))
    };
    let (code, stderr) =
        permissive(&["admin-token", "create", "--name", "ci", "--out", "ci.token"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = permissive(&["break-glass", "keygen", "--out", "vault"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = permissive(&[
        "certs",
        "init",
        "--trust-domain",
        "t.example",
        "--dir",
        "certs",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    // The DPoP key is made before the (unreachable) broker is called.
    let (code, stderr) = permissive(&[
        "issue",
        "--join-token",
        "lapse-join-x",
        "--audience",
        "billing",
        "--dpop-key-file",
        "holder.key",
    ]);
    assert_eq!(code, Some(5), "{stderr}");
    for secret in [
        "ci.token",
        "vault/break-glass.key",
        "certs/ca.key",
        "holder.key",
    ] {
        let mode = std::fs::metadata(dir.path().join(secret))
            .unwrap_or_else(|e| panic!("{secret}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}: {mode:o}");
    }
}
