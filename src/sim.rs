//! `lapse sim run`: run simulation scenarios over a range of seeds, check
//! their invariants, and report.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use lapse_sim::report::{self, ScenarioSummary};
use lapse_sim::{RunOutcome, Scenario, Variant};

use crate::client::{Failure, exit};

#[derive(Debug, Args)]
pub struct SimArgs {
    #[command(subcommand)]
    command: SimCommand,
}

#[derive(Debug, Subcommand)]
enum SimCommand {
    /// Run a scenario (a name in the scenario directory, a file, `swarm`
    /// for scenarios drawn from the seed, or `all`) over one seed or a
    /// range. Exits 7 if any run breaks an invariant, printing the command
    /// that replays it; 2 for an unknown scenario or an unreadable file, 3
    /// for a malformed scenario file.
    Run(RunArgs),
    /// List the scenarios in the scenario directory.
    List(ListArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Scenario name, path to a scenario file, `swarm` or `all`.
    scenario: String,
    /// Run this one seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run every seed in A..B (B excluded), e.g. `1..20`.
    #[arg(long, value_parser = parse_seeds)]
    seeds: Option<std::ops::Range<u64>>,
    /// Where scenario files are found.
    #[arg(long, default_value_os_t = default_dir())]
    dir: PathBuf,
    /// Where to write report.json and the propagation pictures.
    #[arg(long, default_value = "target/lapse-sim")]
    report: PathBuf,
    /// Print each run's whole trace.
    #[arg(long)]
    trace: bool,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[arg(long, default_value_os_t = default_dir())]
    dir: PathBuf,
}

/// `simulation/scenarios` here, else in the source tree Lapse was built from.
fn default_dir() -> PathBuf {
    let here = PathBuf::from("simulation/scenarios");
    if here.is_dir() {
        here
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("simulation/scenarios")
    }
}

fn parse_seeds(text: &str) -> Result<std::ops::Range<u64>, String> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| format!("{text:?} is not a range like 1..20"))?;
    let a: u64 = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
    let b: u64 = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
    if b <= a {
        return Err(format!("{text:?} is empty"));
    }
    Ok(a..b)
}

pub async fn run(args: SimArgs) -> Result<(), Failure> {
    match args.command {
        SimCommand::List(list) => {
            let fail = scenario_failure;
            for path in lapse_sim::scenario::list(&list.dir).map_err(fail)? {
                let scenario = Scenario::load(&path).map_err(fail)?;
                println!("{:<28} {}", scenario.name, scenario.description);
            }
            println!("{:<28} scenarios drawn from the seed", "swarm");
            Ok(())
        }
        SimCommand::Run(run) => tokio::task::spawn_blocking(move || run_scenarios(run))
            .await
            .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?,
    }
}

/// Where a scenario comes from.
enum Source {
    File(Box<Scenario>),
    Swarm,
}

/// One scenario to run over the seeds.
struct Planned {
    /// Its name in the table, the report and the picture's file name: the
    /// scenario's `name`, else its file stem.
    name: String,
    /// What to give `lapse sim run` to run it again.
    replay: String,
    source: Source,
}

impl Planned {
    fn file(scenario: Scenario, path: &Path, replay: String) -> Self {
        let name = if scenario.name.trim().is_empty() {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "scenario".into())
        } else {
            scenario.name.clone()
        };
        Self {
            name,
            replay,
            source: Source::File(Box::new(scenario)),
        }
    }

    fn swarm() -> Self {
        Self {
            name: "swarm".into(),
            replay: "swarm".into(),
            source: Source::Swarm,
        }
    }
}

/// `name` made safe as part of a file name: anything but letters, digits,
/// `-`, `_` and `.` becomes `_`, so a report never lands outside its
/// directory.
fn file_name_part(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.trim_matches('.').is_empty() {
        "scenario".into()
    } else {
        safe
    }
}

