//! Tests of Cedar policy checking and decisions.

use super::*;
use lapse_credential::WorkloadId;

const POLICY: &str = r#"
        permit(principal == Workload::"spiffe://example.org/payments",
               action == Action::"issue", resource == Tenant::"acme")
        when { ["payments:read", "payments:write"].containsAll(context.scopes)
               && ["billing"].containsAll(context.audiences)
               && context.ttl_seconds <= 900 };
    "#;

/// The example in the README, which the CLI documentation sets.
const README_POLICY: &str = r#"permit(principal == Workload::"spiffe://example.org/payments",
       action == Action::"issue", resource == Tenant::"acme")
when { ["payments:read"].containsAll(context.scopes)
       && ["billing"].containsAll(context.audiences)
       && context.ttl_seconds <= 900 };"#;

const DENY_ALL: &str = "forbid(principal, action, resource);";

fn ask(t: &TenantId, w: &WorkloadId, scopes: &[String], ttl: u64) -> DecisionInputs {
    DecisionInputs {
        kind: DecisionKind::Issue,
        tenant: t.clone(),
        workload: w.clone(),
        scopes: scopes.to_vec(),
        audiences: Vec::new(),
        ttl_seconds: ttl,
        chain_age_seconds: 0,
        parent_scopes: Vec::new(),
        actors: Vec::new(),
        depth: 0,
        task: None,
        on_behalf_of: None,
        intent: None,
        presented_sha256: None,
        policy_sha256: None,
    }
}

