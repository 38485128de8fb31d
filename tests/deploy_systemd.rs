//! The systemd units in `deploy/systemd/` pass `systemd-analyze verify`
//! with no warning (with `ExecStart` pointed at the `lapse` binary just
//! built), score "OK" or better in `systemd-analyze security`, keep every
//! sandboxing option the README lists, and the example configuration and
//! environment file they read are ones the broker and the verifier unit
//! accept. Where `systemd-analyze` is missing the test says so and checks
//! only the files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lapse_broker::config::BrokerConfig;

/// Where the units expect the binary; the test substitutes the one built.
const INSTALLED: &str = "/usr/local/bin/lapse";
const UNITS: [&str; 2] = ["lapse-broker.service", "lapse-verifier.service"];

/// Options both units must set, as `key=value` lines.
const SANDBOX: &[&str] = &[
    "Type=exec",
    "User=lapse",
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectControlGroups=yes",
    "RestrictNamespaces=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "SystemCallFilter=@system-service",
    "SystemCallArchitectures=native",
    "UMask=0077",
    "LimitNOFILE=65536",
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Run `command` within `limit`: its status and its output, both streams.
fn run(command: &mut Command, limit: Duration) -> (Output, String) {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} took over {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Done: its output fits in the pipes' buffers or is read in full now.
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

fn systemd_analyze() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join("systemd-analyze"))
        .find(|p| p.is_file())
}

/// The units with `ExecStart` naming the binary just built, in `into`.
fn units_for_this_build(into: &Path) -> Vec<PathBuf> {
    UNITS
        .iter()
        .map(|name| {
            let text = read(name);
            assert!(
                text.contains(&format!("ExecStart={INSTALLED} ")),
                "{name}: ExecStart runs {INSTALLED}"
            );
            let path = into.join(name);
            std::fs::write(&path, text.replace(INSTALLED, env!("CARGO_BIN_EXE_lapse"))).unwrap();
            path
        })
        .collect()
}

#[test]
fn units_keep_the_sandbox_and_their_configuration_is_accepted() {
    for name in UNITS {
        let text = read(name);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for option in SANDBOX {
            assert!(lines.contains(option), "{name} lacks {option}");
        }
    }
    let broker = read("lapse-broker.service");
    assert!(broker.contains("StateDirectory=lapse"));

    // The example broker configuration is one a broker starts with, and
    // writes only where the unit lets it.
    let config = BrokerConfig::from_toml(&read("broker.toml")).expect("broker.toml parses");
    config.validate().expect("broker.toml is consistent");
    assert_eq!(config.data_dir, Path::new("/var/lib/lapse"));
    assert!(broker.contains("--config /etc/lapse/broker.toml"));

    // Every variable the verifier's command line names is set in the
    // example environment file.
    let verifier = read("lapse-verifier.service");
    let env = read("verifier.env");
    let defined: Vec<&str> = env
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    let exec = verifier
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .unwrap();
    let named: Vec<&str> = exec
        .split('$')
        .skip(1)
        .map(|rest| {
            rest.trim_start_matches('{')
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap()
        })
        .collect();
    assert!(named.len() >= 5, "{exec}");
    for name in named {
        assert!(defined.contains(&name), "verifier.env does not set {name}");
    }
    for name in ["LAPSE_CA", "LAPSE_CERT", "LAPSE_KEY"] {
        assert!(defined.contains(&name), "verifier.env does not set {name}");
    }
}

#[test]
fn units_pass_systemd_analyze() {
    let Some(analyze) = systemd_analyze() else {
        println!("skipped: systemd-analyze is not installed here, so the units were not verified");
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let units = units_for_this_build(temp.path());
    let (output, text) = run(
        Command::new(&analyze)
            .args(["verify", "--man=no", "--generators=no"])
            .args(&units),
        Duration::from_secs(60),
    );
    assert!(output.status.success(), "systemd-analyze verify:\n{text}");
    // It reports an unknown or misspelt option as a warning and succeeds.
    assert!(
        text.trim().is_empty(),
        "systemd-analyze verify warns:\n{text}"
    );

    for unit in &units {
        let (output, text) = run(
            Command::new(&analyze)
                .args(["security", "--offline=yes"])
                .arg(unit),
            Duration::from_secs(60),
        );
        if !output.status.success() && text.contains("offline") {
            // systemd before 250 reviews only loaded units.
            println!("skipped the security review: {}", text.trim());
            continue;
        }
        let overall = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no overall exposure:\n{text}"));
        let score: f64 = overall
            .rsplit(':')
            .next()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{overall}"));
        println!("{overall}");
        assert!(score <= 2.0, "{}: {overall}", unit.display());
    }
}