fn run_scenarios(args: RunArgs) -> Result<(), Failure> {
    let planned = plan(&args)?;
    let seeds: Vec<u64> = match (args.seed, &args.seeds) {
        (Some(seed), _) => vec![seed],
        (None, Some(range)) => range.clone().collect(),
        (None, None) => vec![1],
    };
    let total = planned.len() * seeds.len();
    let progress = Progress::on_terminal(total);
    let mut done = 0usize;
    let mut summaries: Vec<ScenarioSummary> = Vec::new();
    let mut runs_json = Vec::new();
    let mut failures: Vec<(&Planned, RunOutcome)> = Vec::new();
    std::fs::create_dir_all(&args.report)
        .map_err(|e| Failure::new(exit::FAILURE, format!("{}: {e}", args.report.display())))?;
    for plan in &planned {
        let name = &plan.name;
        let mut outcomes = Vec::new();
        for &seed in &seeds {
            progress.show(done, name, seed);
            let scenario = match &plan.source {
                Source::File(scenario) => (**scenario).clone(),
                Source::Swarm => lapse_sim::swarm::generate(seed),
            };
            let outcome = lapse_sim::run(&scenario, seed, Variant::Correct);
            done += 1;
            if args.trace {
                progress.end_line();
                for line in &outcome.trace {
                    println!("{line}");
                }
            }
            runs_json.push(serde_json::to_value(report::run_report(&outcome)).unwrap_or_default());
            if !outcome.passed() {
                failures.push((plan, outcome.clone()));
            }
            outcomes.push(outcome);
        }
        let summary = report::summarize(name, &outcomes);
        let picture = args
            .report
            .join(format!("{}-propagation.svg", file_name_part(name)));
        std::fs::write(&picture, report::propagation_chart(name, &outcomes))
            .map_err(|e| Failure::new(exit::FAILURE, format!("{}: {e}", picture.display())))?;
        summaries.push(summary);
    }
    progress.show(done, "", 0);
    progress.end_line();
    print!("{}", report::table(&summaries));
    let json = serde_json::json!({ "scenarios": summaries, "runs": runs_json });
    let path = args.report.join("report.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )
    .map_err(|e| Failure::new(exit::FAILURE, format!("{}: {e}", path.display())))?;
    println!(
        "report: {} (pictures: {}/*-propagation.svg)",
        path.display(),
        args.report.display()
    );
    if failures.is_empty() {
        return Ok(());
    }
    print_failures(&failures);
    Err(Failure::new(
        exit::INVARIANT_BROKEN,
        format!("{} of {total} runs broke an invariant", failures.len()),
    ))
}

/// A scenario that cannot be run: an unknown name or a file that cannot
/// be read is bad usage, a malformed file is invalid input.
fn scenario_failure(error: lapse_sim::ScenarioError) -> Failure {
    let code = match &error {
        lapse_sim::ScenarioError::Unknown { .. } | lapse_sim::ScenarioError::Read { .. } => {
            exit::USAGE
        }
        lapse_sim::ScenarioError::Parse { .. } | lapse_sim::ScenarioError::Invalid { .. } => {
            exit::REFUSED
        }
    };
    Failure::new(code, error.to_string())
}

/// The runs `args` asks for: scenario files, the swarm, or both.
fn plan(args: &RunArgs) -> Result<Vec<Planned>, Failure> {
    let fail = scenario_failure;
    // A replay outside the default scenario directory needs it named.
    let dir_flag = if args.dir == default_dir() {
        String::new()
    } else {
        format!(" --dir {}", args.dir.display())
    };
    let mut planned: Vec<Planned> = Vec::new();
    match args.scenario.as_str() {
        "all" => {
            for path in lapse_sim::scenario::list(&args.dir).map_err(fail)? {
                let scenario = Scenario::load(&path).map_err(fail)?;
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                planned.push(Planned::file(scenario, &path, format!("{stem}{dir_flag}")));
            }
            planned.push(Planned::swarm());
        }
        "swarm" => planned.push(Planned::swarm()),
        given => {
            let path = lapse_sim::scenario::resolve(given, &args.dir).map_err(fail)?;
            let scenario = Scenario::load(&path).map_err(fail)?;
            let replay = if path == Path::new(given) {
                given.to_owned()
            } else {
                format!("{given}{dir_flag}")
            };
            planned.push(Planned::file(scenario, &path, replay));
        }
    }
    Ok(planned)
}

/// What each failed run broke, and how to replay it.
fn print_failures(failures: &[(&Planned, RunOutcome)]) {
    for (plan, outcome) in failures {
        println!();
        println!("FAILED {} seed {}:", plan.name, outcome.seed);
        if let Some(error) = &outcome.error {
            println!("  simulation error: {error}");
        }
        for violation in outcome.violations.iter().take(10) {
            println!("  {violation}");
        }
        if outcome.violations.len() > 10 {
            println!("  ... and {} more", outcome.violations.len() - 10);
        }
        println!(
            "  replay: lapse sim run {} --seed {} --trace",
            plan.replay, outcome.seed
        );
    }
}

/// A one-line progress bar on standard error, redrawn in place with a
/// carriage return; drawn only when standard error is a terminal, since
/// in a file or a pipe the frames would pile up as noise.
struct Progress {
    total: usize,
    drawn: bool,
}

impl Progress {
    fn on_terminal(total: usize) -> Self {
        Self {
            total,
            drawn: std::io::stderr().is_terminal(),
        }
    }

    fn show(&self, done: usize, name: &str, seed: u64) {
        const WIDTH: usize = 30;
        if !self.drawn {
            return;
        }
        let filled = (done * WIDTH).checked_div(self.total).unwrap_or(WIDTH);
        let label = if name.is_empty() {
            String::new()
        } else {
            format!(" {name} seed {seed}")
        };
        eprint!(
            "\r[{}{}] {done}/{}{label:<40}",
            "#".repeat(filled),
            " ".repeat(WIDTH - filled),
            self.total
        );
        let _ = std::io::stderr().flush();
    }

    /// Move past the bar, so that what follows starts on a line of its own.
    fn end_line(&self) {
        if self.drawn {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::file_name_part;

    #[test]
    fn report_file_names_stay_in_the_report_directory() {
        assert_eq!(file_name_part("leader-crash"), "leader-crash");
        assert_eq!(file_name_part("a/b\\c d"), "a_b_c_d");
        assert_eq!(file_name_part("../../etc"), ".._.._etc");
        assert_eq!(file_name_part(".."), "scenario");
        assert_eq!(file_name_part(""), "scenario");
    }
}