/// The message `check` refuses `text` with.
fn refusal(text: &str) -> String {
    match check(text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

/// The schema as a refusal quotes it.
fn schema_line() -> String {
    SchemaLine.to_string()
}

#[test]
fn permits_within_policy_and_denies_beyond_it() {
    let tenant = TenantId::new("acme").unwrap();
    let workload = WorkloadId::new("spiffe://example.org/payments").unwrap();
    let read = vec!["payments:read".to_string()];
    let admin = vec!["payments:admin".to_string()];
    let allowed = decide(Some((3, POLICY)), &ask(&tenant, &workload, &read, 600));
    assert!(allowed.allowed, "{}", allowed.reason);
    assert_eq!(allowed.policy_version, 3);
    assert!(!decide(Some((3, POLICY)), &ask(&tenant, &workload, &admin, 600)).allowed);
    assert!(!decide(Some((3, POLICY)), &ask(&tenant, &workload, &read, 901)).allowed);
    let other = WorkloadId::new("spiffe://example.org/other").unwrap();
    assert!(!decide(Some((3, POLICY)), &ask(&tenant, &other, &read, 60)).allowed);
    let denied = decide(None, &ask(&tenant, &workload, &read, 60));
    assert!(!denied.allowed && denied.reason.contains("default denies"));
    // Different inputs hash differently; the same inputs the same.
    let again = decide(Some((3, POLICY)), &ask(&tenant, &workload, &read, 600));
    assert_eq!(again.input_sha256, allowed.input_sha256);
    assert_ne!(
        decide(Some((3, POLICY)), &ask(&tenant, &workload, &read, 601)).input_sha256,
        allowed.input_sha256
    );
}

#[test]
fn schema_parses() {
    let (_, warnings) = Schema::from_cedarschema_str(SCHEMA).unwrap();
    assert_eq!(warnings.count(), 0);
    assert!(check(POLICY).is_ok());
}

/// The schema and the request are one contract: a policy that uses
/// every entity and context field validates, and deciding with it
/// through the broker's code path turns on each of them. A context
/// field added to the request but not to the schema (or the reverse)
/// makes `request` fail, and this test with it.
#[test]
fn every_field_of_the_schema_reaches_the_decision() {
    const EVERY_FIELD: &str = r#"
            permit(principal == Workload::"spiffe://example.org/payments",
                   action == Action::"issue", resource == Tenant::"acme")
            when { context.scopes.contains("payments:read")
                   && context.audiences.contains("billing")
                   && context.ttl_seconds <= 900
                   && context.exchange
                   && context.chain_age_seconds <= 3600
                   && context.parent_scopes.contains("payments:write")
                   && context.actor == "spiffe://example.org/executor"
                   && context.delegators.contains("spiffe://example.org/planner")
                   && context.delegation_depth <= 2
                   && context.task == "t-1"
                   && context.on_behalf_of == "user:ada"
                   && context.intent like "ab*" };
        "#;
    check(EVERY_FIELD).unwrap();
    let tenant = TenantId::new("acme").unwrap();
    let workload = WorkloadId::new("spiffe://example.org/payments").unwrap();
    let scopes = vec!["payments:read".to_string()];
    let audiences = vec!["billing".to_string()];
    let executor = WorkloadId::new("spiffe://example.org/executor").unwrap();
    let planner = WorkloadId::new("spiffe://example.org/planner").unwrap();
    let full = DecisionInputs {
        kind: DecisionKind::Exchange,
        audiences: audiences.clone(),
        ttl_seconds: 900,
        chain_age_seconds: 3600,
        parent_scopes: vec!["payments:write".into()],
        actors: vec![executor.clone(), planner.clone()],
        depth: 2,
        task: Some("t-1".into()),
        on_behalf_of: Some("user:ada".into()),
        intent: Some("ab".repeat(32)),
        ..ask(&tenant, &workload, &scopes, 900)
    };
    let cache = PolicyCache::default();
    let allowed = cache.decide(Some((1, EVERY_FIELD)), &full);
    assert!(allowed.allowed, "{}", allowed.reason);
    let other_tenant = TenantId::new("other").unwrap();
    let other_workload = WorkloadId::new("spiffe://example.org/other").unwrap();
    let none: Vec<String> = Vec::new();
    for (what, changed) in [
        (
            "tenant",
            DecisionInputs {
                tenant: other_tenant.clone(),
                ..full.clone()
            },
        ),
        (
            "workload",
            DecisionInputs {
                workload: other_workload.clone(),
                ..full.clone()
            },
        ),
        (
            "scopes",
            DecisionInputs {
                scopes: none.clone(),
                ..full.clone()
            },
        ),
        (
            "audiences",
            DecisionInputs {
                audiences: none.clone(),
                ..full.clone()
            },
        ),
        (
            "ttl_seconds",
            DecisionInputs {
                ttl_seconds: 901,
                ..full.clone()
            },
        ),
        (
            "exchange",
            DecisionInputs {
                kind: DecisionKind::Refresh,
                ..full.clone()
            },
        ),
        (
            "parent_scopes",
            DecisionInputs {
                parent_scopes: none.clone(),
                ..full.clone()
            },
        ),
        (
            "actor",
            DecisionInputs {
                actors: vec![planner.clone(), planner.clone()],
                ..full.clone()
            },
        ),
        (
            "delegators",
            DecisionInputs {
                actors: vec![executor.clone(), executor.clone()],
                ..full.clone()
            },
        ),
        (
            "delegation_depth",
            DecisionInputs {
                depth: 3,
                ..full.clone()
            },
        ),
        (
            "task",
            DecisionInputs {
                task: None,
                ..full.clone()
            },
        ),
        (
            "on_behalf_of",
            DecisionInputs {
                on_behalf_of: Some("user:bob".into()),
                ..full.clone()
            },
        ),
        (
            "intent",
            DecisionInputs {
                intent: Some("cd".repeat(32)),
                ..full.clone()
            },
        ),
        (
            "chain_age_seconds",
            DecisionInputs {
                chain_age_seconds: 3601,
                ..full.clone()
            },
        ),
    ] {
        let denied = cache.decide(Some((1, EVERY_FIELD)), &changed);
        assert!(!denied.allowed, "{what}");
        // Denied by the policy, not by an error.
        assert!(
            denied.reason.contains("does not permit"),
            "{what}: {}",
            denied.reason
        );
    }
    // A ttl beyond what Cedar's Long holds is clamped, not an error.
    let huge = cache.decide(
        Some((1, EVERY_FIELD)),
        &DecisionInputs {
            ttl_seconds: u64::MAX,
            ..full.clone()
        },
    );
    assert!(huge.reason.contains("does not permit"), "{}", huge.reason);

    // The check can fail: a context the schema does not describe is refused.
    let mut extra = context_json(&full);
    extra["attestation"] = serde_json::json!("join-token");
    let error = request(&full, extra).unwrap_err().to_string();
    assert!(error.contains("attestation"), "{error}");
    let mut missing = context_json(&full);
    missing.as_object_mut().unwrap().remove("ttl_seconds");
    let error = request(&full, missing).unwrap_err().to_string();
    assert!(error.contains("is not valid for"), "{error}");
}

#[test]
fn syntax_errors_name_line_and_column() {
    let text = "permit(principal, action, resource)\nwhen { context.ttl_seconds <= 900\n       && context.scopes.contains(\"a\") ;";
    assert_eq!(
        refusal(text),
        "policy line 3, column 40: unexpected token `;`"
    );
    assert_eq!(
        refusal("permit(principal, action, resource) when {"),
        "policy line 1, column 43: unexpected end of input"
    );
    // Columns count characters, not bytes (in bytes this is column 61).
    assert_eq!(
        refusal("// é\npermit(principal, action, resource) when { \"ééé\" == 1 } x;"),
        "policy line 2, column 58: unexpected token `;`"
    );
}

#[test]
fn unknown_context_fields_are_refused() {
    let text = r#"permit(principal == Workload::"spiffe://example.org/payments",
       action == Action::"issue", resource == Tenant::"acme")
when { context.ttl <= 900 };"#;
    assert_eq!(
        refusal(text),
        format!(
            "policy line 3, column 8: attribute `ttl` in context for Action::\"issue\" not found; did you mean `task`?; a policy may use only what this schema declares: {}",
            schema_line()
        )
    );
}

#[test]
fn wrong_types_are_refused() {
    let text = "permit(principal, action, resource)\nwhen { context.ttl_seconds <= \"900\" };";
    assert_eq!(
        refusal(text),
        format!(
            "policy line 2, column 31: unexpected type: expected Long but saw String; a policy may use only what this schema declares: {}",
            schema_line()
        )
    );
    let text = "permit(principal, action, resource)\nwhen { context.scopes <= 900 };";
    assert!(
        refusal(text).starts_with(
            "policy line 2, column 8: unexpected type: expected Long but saw Set<String>;"
        ),
        "{}",
        refusal(text)
    );
}

#[test]
fn unknown_actions_and_entity_types_are_refused() {
    assert_eq!(
        refusal(r#"permit(principal, action == Action::"revoke", resource);"#),
        format!(
            "policy line 1, column 1: unable to find an applicable action given the policy scope constraints; policy line 1, column 29: unrecognized action `Action::\"revoke\"`; did you mean `Action::\"issue\"`?; a policy may use only what this schema declares: {}",
            schema_line()
        )
    );
    assert!(
        refusal("permit(principal is Admin, action, resource);")
            .contains("policy line 1, column 21: unrecognized entity type `Admin`"),
        "{}",
        refusal("permit(principal is Admin, action, resource);")
    );
}

#[test]
fn empty_policies_are_refused() {
    let empty = "policy is empty (no statements, only whitespace or comments), and would deny every request; to deny everything, say so explicitly: `forbid(principal, action, resource);`";
    assert_eq!(refusal(""), empty);
    assert_eq!(refusal(" \n\t\n"), empty);
    assert_eq!(refusal("// nothing yet\n  // still nothing\n"), empty);
}

#[test]
fn explicit_deny_all_is_accepted_and_denies() {
    check(DENY_ALL).unwrap();
    check("// no issuance for this tenant\nforbid(principal, action, resource);\n").unwrap();
    let tenant = TenantId::new("acme").unwrap();
    let workload = WorkloadId::new("spiffe://example.org/payments").unwrap();
    let denied = decide(Some((1, DENY_ALL)), &ask(&tenant, &workload, &[], 60));
    assert!(
        !denied.allowed && denied.reason.contains("does not permit"),
        "{}",
        denied.reason
    );
}

#[test]
fn templates_are_refused() {
    assert_eq!(
        refusal("permit(principal == ?principal, action, resource);"),
        "policy has 1 template(s) (`?principal` or `?resource` in the scope); Lapse never links templates, so name the principal or resource instead"
    );
}

/// Every policy the project documents or sets in tests, benchmarks and
/// the simulation validates.
#[test]
fn documented_and_used_policies_are_accepted() {
    let readme = include_str!("../../../../../README.md");
    let example = readme
        .split_once("cat > acme.cedar <<'POLICY'\n")
        .and_then(|(_, rest)| rest.split_once("\nPOLICY\n"))
        .map(|(example, _)| example)
        .expect("the README shows the acme.cedar example");
    assert_eq!(example, README_POLICY);
    for text in [
        README_POLICY, // also tests/feed.rs
        POLICY,        // also tests/issuance.rs
        DENY_ALL,
        "permit(principal, action, resource);", // crates/ledger/tests
        // benches/benches/issue.rs and simulation/src/harness/
        r#"permit(principal, action == Action::"issue", resource == Tenant::"bench");"#,
        r#"permit(principal, action == Action::"issue", resource == Tenant::"sim");"#,
    ] {
        if let Err(e) = check(text) {
            panic!("{text}\n{e}");
        }
    }
}

#[test]
fn refusals_are_bounded_and_quote_little() {
    let long_name = "x".repeat(10_000);
    let text = format!("permit(principal, action, resource) when {{ {long_name} }};\n").repeat(5);
    let message = refusal(&text);
    assert!(message.chars().count() <= 1000, "{}", message.len());
    assert!(
        !message.contains(&"x".repeat(MAX_PROBLEM_CHARS)),
        "{message}"
    );
    let many = "permit(principal, action, resource) when { context.nope };\n".repeat(100);
    let message = refusal(&many);
    assert!(message.chars().count() <= 1000, "{}", message.len());
    assert!(message.contains("and 95 more"), "{message}");
    let huge = "/".repeat(MAX_POLICY_BYTES + 1);
    assert_eq!(
        check(&huge).unwrap_err(),
        PolicyError::TooLarge {
            length: MAX_POLICY_BYTES + 1,
            max: MAX_POLICY_BYTES
        }
    );
}

#[test]
fn line_column_counts_characters_from_one() {
    let text = "ab\né\n\nxyz";
    assert_eq!(line_column(text, 0), (1, 1));
    assert_eq!(line_column(text, 2), (1, 3));
    assert_eq!(line_column(text, 3), (2, 1));
    assert_eq!(line_column(text, 5), (2, 2));
    assert_eq!(line_column(text, 6), (3, 1));
    assert_eq!(line_column(text, 9), (4, 3));
    assert_eq!(line_column(text, 1_000), (4, 4));
    // Inside a character: the position of that character.
    assert_eq!(line_column(text, 4), (2, 1));
}

#[test]
fn malformed_stored_policies_deny_with_the_reason() {
    let tenant = TenantId::new("acme").unwrap();
    let workload = WorkloadId::new("spiffe://example.org/payments").unwrap();
    let denied = decide(
        Some((2, "permit(principal, action, resource) when {")),
        &ask(&tenant, &workload, &[], 60),
    );
    assert_eq!(
        denied.reason,
        "policy version 2 does not parse: policy line 1, column 43: unexpected end of input"
    );
}

#[test]
fn a_deeply_nested_policy_is_refused_before_parsing() {
    let deep = |depth: usize| {
        format!(
            "permit(principal, action, resource) when {{ {}true{} }};",
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    // On a small stack: the refusal must not depend on the stack's size.
    let refusal = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || refusal(&deep(5_000)))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(
        refusal,
        "policy nests brackets 5001 deep, more than the 32 allowed; write the condition with less nesting"
    );
    // Deciding against a stored text that deep refuses, in words.
    let (t, w) = (
        TenantId::new("acme").unwrap(),
        WorkloadId::new("spiffe://example.org/payments").unwrap(),
    );
    let text = deep(5_000);
    let decision = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || decide(Some((3, &text)), &ask(&t, &w, &[], 60)))
        .unwrap()
        .join()
        .unwrap();
    assert!(!decision.allowed);
    assert!(
        decision.reason.contains("nests brackets 5001 deep"),
        "{}",
        decision.reason
    );
}
