//! A region's client host. The first region's client adds the learners and
//! sets the tenant's policy; then every client takes a join token, gets a
//! seed credential, and until the workload ends refreshes it to issue new
//! credentials and revokes its own by status index, each request with a
//! deadline. A timed-out revocation is unknown, not failed. A refresh keeps
//! its seed's index (its chain's), so revoking a credential ends its
//! chain: the client keeps [`CHAINS`] chains going, refreshing them in
//! turn, and replaces a revoked one with a new join token and seed. Every
//! [`DELEGATE_EVERY`]th turn it delegates instead (RFC 8693 exchange of
//! the chain's seed for an agent), and every other time delegates that
//! credential once more, so verifiers see credentials whose ancestors get
//! revoked.

use std::sync::Arc;
use std::time::Duration;

use lapse_wire::cluster::cluster_client::ClusterClient;
use lapse_wire::cluster::{self as pb, revocation::Target};
use lapse_wire::issuer::issue_request::Attestation;
use lapse_wire::issuer::issuer_client::IssuerClient;
use lapse_wire::issuer::{ExchangeRequest, IssueRequest, IssueResponse, RefreshRequest};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tonic::transport::Channel;

use super::broker::ADMIN_TOKEN;
use super::broker_address;
use crate::clock::elapsed_ms;
use crate::harness::World;
use crate::harness::oracle::{self, Issued};
use crate::invariants::acked_revocations::Outcome;
use crate::net;
use crate::scenario::client_host;

const TENANT: &str = "sim";
/// Refresh chains each client keeps going: enough that, with revocations
/// ending chains at the workload's rate, a good share of its credentials
/// are live at any time.
const CHAINS: usize = 16;
/// One issuing turn in this many is a delegation.
const DELEGATE_EVERY: u64 = 4;

/// One region's client, talking to `brokers` (in order of preference).
struct Client {
    world: Arc<World>,
    host: String,
    region: String,
    brokers: Vec<String>,
    channels: Vec<Channel>,
    timeout: Duration,
    rng: StdRng,
    /// Seeds taken so far (the request ids of the next).
    seeds: u64,
}

/// Run the client of `region`; `leads_setup` for the first region's.
pub(in crate::harness) async fn run_client(
    world: Arc<World>,
    leads_setup: bool,
    region: String,
    brokers: Vec<String>,
) -> turmoil::Result {
    let host = client_host(&region);
    let incarnation = world.hosts.next_incarnation(&host);
    let rng = StdRng::seed_from_u64(world.host_seed(&host, incarnation));
    let timeout = Duration::from_millis(world.scenario.workload.request_timeout_ms);
    let channels: Vec<Channel> = brokers.iter().map(|b| net::channel(b, timeout)).collect();
    let mut client = Client {
        world,
        host,
        region,
        brokers,
        channels,
        timeout,
        rng,
        seeds: 0,
    };
    if leads_setup {
        client.set_up_cluster().await?;
    }
    while !client.world.hosts.policy_ready() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let patience = client.setup_patience();
    let seed_credential = client.seed_credential(patience).await?;
    client.workload(seed_credential).await;
    client.world.note(&client.host, "workload done");
    std::future::pending::<()>().await;
    Ok(())
}

fn admin<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().expect("ascii"),
    );
    request
}

