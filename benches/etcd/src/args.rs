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
        }
    }
}

/// Parses the command line; `Ok(None)` means help was printed.
pub fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut a = Args::default();
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
}
