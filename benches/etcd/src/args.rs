//! The command line of `etcd-propagation`: its options, their defaults,
//! and parsing them.

use std::time::Duration;

const USAGE: &str = "\
etcd-propagation: put-to-watcher delay over many etcd watch streams

USAGE:
    etcd-propagation [OPTIONS]

OPTIONS:
    --endpoints A,B,C     etcd client URLs, one per member
                          [default: http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793]
    --watchers N          watch streams to open [default: 1000]
    --puts P              measured puts [default: 200]
    --per-conn K          watch streams sharing one gRPC connection [default: 50]
    --prefix S            key prefix to watch and put under [default: /lapse-bench/]
    --put-endpoint URL    where puts go [default: the current leader]
    --put-timeout-ms T    wait for all watchers per put at most T ms [default: 10000]
    --setup-timeout-ms T  bound on connecting, opening watches and warm-up [default: 60000]
    --cacert FILE         TLS: the CA that signed the members' certificates (PEM);
                          with it, endpoints are https:// URLs
    --cert FILE           TLS: this client's certificate (PEM), for client-cert auth
    --key FILE            TLS: its private key (PEM)
    --json                print one JSON object on stdout (the table goes to stderr)
    -h, --help            print this help
";

/// Command-line settings.
#[derive(Debug, Clone)]
pub struct Args {
    pub endpoints: Vec<String>,
    pub watchers: usize,
    pub puts: usize,
    pub per_conn: usize,
    pub prefix: String,
    pub put_endpoint: Option<String>,
    pub put_timeout: Duration,
    pub setup_timeout: Duration,
    pub json: bool,
    /// TLS files; `None`: plaintext.
    pub tls: Option<TlsFiles>,
}

/// Where the client's TLS files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: String,
    /// The client certificate and its key, for members that ask for one.
    pub identity: Option<(String, String)>,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            endpoints: vec![
                "http://127.0.0.1:23791".into(),
                "http://127.0.0.1:23792".into(),
                "http://127.0.0.1:23793".into(),
            ],
            watchers: 1000,
            puts: 200,
            per_conn: 50,
            prefix: "/lapse-bench/".into(),
            put_endpoint: None,
            put_timeout: Duration::from_secs(10),
            setup_timeout: Duration::from_secs(60),
            json: false,
            tls: None,
        }
    }
}

/// Parses the command line; `Ok(None)` means help was printed.
pub fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut a = Args::default();
    let (mut ca, mut cert, mut key) = (None, None, None);
    fn value(it: &mut impl Iterator<Item = String>, flag: &str) -> Result<String, String> {
        it.next().ok_or_else(|| format!("{flag} needs a value"))
    }
    fn number(it: &mut impl Iterator<Item = String>, flag: &str) -> Result<u64, String> {
        let v = value(it, flag)?;
        v.parse()
            .map_err(|_| format!("{flag}: not a non-negative integer: {v}"))
    }
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--endpoints" => {
                a.endpoints = value(&mut it, &flag)?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "--watchers" => a.watchers = number(&mut it, &flag)? as usize,
            "--puts" => a.puts = number(&mut it, &flag)? as usize,
            "--per-conn" => a.per_conn = number(&mut it, &flag)? as usize,
            "--prefix" => a.prefix = value(&mut it, &flag)?,
            "--put-endpoint" => a.put_endpoint = Some(value(&mut it, &flag)?),
            "--put-timeout-ms" => {
                a.put_timeout = Duration::from_millis(number(&mut it, &flag)?);
            }
            "--setup-timeout-ms" => {
                a.setup_timeout = Duration::from_millis(number(&mut it, &flag)?);
            }
            "--json" => a.json = true,
            "--cacert" => ca = Some(value(&mut it, &flag)?),
            "--cert" => cert = Some(value(&mut it, &flag)?),
            "--key" => key = Some(value(&mut it, &flag)?),
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument: {other}\n\n{USAGE}")),
        }
    }
    if a.endpoints.is_empty() {
        return Err("--endpoints: no endpoint given".into());
    }
    if a.watchers == 0 || a.puts == 0 || a.per_conn == 0 {
        return Err("--watchers, --puts and --per-conn must be at least 1".into());
    }
    if a.prefix.is_empty() {
        return Err("--prefix must not be empty".into());
    }
    a.tls = match (ca, cert, key) {
        (None, None, None) => None,
        (Some(ca), None, None) => Some(TlsFiles { ca, identity: None }),
        (Some(ca), Some(cert), Some(key)) => Some(TlsFiles {
            ca,
            identity: Some((cert, key)),
        }),
        (None, _, _) => return Err("--cert and --key need --cacert".into()),
        _ => return Err("--cert and --key go together".into()),
    };
    let scheme = if a.tls.is_some() {
        "https://"
    } else {
        "http://"
    };
    if let Some(wrong) = a.endpoints.iter().find(|e| !e.starts_with(scheme)) {
        return Err(format!(
            "{wrong}: with{} --cacert, endpoints are {scheme} URLs",
            if a.tls.is_some() { "" } else { "out" }
        ));
    }
    Ok(Some(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Option<Args>, String> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_flags() {
        let a = parse(&[]).unwrap().unwrap();
        assert_eq!((a.watchers, a.puts, a.per_conn), (1000, 200, 50));
        assert_eq!(a.endpoints.len(), 3);
        let a = parse(&["--watchers", "10", "--puts", "3", "--json"])
            .unwrap()
            .unwrap();
        assert_eq!((a.watchers, a.puts, a.json), (10, 3, true));
        assert!(parse(&["--watchers", "0"]).is_err());
        assert!(parse(&["--watchers"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["--help"]).unwrap().is_none());
    }

    #[test]
    fn tls_files_and_https_endpoints_go_together() {
        let a = parse(&[
            "--endpoints",
            "https://127.0.0.1:1",
            "--cacert",
            "ca.pem",
            "--cert",
            "c.pem",
            "--key",
            "c.key",
        ])
        .unwrap()
        .unwrap();
        let tls = a.tls.unwrap();
        assert_eq!(tls.ca, "ca.pem");
        assert_eq!(tls.identity, Some(("c.pem".into(), "c.key".into())));
        // The default endpoints are plaintext.
        assert!(parse(&["--cacert", "ca.pem"]).is_err());
        assert!(parse(&["--endpoints", "https://127.0.0.1:1"]).is_err());
        assert!(parse(&["--cert", "c.pem", "--key", "c.key"]).is_err());
        assert!(
            parse(&[
                "--endpoints",
                "https://h:1",
                "--cacert",
                "ca",
                "--cert",
                "c"
            ])
            .is_err()
        );
    }
}
