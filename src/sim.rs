//! `lapse sim run`: run simulation scenarios over a range of seeds, check
//! their invariants, and report.

use std::io::Write;
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
    /// range. Exits 1 if any run breaks an invariant, printing the command
    /// that replays it.
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
            let fail = |e: lapse_sim::ScenarioError| Failure::new(exit::FAILURE, e.to_string());
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

/// Which scenarios: (name on the command line, scenario or swarm).
enum Source {
    File(Box<Scenario>),
    Swarm,
}

fn run_scenarios(args: RunArgs) -> Result<(), Failure> {
    let fail = |e: lapse_sim::ScenarioError| Failure::new(exit::FAILURE, e.to_string());
    let mut sources: Vec<(String, Source)> = Vec::new();
    match args.scenario.as_str() {
        "all" => {
            for path in lapse_sim::scenario::list(&args.dir).map_err(fail)? {
                let scenario = Scenario::load(&path).map_err(fail)?;
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                sources.push((name, Source::File(Box::new(scenario))));
            }
            sources.push(("swarm".into(), Source::Swarm));
        }
        "swarm" => sources.push(("swarm".into(), Source::Swarm)),
        name => {
            let path = lapse_sim::scenario::resolve(name, &args.dir).map_err(fail)?;
            sources.push((
                name.to_owned(),
                Source::File(Box::new(Scenario::load(&path).map_err(fail)?)),
            ));
        }
    }
    let seeds: Vec<u64> = match (args.seed, &args.seeds) {
        (Some(seed), _) => vec![seed],
        (None, Some(range)) => range.clone().collect(),
        (None, None) => vec![1],
    };
    let total = sources.len() * seeds.len();
    let mut done = 0usize;
    let mut summaries: Vec<ScenarioSummary> = Vec::new();
    let mut runs_json = Vec::new();
    let mut failures: Vec<(String, RunOutcome)> = Vec::new();
    std::fs::create_dir_all(&args.report)
        .map_err(|e| Failure::new(exit::FAILURE, format!("{}: {e}", args.report.display())))?;
    for (name, source) in &sources {
        let mut outcomes = Vec::new();
        for &seed in &seeds {
            progress(done, total, name, seed);
            let scenario = match source {
                Source::File(scenario) => (**scenario).clone(),
                Source::Swarm => lapse_sim::swarm::generate(seed),
            };
            let outcome = lapse_sim::run(&scenario, seed, Variant::Correct);
            done += 1;
            if args.trace {
                eprintln!();
                for line in &outcome.trace {
                    println!("{line}");
                }
            }
            runs_json.push(serde_json::to_value(report::run_report(&outcome)).unwrap_or_default());
            if !outcome.passed() {
                failures.push((name.clone(), outcome.clone()));
            }
            outcomes.push(outcome);
        }
        let summary = report::summarize(name, &outcomes);
        let delays: Vec<f64> = outcomes
            .iter()
            .flat_map(|o| o.propagation_ms.iter().copied())
            .collect();
        let picture = args.report.join(format!("{name}-propagation.svg"));
        std::fs::write(&picture, report::propagation_svg(name, &delays))
            .map_err(|e| Failure::new(exit::FAILURE, format!("{}: {e}", picture.display())))?;
        summaries.push(summary);
    }
    progress(done, total, "", 0);
    eprintln!();
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
    for (name, outcome) in &failures {
        println!();
        println!("FAILED {name} seed {}:", outcome.seed);
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
            "  replay: lapse sim run {name} --seed {} --trace",
            outcome.seed
        );
    }
    Err(Failure::new(
        exit::FAILURE,
        format!("{} of {total} runs broke an invariant", failures.len()),
    ))
}

/// A one-line progress bar on standard error.
fn progress(done: usize, total: usize, name: &str, seed: u64) {
    const WIDTH: usize = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let label = if name.is_empty() {
        String::new()
    } else {
        format!(" {name} seed {seed}")
    };
    eprint!(
        "\r[{}{}] {done}/{total}{label:<40}",
        "#".repeat(filled),
        " ".repeat(WIDTH - filled)
    );
    let _ = std::io::stderr().flush();
}