/// Try `call` on each broker in turn until one answers, for up to
/// `patience`.
async fn first_answer<T, F, Fut>(
    channels: &[Channel],
    patience: Duration,
    mut call: F,
) -> Result<T, tonic::Status>
where
    F: FnMut(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    let mut n = 0usize;
    loop {
        let status = match call(channels[n % channels.len()].clone()).await {
            Ok(answer) => return Ok(answer),
            Err(status) => status,
        };
        if tokio::time::Instant::now() > deadline {
            return Err(status);
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Errors that say the request did not and will not take effect. Anything
/// else (a timeout, an unreachable or changing leader) leaves it unknown.
fn definite_refusal(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument
            | tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
            | tonic::Code::NotFound
            | tonic::Code::AlreadyExists
            | tonic::Code::FailedPrecondition
            | tonic::Code::OutOfRange
    )
}

impl Client {
    /// How long setup requests may keep trying.
    fn setup_patience(&self) -> Duration {
        Duration::from_secs(self.world.scenario.duration_s + 30)
    }

    /// Add the learners and set the tenant's policy.
    async fn set_up_cluster(&self) -> Result<(), tonic::Status> {
        let patience = self.setup_patience();
        for spec in self
            .world
            .scenario
            .brokers()
            .into_iter()
            .filter(|b| b.learner)
        {
            first_answer(&self.channels, patience, |c| {
                let request = pb::AddLearnerRequest {
                    node_id: spec.id,
                    address: broker_address(&spec.host),
                };
                async move { ClusterClient::new(c).add_learner(admin(request)).await }
            })
            .await?;
            self.world
                .note(&self.host, format_args!("added learner {}", spec.id));
        }
        first_answer(&self.channels, patience, |c| async move {
            ClusterClient::new(c)
                .set_policy(admin(pb::SetPolicyRequest {
                    request_id: "sim-policy".into(),
                    tenant: TENANT.into(),
                    text: format!(
                        r#"permit(principal, action == Action::"issue", resource == Tenant::"{TENANT}");"#
                    ),
                    expected_version: None,
                }))
                .await
        })
        .await?;
        self.world.note(&self.host, "policy set");
        self.world.hosts.set_policy_ready();
        Ok(())
    }

    /// Take a join token and the seed credential it attests, trying for
    /// `patience`.
    async fn seed_credential(
        &mut self,
        patience: Duration,
    ) -> Result<IssueResponse, tonic::Status> {
        let serial = self.seeds;
        self.seeds += 1;
        attest(
            self.world.clone(),
            self.host.clone(),
            self.region.clone(),
            self.channels.clone(),
            serial,
            patience,
        )
        .await
    }

    /// Issue and revoke on schedule until the workload's end.
    async fn workload(&mut self, seed_credential: IssueResponse) {
        let mut chains = vec![seed_credential];
        let mut turn = 0usize;
        let (seeds_tx, mut seeded) = tokio::sync::mpsc::channel(1);
        let mut attesting = false;
        let workload = self.world.scenario.workload.clone();
        // Scheduled on the host's tokio clock, which moves within a step;
        // turmoil's elapsed time moves only between steps.
        let start = tokio::time::Instant::now();
        let end = start
            + Duration::from_millis(self.world.scenario.duration_s * 1000)
                .saturating_sub(Duration::from_secs_f64(elapsed_ms() / 1000.0));
        let issue_every = Duration::from_millis(workload.issue_every_ms.max(1));
        let revoke_every = Duration::from_millis(workload.revoke_every_ms.max(1));
        let mut next_issue = start;
        let mut next_revoke = start + revoke_every;
        let mut preferred = 0usize;
        let mut revoke_serial = 0u64;
        let mut issuing_turns = 0u64;
        loop {
            let wake = next_issue.min(next_revoke);
            if wake >= end || tokio::time::Instant::now() >= end {
                break;
            }
            tokio::time::sleep_until(wake).await;
            // A slow answer delays the schedule rather than bunching requests.
            let now = tokio::time::Instant::now();
            next_issue = next_issue.max(now - issue_every);
            next_revoke = next_revoke.max(now - revoke_every);
            let target = preferred % self.channels.len();
            let answered = if next_issue <= next_revoke {
                next_issue += issue_every;
                // A revoked chain is over.
                chains.retain(|c| !self.world.oracle.revocation_attempted(c.status_index));
                // New chains come from attestations made beside the
                // workload (one at a time), while there are too few; each
                // step refreshes the next chain.
                while let Ok(attested) = seeded.try_recv() {
                    attesting = false;
                    match attested {
                        Ok(seed) => chains.push(seed),
                        Err(_) => self.world.observer.count(|c| c.issue_failures += 1),
                    }
                }
                if chains.len() < CHAINS && !attesting {
                    attesting = true;
                    let serial = self.seeds;
                    self.seeds += 1;
                    let attempt = attest(
                        self.world.clone(),
                        self.host.clone(),
                        self.region.clone(),
                        self.channels.clone(),
                        serial,
                        self.timeout,
                    );
                    let done = seeds_tx.clone();
                    tokio::spawn(async move {
                        let _ = done.send(attempt.await).await;
                    });
                }
                if chains.is_empty() {
                    false
                } else {
                    turn = (turn + 1) % chains.len();
                    issuing_turns += 1;
                    let seed = &chains[turn];
                    let (credential, index) = (seed.credential.clone(), seed.status_index);
                    if issuing_turns.is_multiple_of(DELEGATE_EVERY) {
                        let deeper = issuing_turns.is_multiple_of(2 * DELEGATE_EVERY);
                        self.delegate(target, &credential, index, deeper).await
                    } else {
                        self.issue(target, &credential).await
                    }
                }
            } else {
                next_revoke += revoke_every;
                self.revoke(target, &mut revoke_serial).await
            };
            if !answered {
                preferred += 1;
            }
        }
    }

    /// Refresh the seed credential through broker `target`; whether an
    /// answer came.
    async fn issue(&mut self, target: usize, seed_credential: &str) -> bool {
        let workload = &self.world.scenario.workload;
        let sent_ms = elapsed_ms();
        let request = RefreshRequest {
            credential: seed_credential.to_owned(),
            dpop_proof: String::new(),
            ttl_seconds: workload.credential_ttl_s,
            audiences: vec![],
            scopes: vec![],
        };
        let ttl_ms = workload.credential_ttl_s * 1000;
        let answer = tokio::time::timeout(
            self.timeout,
            IssuerClient::new(self.channels[target].clone()).refresh(request),
        )
        .await;
        match answer {
            Ok(Ok(reply)) => {
                self.issued(target, reply.into_inner(), sent_ms, ttl_ms, Vec::new());
                true
            }
            _ => {
                self.world.observer.count(|c| c.issue_failures += 1);
                false
            }
        }
    }

    /// Delegate the seed credential (status `index`) to an agent through
    /// broker `target`, and, when `deeper`, the delegated credential once
    /// more to a tool, for half the life; whether an answer came.
    async fn delegate(&mut self, target: usize, seed: &str, index: u64, deeper: bool) -> bool {
        let ttl_s = self.world.scenario.workload.credential_ttl_s;
        let Some((agent, agent_index)) = self
            .exchange(target, seed, "agent", ttl_s, vec![index])
            .await
        else {
            return false;
        };
        if !deeper {
            return true;
        }
        let ancestors = vec![index, agent_index];
        self.exchange(target, &agent, "tool", (ttl_s / 2).max(1), ancestors)
            .await
            .is_some()
    }

    /// Exchange `parent` for a credential for `<region>-<role>` carrying
    /// `ancestors`; the new credential and its index.
    async fn exchange(
        &mut self,
        target: usize,
        parent: &str,
        role: &str,
        ttl_s: u64,
        ancestors: Vec<u64>,
    ) -> Option<(String, u64)> {
        let sent_ms = elapsed_ms();
        let request = ExchangeRequest {
            subject_token: parent.to_owned(),
            actor: format!("spiffe://sim.example/{}-{role}", self.region),
            ttl_seconds: ttl_s,
            task: format!("sim-{}", self.region),
            ..Default::default()
        };
        let answer = tokio::time::timeout(
            self.timeout,
            IssuerClient::new(self.channels[target].clone()).exchange(request),
        )
        .await;
        match answer {
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
                let issued = (reply.credential.clone(), reply.status_index);
                self.issued(target, reply, sent_ms, ttl_s * 1000, ancestors);
                Some(issued)
            }
            _ => {
                self.world.observer.count(|c| c.issue_failures += 1);
                None
            }
        }
    }

    /// A credential came back from broker `target`.
    fn issued(
        &self,
        target: usize,
        reply: IssueResponse,
        sent_ms: f64,
        ttl_ms: u64,
        ancestors: Vec<u64>,
    ) {
        let now = elapsed_ms();
        let broker_address = &self.brokers[target];
        oracle::check_issuance(&self.world, broker_address, &reply.key_id, now);
        let lease_violation = self.world.oracle.issued(Issued {
            region: self.region.clone(),
            index: reply.status_index,
            token: reply.credential,
            sent_ms,
            issued_ms: now,
            ttl_ms,
            ancestors,
        });
        if let Some(violation) = lease_violation {
            self.world.violate(violation);
        }
        self.world.observer.count(|c| c.issued += 1);
        self.world.note(
            &self.host,
            format_args!(
                "issued index {} key {} via {broker_address}",
                reply.status_index, reply.key_id
            ),
        );
    }

    /// Revoke one of this region's credentials through broker `target`;
    /// whether the answer was definite (or there was nothing to revoke).
    async fn revoke(&mut self, target: usize, serial: &mut u64) -> bool {
        let Some(index) = self
            .world
            .oracle
            .choose_revocation(&self.region, &mut self.rng)
        else {
            return true;
        };
        *serial += 1;
        let request = admin(pb::RevokeRequest {
            request_id: format!("sim-{}-{serial}", self.region),
            revocation: Some(pb::Revocation {
                target: Some(Target::Index(index)),
            }),
        });
        let answer = tokio::time::timeout(
            self.timeout,
            ClusterClient::new(self.channels[target].clone()).revoke(request),
        )
        .await;
        let outcome = match answer {
            Ok(Ok(reply)) => Outcome::Acked {
                epoch: reply.into_inner().epoch,
            },
            Ok(Err(status)) if definite_refusal(status.code()) => Outcome::Refused,
            Ok(Err(_)) | Err(_) => Outcome::Unknown,
        };
        self.world.observer.count(|c| match outcome {
            Outcome::Acked { .. } => c.revocations_acked += 1,
            Outcome::Unknown => c.revocations_unknown += 1,
            Outcome::Refused => c.revocations_refused += 1,
        });
        self.world
            .note(&self.host, format_args!("revoke {index}: {outcome:?}"));
        self.world.oracle.revocation_answered(index, outcome);
        !matches!(outcome, Outcome::Unknown)
    }
}

/// Take join token `serial` of `region`'s client and the seed credential it
/// attests, trying for `patience`: the start of a refresh chain.
async fn attest(
    world: Arc<World>,
    host: String,
    region: String,
    channels: Vec<Channel>,
    serial: u64,
    patience: Duration,
) -> Result<IssueResponse, tonic::Status> {
    let join = first_answer(&channels, patience, |c| {
        let region = region.clone();
        async move {
            ClusterClient::new(c)
                .create_join_token(admin(pb::CreateJoinTokenRequest {
                    request_id: format!("sim-join-{region}-{serial}"),
                    ttl_seconds: 3600,
                    grant: Some(pb::create_join_token_request::Grant::Workload(
                        pb::WorkloadGrant {
                            tenant: TENANT.into(),
                            workload: format!("spiffe://sim.example/{region}"),
                        },
                    )),
                }))
                .await
        }
    })
    .await?
    .into_inner();
    let seed_credential = first_answer(&channels, patience, |c| {
        let token = join.token.clone();
        async move {
            IssuerClient::new(c)
                .issue(IssueRequest {
                    attestation: Some(Attestation::JoinToken(token)),
                    audiences: vec!["sim".into()],
                    scopes: vec!["read".into()],
                    ttl_seconds: 3600,
                    dpop_jkt: String::new(),
                    dpop_proof: String::new(),
                    tenant: String::new(),
                    request_id: String::new(),
                    ..Default::default()
                })
                .await
        }
    })
    .await?
    .into_inner();
    world.note(
        &host,
        format_args!("seed credential index {}", seed_credential.status_index),
    );
    if let Some(violation) = world
        .oracle
        .seeded(seed_credential.status_index, elapsed_ms())
    {
        world.violate(violation);
    }
    Ok(seed_credential)
}
