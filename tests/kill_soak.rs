//! Kill soak: three real `lapse broker` processes are killed with `kill -9`
//! over and over (a random broker, the leader with a quick restart, or all
//! three at once) while two writers revoke fresh status indices through
//! whichever broker answers, and a client oracle records every answer:
//! acknowledged (with its epoch), refused, or unknown (a timeout or a lost
//! connection: it may or may not have taken effect, and is retried with the
//! same request id, never counted as failed).
//!
//! Afterwards, on the healthy cluster, the unknowns are settled (retried
//! with their request id until the answer is definite), and then:
//!
//! - every broker is at the same applied index with the same state digest
//!   (replicas that hold different entries at one index differ here);
//! - every broker's own revoked set (the snapshot its revocation feed serves
//!   from its applied state) is exactly the acknowledged indices: none lost,
//!   none revoked that no one acknowledged;
//! - the leader refuses each acknowledged index as already revoked at the
//!   epoch first acknowledged (a lost write would be revoked anew instead);
//! - no request got a definite refusal: every index was fresh and leased;
//! - no killed leader came back leading the term it led before the kill:
//!   that is leading without an election, after a crash that may have lost
//!   an unflushed tail of its log which its followers hold (how replicas
//!   came to hold different entries at one index in an earlier soak).
//!
//! It prints one summary line (kills, acknowledged, unknown, refused, time
//! from a kill to an agreed leader, wall time). Longer runs:
//!
//! ```text
//! LAPSE_SOAK_KILLS=100 cargo test --release --test kill_soak -- --nocapture
//! ```
//!
//! `LAPSE_SOAK_SEED` replays the choice of victims and delays of a run (the
//! seed is printed); the timing of the processes is not replayed.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::soak::*;
use support::*;

const BROKERS: u64 = 3;
const WRITERS: u64 = 2;
/// Indices leased for the writers, split evenly between them.
const LEASED: u64 = 1_000_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

#[derive(Debug, Clone, Copy)]
enum Victim {
    Random,
    Leader,
    All,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_revocations_survive_repeated_kill_9_on_every_broker() {
    let started = Instant::now();
    let kills: usize = env_or("LAPSE_SOAK_KILLS", 20);
    let seed: u64 = env_or("LAPSE_SOAK_SEED", rand::random());
    eprintln!("soak: {kills} kills, LAPSE_SOAK_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let mut cluster = TestCluster::start(BROKERS, FAST_RAFT);
    let leader = cluster.wait_for_leader().await;
    let block = lease(&cluster, leader, LEASED).await;
    assert_eq!(block.end - block.start, LEASED, "{block:?}");
    let ours = block.start..block.end;

    let stop = Arc::new(AtomicBool::new(false));
    let addresses: Vec<String> = (1..=BROKERS).map(|id| cluster.address(id)).collect();
    let share = LEASED / WRITERS;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let first = block.start + w * share;
            tokio::spawn(
                Writer {
                    id: w + 1,
                    addresses: addresses.clone(),
                    indices: first..first + share,
                    stop: stop.clone(),
                }
                .run(),
            )
        })
        .collect();

