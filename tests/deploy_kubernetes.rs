//! The manifests in `deploy/kubernetes/` validate against the Kubernetes
//! API schemas (with `kubernetes-validate` from PyPI, installed into a
//! virtual environment cached under the target directory), the broker
//! configurations they carry are ones a broker accepts, and every pod keeps
//! to the hardening the README promises.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lapse_broker::config::BrokerConfig;
use serde_json::Value;

/// The validator's release, pinned so a run is repeatable.
const VALIDATOR: &str = "kubernetes-validate==1.37.0";
/// The Kubernetes release the manifests are checked against: native
/// sidecars (`restartPolicy: Always` on an init container) need 1.29.
const KUBERNETES: &str = "1.31.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run `command` to completion within `limit`, or kill it and fail.
fn run(command: &mut Command, limit: Duration) -> Output {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    // Drain the pipes on threads so a chatty child cannot block on them.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut text).map(|_| text)
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut text).map(|_| text)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} took over {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap().unwrap_or_default(),
        stderr: err.join().unwrap().unwrap_or_default(),
    }
}

fn succeeded(output: &Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{what} failed:\n{text}");
    text
}

/// The validator's virtual environment, made once per target directory:
/// built under a temporary name and renamed into place, so a run that
/// stops half-way, or two at once, leave no broken one behind. Its
/// programs are run as `bin/python -m ...`: the scripts pip writes name the
/// path the environment was built at.
fn validator() -> PathBuf {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy-kubernetes");
    let name = VALIDATOR.replace("==", "-");
    let venv = cache.join(&name);
    let bin = venv.join("bin");
    if bin.join("python").exists() && venv.join("installed").exists() {
        return bin;
    }
    std::fs::create_dir_all(&cache).unwrap();
    let building = cache.join(format!("{name}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    succeeded(
        &run(
            Command::new("python3").args(["-m", "venv"]).arg(&building),
            Duration::from_secs(120),
        ),
        "python3 -m venv (Python 3 with venv is needed to install kubernetes-validate)",
    );
    // A network failure fails the test: the manifests are not checked.
    succeeded(
        &run(
            Command::new(building.join("bin/python")).args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--quiet",
                "--timeout",
                "30",
                "--retries",
                "2",
                VALIDATOR,
            ]),
            Duration::from_secs(300),
        ),
        "pip install kubernetes-validate (is PyPI reachable?)",
    );
    std::fs::write(building.join("installed"), VALIDATOR).unwrap();
    if std::fs::rename(&building, &venv).is_err() {
        // Another run got there first; use its.
        let _ = std::fs::remove_dir_all(&building);
    }
    assert!(venv.join("installed").exists());
    bin
}

/// Every YAML file under `deploy/kubernetes/`.
fn manifests() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("deploy/kubernetes"), &mut files);
    files.sort();
    files
}

/// Every resource in the manifests, as JSON, read with the venv's PyYAML.
fn resources(bin: &Path, files: &[PathBuf]) -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  docs = [d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]\n\
                  print(json.dumps(docs))";
    let output = run(
        Command::new(bin.join("python"))
            .args(["-c", script])
            .args(files),
        Duration::from_secs(60),
    );
    let text = succeeded(&output, "reading the manifests");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn find<'a>(resources: &'a [Value], kind: &str, name: &str) -> &'a Value {
    resources
        .iter()
        .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The pod template's hardening: non-root, the default seccomp profile, and
/// every container (init and sidecar ones too) without privilege
/// escalation, without capabilities and on a read-only root file system.
fn check_hardened(workload: &Value) {
    let name = &workload["metadata"]["name"];
    let pod = &workload["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{name}"
    );
    assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
    let containers = pod["containers"]
        .as_array()
        .into_iter()
        .chain(pod["initContainers"].as_array())
        .flatten();
    for container in containers {
        let context = &container["securityContext"];
        let shown = format!("{name}/{}", container["name"]);
        assert_eq!(context["allowPrivilegeEscalation"], false, "{shown}");
        assert_eq!(context["readOnlyRootFilesystem"], true, "{shown}");
        assert_eq!(
            context["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{shown}"
        );
        assert!(
            container["resources"]["limits"]["memory"].is_string(),
            "{shown}"
        );
    }
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let started = Instant::now();
    let bin = validator();
    let files = manifests();
    assert!(files.len() >= 6, "{files:?}");
    let output = run(
        Command::new(bin.join("python"))
            .args([
                "-m",
                "kubernetes_validate",
                "--strict",
                "--kubernetes-version",
                KUBERNETES,
            ])
            .args(&files),
        Duration::from_secs(120),
    );
    let report = succeeded(&output, "kubernetes-validate --strict");
    let resources = resources(&bin, &files);
    let passed = report.matches(" passed for resource ").count();
    assert_eq!(
        passed,
        resources.len(),
        "every resource validated, none skipped:\n{report}"
    );
    assert!(!report.contains("ERROR"), "{report}");

    let kinds: Vec<&str> = resources
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    for kind in [
        "Namespace",
        "ConfigMap",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "Deployment",
        "DaemonSet",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }

    // The brokers: one configuration per pod, each one a broker accepts.
    let brokers = find(&resources, "StatefulSet", "lapse-broker");
    let replicas = brokers["spec"]["replicas"].as_u64().unwrap();
    assert_eq!(replicas, 3);
    let config = find(&resources, "ConfigMap", "lapse-broker");
    let data = config["data"].as_object().unwrap();
    assert_eq!(data.len() as u64, replicas, "{:?}", data.keys());
    for ordinal in 0..replicas {
        let key = format!("lapse-broker-{ordinal}.toml");
        let text = data[&key].as_str().unwrap_or_else(|| panic!("no {key}"));
        let parsed = BrokerConfig::from_toml(text).unwrap_or_else(|e| panic!("{key}: {e}"));
        parsed.validate().unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(parsed.node_id, ordinal + 1, "{key}");
        let tls = parsed.tls.as_ref().expect("TLS");
        assert!(
            tls.cert.ends_with(format!("broker-{}.pem", parsed.node_id)),
            "{key}"
        );
        assert_eq!(parsed.cluster.members.len() as u64, replicas, "{key}");
        assert_eq!(
            parsed.issuance.http_listen.map(|a| a.port()),
            Some(7501),
            "{key}"
        );
    }
    let pod = &brokers["spec"]["template"]["spec"];
    let broker = &pod["containers"][0];
    assert_eq!(
        broker["args"],
        serde_json::json!(["broker", "--config", "/etc/lapse/config/$(POD_NAME).toml"])
    );
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(broker[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(broker[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
    }
    assert_eq!(
        brokers["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "data"
    );
    let headless = find(&resources, "Service", "lapse-broker");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(brokers["spec"]["serviceName"], "lapse-broker");
    let budget = find(&resources, "PodDisruptionBudget", "lapse-broker");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);

    for (kind, name) in [
        ("StatefulSet", "lapse-broker"),
        ("Deployment", "billing"),
        ("DaemonSet", "lapse-verifier"),
    ] {
        check_hardened(find(&resources, kind, name));
    }
    println!(
        "{} resources in {} files validated against Kubernetes {KUBERNETES} in {:?}",
        resources.len(),
        files.len(),
        started.elapsed()
    );
}