    // Chaos: kill, wait a little, restart, and time until a leader is agreed.
    let mut to_leader = Vec::new();
    let mut resumed = Vec::new();
    let mut victims_by_kind = BTreeMap::new();
    for kill in 1..=kills {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..=4000))).await;
        let roll = rng.gen_range(0..100);
        let kind = if roll < 45 {
            Victim::Random
        } else if roll < 90 {
            Victim::Leader
        } else {
            Victim::All
        };
        let before = current_leader(&cluster).await;
        let victims: Vec<u64> = match kind {
            Victim::Random => vec![rng.gen_range(1..=BROKERS)],
            Victim::Leader => {
                let random = rng.gen_range(1..=BROKERS);
                vec![before.map_or(random, |(leader, _)| leader)]
            }
            Victim::All => (1..=BROKERS).collect(),
        };
        *victims_by_kind.entry(format!("{kind:?}")).or_insert(0) += 1;
        // The lost-entries bug needs a leader restarted before the others
        // time out its term: half the leader kills come back within 500 ms.
        let down = match kind {
            Victim::Leader if rng.gen_bool(0.5) => rng.gen_range(0..=500),
            _ => rng.gen_range(0..=2500),
        };
        let killed_at = Instant::now();
        for id in &victims {
            cluster.kill9(*id);
        }
        tokio::time::sleep(Duration::from_millis(down)).await;
        for id in &victims {
            cluster.spawn(*id, &[]);
        }
        let (leader, term, elapsed) =
            wait_for_agreed_leader(&cluster, killed_at, Duration::from_secs(30)).await;
        eprintln!(
            "kill {kill}/{kills}: {kind:?} {victims:?} down {down} ms; \
             leader {leader} (term {term}) agreed {} ms after the kill",
            elapsed.as_millis()
        );
        to_leader.push(elapsed);
        // Leading term T again after a restart means leading without an
        // election (which would have raised the term): the restarted leader
        // may have lost an unflushed tail its followers hold, and entries it
        // writes next can differ from theirs at the same index and term.
        if victims.contains(&leader) && before == Some((leader, term)) {
            resumed.push(format!(
                "kill {kill}: broker {leader} led term {term}, was killed, \
                 and led term {term} again {} ms later",
                elapsed.as_millis()
            ));
        }
    }

    // Quiesce: writers finish the request in hand, every broker runs.
    stop.store(true, Ordering::SeqCst);
    let mut records = Vec::new();
    for writer in writers {
        records.extend(
            tokio::time::timeout(Duration::from_secs(60), writer)
                .await
                .expect("a writer did not stop within 60 s")
                .expect("writer task"),
        );
    }
    for id in 1..=BROKERS {
        if !cluster.running().contains(&id) {
            cluster.spawn(id, &[]);
        }
    }
    cluster.wait_for_leader().await;

    // The oracle as the writers left it, then the unknowns settled.
    let acknowledged_live = records.iter().filter(|r| r.epoch().is_some()).count();
    let after_retry = records
        .iter()
        .filter(|r| r.epoch().is_some() && r.attempts > 1)
        .count();
    let mut unknown = 0;
    let (mut took_effect, mut had_not) = (0, 0);
    for record in records
        .iter_mut()
        .filter(|r| matches!(r.answer, Answer::Unknown(_)))
    {
        unknown += 1;
        match settle(&cluster, record).await {
            Some(true) => took_effect += 1,
            Some(false) => had_not += 1,
            None => {}
        }
    }
    let refused: Vec<&Record> = records
        .iter()
        .filter(|r| matches!(r.answer, Answer::Refused { .. }))
        .collect();
    let acknowledged: BTreeMap<u64, u64> = records
        .iter()
        .filter_map(|r| Some((r.index, r.epoch()?)))
        .collect();
    assert!(
        acknowledged_live > 0,
        "no revocation was acknowledged during the soak\n{}",
        cluster.logs()
    );

    // Every replica holds the same state at the same index.
    let statuses = cluster.wait_converged().await;
    assert_eq!(statuses.len(), BROKERS as usize);
    assert_same_digest(&cluster, &statuses);

    // Each broker's own view: exactly the acknowledged indices are revoked.
    let expected: BTreeSet<u64> = acknowledged.keys().copied().collect();
    for id in 1..=BROKERS {
        let (epoch, held) = revoked_on(&cluster, id, ours.clone()).await;
        let lost: Vec<(u64, u64)> = expected
            .difference(&held)
            .map(|index| (*index, acknowledged[index]))
            .collect();
        let phantom: Vec<&u64> = held.difference(&expected).collect();
        assert!(
            lost.is_empty() && phantom.is_empty(),
            "broker {id} (feed epoch {epoch}) lost {} acknowledged revocations \
             (index, epoch; first 20: {:?}) and holds {} never acknowledged \
             (first 20: {:?})\n{}",
            lost.len(),
            &lost[..lost.len().min(20)],
            phantom.len(),
            &phantom[..phantom.len().min(20)],
            cluster.logs()
        );
    }

    // The leader's view, with epochs: each is already revoked, at the epoch
    // first acknowledged.
    let wrong = recheck_on_leader(&cluster, &acknowledged).await;
    assert!(
        wrong.is_empty(),
        "{} acknowledged revocations are not as acknowledged on the leader \
         (index, acknowledged epoch, answer; first 20): {:?}\n{}",
        wrong.len(),
        &wrong[..wrong.len().min(20)],
        cluster.logs()
    );
    assert_same_digest(&cluster, &cluster.wait_converged().await);

    eprintln!(
        "soak summary: kills {kills} {victims_by_kind:?}, acknowledged {} \
         ({acknowledged_live} live, {after_retry} of them after a retry), \
         unknown {unknown} (settled: {took_effect} had taken effect, {had_not} had not), \
         refused {}, time to agreed leader p50 {} ms max {} ms, \
         leaders back in their term after a kill {}, wall {:.1} s, seed {seed}",
        acknowledged.len(),
        refused.len(),
        percentile(&to_leader, 50.0).as_millis(),
        percentile(&to_leader, 100.0).as_millis(),
        resumed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        refused.is_empty(),
        "fresh, leased indices were refused: {refused:#?}"
    );
    assert!(
        resumed.is_empty(),
        "a leader killed with -9 came back leading the same term, without an \
         election:\n{}",
        resumed.join("\n")
    );
}
