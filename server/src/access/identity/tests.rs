//! Verification end to end within the crate: tokens minted with ring, keys
//! served by a loopback issuer.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as URL_SAFE;
use serde_json::json;

use super::test_support::{
    JwksServer, RSA_A_PUBLIC_PEM, Signer, hs256, kubernetes_claims, now, provider_for, with_signature,
};
use super::*;

/// A loopback issuer publishing `signers`, and a service trusting it
/// (discovery, audience `pullpass`) as `edit` adjusts.
async fn trusting(signers: &[&Signer], edit: impl FnOnce(&mut ProviderConfig)) -> (JwksServer, Identities) {
    let server = JwksServer::start().await;
    server.publish(signers);
    let mut config = provider_for(&server, KeySource::Discovery);
    edit(&mut config);
    let identities = Identities::new().unwrap();
    identities.set_providers(vec![config]);
    (server, identities)
}

fn claims(server: &JwksServer) -> Value {
    kubernetes_claims(&server.url(), "pullpass", 600)
}

async fn refusal(identities: &Identities, token: &str) -> Refusal {
    identities.verify(token).await.unwrap_err()
}

#[test]
fn verification_can_run_on_any_runtime_thread() {
    fn assert_send<T: Send>(_: &T) {}
    let identities = Identities::new().unwrap();
    assert_send(&identities.verify("a.b.c"));
    assert!(format!("{identities:?}").starts_with("Identities"));
}

#[tokio::test]
async fn a_kubernetes_token_from_a_discovered_issuer_verifies() {
    let a = Signer::rsa_a("a");
    let (server, identities) = trusting(&[&a], |_| {}).await;
    let verified = identities.verify(&a.token(&claims(&server))).await.unwrap();
    assert_eq!(verified.provider, "cluster");
    assert_eq!(verified.issuer, server.url());
    assert_eq!(verified.subject.as_deref(), Some("system:serviceaccount:ci:builder"));
    assert_eq!(verified.kubernetes_namespace(), Some("ci"));
    assert_eq!(verified.kubernetes_service_account(), Some("builder"));
    assert_eq!(verified.kid.as_deref(), Some("a"));
    assert_eq!((server.discovery_fetches(), server.jwks_fetches()), (1, 1));
}

#[tokio::test]
async fn alg_none_is_refused() {
    let a = Signer::rsa_a("a");
    let (server, identities) = trusting(&[&a], |c| c.allowed_algorithms = SigningAlgorithm::ALL.to_vec()).await;
    for alg in ["none", "None"] {
        let token = with_signature(&json!({"alg": alg, "kid": "a"}), &claims(&server), b"");
        assert_eq!(refusal(&identities, &token).await, Refusal::AlgorithmNotAllowed);
    }
    assert_eq!(server.jwks_fetches(), 0, "refused before any key is looked up");
}

#[tokio::test]
async fn hs256_keyed_with_the_rsa_public_key_is_refused() {
    let a = Signer::rsa_a("a");
    let (server, identities) = trusting(&[&a], |c| c.allowed_algorithms = SigningAlgorithm::ALL.to_vec()).await;
    let token =
        hs256(&json!({"alg": "HS256", "kid": "a", "typ": "JWT"}), &claims(&server), RSA_A_PUBLIC_PEM.as_bytes());
    assert_eq!(refusal(&identities, &token).await, Refusal::AlgorithmNotAllowed);
    // Even a key set that offers the PEM as an HMAC secret gives it no use.
    let set = json!({"keys": [{"kty": "oct", "kid": "a", "k": URL_SAFE.encode(RSA_A_PUBLIC_PEM)}]}).to_string();
    let mut config = provider_for(&server, KeySource::Jwks(set));
    config.allowed_algorithms = SigningAlgorithm::ALL.to_vec();
    identities.set_providers(vec![config]);
    assert_eq!(refusal(&identities, &token).await, Refusal::AlgorithmNotAllowed);
}

#[tokio::test]
async fn an_unknown_kid_answered_by_a_rotation_is_accepted_once_the_cooldown_passed() {
    let (a, b) = (Signer::rsa_a("a"), Signer::rsa_b("b"));
    let (server, identities) = trusting(&[&a], |_| {}).await;
    let t0 = Instant::now();
    let unix = now() as u64;
    identities.verify_at(&a.token(&claims(&server)), t0, unix).await.unwrap();

    server.publish(&[&a, &b]);
    let token_b = b.token(&claims(&server));
    let refused = identities.verify_at(&token_b, t0 + Duration::from_secs(10), unix).await.unwrap_err();
    assert_eq!(refused, Refusal::KeyUnknown, "the last fetch was 10 s ago");
    assert_eq!(server.jwks_fetches(), 1);
    let verified = identities.verify_at(&token_b, t0 + Duration::from_secs(30), unix).await.unwrap();
    assert_eq!(verified.kid.as_deref(), Some("b"));
    assert_eq!(server.jwks_fetches(), 2);
}

#[tokio::test]
async fn a_key_removed_by_a_rotation_stops_verifying_after_the_next_fetch() {
    let (a, b) = (Signer::rsa_a("a"), Signer::rsa_b("b"));
    let (server, identities) = trusting(&[&a, &b], |_| {}).await;
    let t0 = Instant::now();
    let unix = now() as u64;
    let token_a = a.token(&claims(&server));
    identities.verify_at(&token_a, t0, unix).await.unwrap();

    server.publish(&[&b]);
    let minute = t0 + Duration::from_secs(60);
    assert!(identities.verify_at(&token_a, minute, unix).await.is_ok(), "the set is not due yet");
    let refresh = t0 + KeyPolicy::default().refresh_after;
    assert_eq!(identities.verify_at(&token_a, refresh, unix).await.unwrap_err(), Refusal::KeyUnknown);
    let fresh_a = a.token(&claims(&server));
    assert_eq!(identities.verify_at(&fresh_a, refresh, unix).await.unwrap_err(), Refusal::KeyUnknown);
    assert!(identities.verify_at(&b.token(&claims(&server)), refresh, unix).await.is_ok());
}

#[tokio::test]
async fn aud_as_a_string_or_an_array_is_accepted_and_a_wrong_one_refused() {
    let a = Signer::rsa_a("a");
    let (server, identities) =
        trusting(&[&a], |c| c.audiences = vec!["pullpass".to_owned(), "pullpass-eu".to_owned()]).await;
    let with_aud = |aud: Value| {
        let mut claims = claims(&server);
        claims["aud"] = aud;
        a.token(&claims)
    };
    for accepted in [json!("pullpass"), json!(["pullpass"]), json!(["vault", "pullpass-eu"])] {
        assert!(identities.verify(&with_aud(accepted.clone())).await.is_ok(), "{accepted}");
    }
    for refused in [json!("vault"), json!(["vault", "kubernetes"]), json!([]), json!("PULLPASS")] {
        assert_eq!(refusal(&identities, &with_aud(refused.clone())).await, Refusal::Audience, "{refused}");
    }
    assert_eq!(refusal(&identities, &with_aud(json!(7))).await, Refusal::ClaimFormat("aud"));
    let mut without = claims(&server);
    without.as_object_mut().unwrap().remove("aud");
    assert_eq!(refusal(&identities, &a.token(&without)).await, Refusal::ClaimMissing("aud"));
}

#[tokio::test]
async fn exp_nbf_and_iat_as_strings_are_refused() {
    let a = Signer::rsa_a("a");
    let (server, identities) = trusting(&[&a], |_| {}).await;
    for claim in ["exp", "nbf", "iat"] {
        let mut claims = claims(&server);
        claims[claim] = json!(claims[claim].to_string());
        let expected = Refusal::ClaimFormat(claim);
        assert_eq!(refusal(&identities, &a.token(&claims)).await, expected, "{claim}");
    }
}

#[tokio::test]
async fn expiry_and_not_before_are_judged_with_the_clock_skew() {
    let a = Signer::rsa_a("a");
    let (server, identities) = trusting(&[&a], |_| {}).await;
    let at = |iat: i64, nbf: i64, exp: i64| {
        let mut claims = claims(&server);
        let now = now();
        claims["iat"] = json!(now + iat);
        claims["nbf"] = json!(now + nbf);
        claims["exp"] = json!(now + exp);
        a.token(&claims)
    };
    assert!(identities.verify(&at(-300, -300, -20)).await.is_ok(), "expired 20 s ago, within the 30 s skew");
    assert_eq!(refusal(&identities, &at(-300, -300, -40)).await, Refusal::Expired);
    assert!(identities.verify(&at(0, 20, 600)).await.is_ok(), "valid in 20 s, within the skew");
    assert_eq!(refusal(&identities, &at(0, 40, 600)).await, Refusal::NotYetValid);
    assert_eq!(refusal(&identities, &at(40, 0, 600)).await, Refusal::NotYetValid, "issued in the future");
}

#[tokio::test]
async fn a_lifetime_over_the_cap_is_refused() {
    let a = Signer::rsa_a("a");
    let (server, identities) = trusting(&[&a], |_| {}).await;
    let lasting = |seconds: i64| a.token(&kubernetes_claims(&server.url(), "pullpass", seconds));
    assert!(identities.verify(&lasting(3600)).await.is_ok());
    assert_eq!(refusal(&identities, &lasting(3601)).await, Refusal::LifetimeOverCap);
    assert_eq!(refusal(&identities, &lasting(365 * 24 * 3600)).await, Refusal::LifetimeOverCap, "a default pod token");
    let mut no_iat = claims(&server);
    no_iat.as_object_mut().unwrap().remove("iat");
    assert_eq!(refusal(&identities, &a.token(&no_iat)).await, Refusal::ClaimMissing("iat"));
    let mut no_exp = claims(&server);
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(refusal(&identities, &a.token(&no_exp)).await, Refusal::ClaimMissing("exp"));
}

#[tokio::test]
async fn a_token_signed_by_another_issuers_key_is_refused() {
    let a = Signer::rsa_a("a");
    let (server, identities) = trusting(&[&a], |_| {}).await;
    let impostor = Signer::rsa_other("a");
    assert_eq!(refusal(&identities, &impostor.token(&claims(&server))).await, Refusal::Signature);
    let unpublished = Signer::rsa_other("other");
    assert_eq!(refusal(&identities, &unpublished.token(&claims(&server))).await, Refusal::KeyUnknown);
    let mut tampered = a.token(&claims(&server));
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    assert_eq!(refusal(&identities, &tampered).await, Refusal::Signature);
}

#[tokio::test]
async fn headers_that_name_a_key_are_refused_and_their_urls_never_fetched() {
    let a = Signer::rsa_a("a");
    let (server, identities) = trusting(&[&a], |_| {}).await;
    let evil = format!("{}/evil", server.url());
    for (name, value) in [("jku", json!(evil)), ("x5u", json!(evil)), ("jwk", a.jwk()), ("crit", json!(["exp"]))] {
        let mut header = json!({"alg": "RS256", "kid": "a"});
        header[name] = value;
        let token = a.sign(header, &claims(&server));
        assert_eq!(refusal(&identities, &token).await, Refusal::ForbiddenHeader(name));
    }
    assert_eq!(server.other_requests(), 0);
    assert_eq!(server.jwks_fetches(), 0);
}

#[tokio::test]
async fn an_unknown_issuer_is_refused_without_any_fetch() {
    let a = Signer::rsa_a("a");
    let (server, identities) = trusting(&[&a], |_| {}).await;
    let mut claims = claims(&server);
    claims["iss"] = json!(format!("{}/", server.url()));
    assert_eq!(refusal(&identities, &a.token(&claims)).await, Refusal::IssuerUnknown, "iss must match exactly");
    claims["iss"] = json!(7);
    assert_eq!(refusal(&identities, &a.token(&claims)).await, Refusal::ClaimFormat("iss"));
    claims.as_object_mut().unwrap().remove("iss");
    assert_eq!(refusal(&identities, &a.token(&claims)).await, Refusal::ClaimMissing("iss"));
    assert_eq!(server.discovery_fetches() + server.jwks_fetches(), 0);
    let no_providers = Identities::new().unwrap();
    assert_eq!(
        refusal(&no_providers, &a.token(&kubernetes_claims(&server.url(), "pullpass", 60))).await,
        Refusal::IssuerUnknown
    );
}

#[tokio::test]
async fn ec_ed25519_and_pss_tokens_verify_when_their_algorithm_is_allowed() {
    let (rsa, ec, ed) = (Signer::rsa_a("rsa"), Signer::es256("ec"), Signer::ed25519("ed"));
    let (server, identities) = trusting(&[&rsa, &ec, &ed], |_| {}).await;
    assert!(identities.verify(&ec.token(&claims(&server))).await.is_ok(), "ES256 is a default");
    assert_eq!(refusal(&identities, &ed.token(&claims(&server))).await, Refusal::AlgorithmNotAllowed);
    let pss = rsa.sign(json!({"alg": "PS256", "kid": "rsa"}), &claims(&server));
    assert_eq!(refusal(&identities, &pss).await, Refusal::AlgorithmNotAllowed);

    let mut config = provider_for(&server, KeySource::JwksUri(server.jwks_url()));
    config.allowed_algorithms = SigningAlgorithm::ALL.to_vec();
    identities.set_providers(vec![config]);
    assert!(identities.verify(&ed.token(&claims(&server))).await.is_ok());
    for alg in ["RS384", "RS512", "PS256", "PS384", "PS512"] {
        let token = rsa.sign(json!({"alg": alg, "kid": "rsa"}), &claims(&server));
        assert!(identities.verify(&token).await.is_ok(), "{alg}");
    }
}

#[tokio::test]
async fn a_key_of_another_type_than_the_algorithm_is_refused() {
    let (rsa, ec) = (Signer::rsa_a("rsa"), Signer::es256("ec"));
    let (server, identities) = trusting(&[&rsa, &ec], |_| {}).await;
    let ec_under_rsa_kid = ec.sign(json!({"alg": "ES256", "kid": "rsa"}), &claims(&server));
    assert_eq!(refusal(&identities, &ec_under_rsa_kid).await, Refusal::KeyTypeMismatch);
    let rsa_under_ec_kid = rsa.sign(json!({"alg": "RS256", "kid": "ec"}), &claims(&server));
    assert_eq!(refusal(&identities, &rsa_under_ec_kid).await, Refusal::KeyTypeMismatch);
}

#[tokio::test]
async fn malformed_tokens_are_refused_as_such() {
    let a = Signer::rsa_a("a");
    let (server, identities) = trusting(&[&a], |_| {}).await;
    let good = a.token(&claims(&server));
    let (header, rest) = good.split_once('.').unwrap();
    for token in [
        "".to_owned(),
        "pp_notajwt".to_owned(),
        format!("{header}.{rest}.extra"),
        format!("{header}.e30.{}", rest.rsplit_once('.').unwrap().1),
        format!("{}.{rest}", URL_SAFE.encode("{\"kid\":\"a\"}")),
        format!("{header}.{}.sig", URL_SAFE.encode("[1,2]")),
    ] {
        let refused = refusal(&identities, &token).await;
        assert!(matches!(refused, Refusal::Malformed | Refusal::ClaimMissing("iss")), "{token}: {refused:?}");
    }
    let mut claims = claims(&server);
    claims["sub"] = json!(7);
    assert_eq!(refusal(&identities, &a.token(&claims)).await, Refusal::ClaimFormat("sub"));
}

#[tokio::test]
async fn verified_tokens_are_remembered_until_they_expire_or_the_cache_is_cleared() {
    let a = Signer::rsa_a("a");
    let (server, identities) = trusting(&[&a], |_| {}).await;
    let token = a.token(&claims(&server));
    let first = identities.verify(&token).await.unwrap();
    let again = identities.verify(&token).await.unwrap();
    assert!(Arc::ptr_eq(&first, &again), "remembered");

    identities.clear();
    let after_clear = identities.verify(&token).await.unwrap();
    assert!(!Arc::ptr_eq(&first, &after_clear));

    let past_exp = identities.verify_at(&token, Instant::now(), first.expires_at).await.unwrap();
    assert!(!Arc::ptr_eq(&after_clear, &past_exp), "not reused at its exp");

    // The same providers again keep their keys; every result is forgotten.
    let fetches = server.jwks_fetches();
    identities.set_providers(vec![provider_for(&server, KeySource::Discovery)]);
    let after_reload = identities.verify(&token).await.unwrap();
    assert!(!Arc::ptr_eq(&past_exp, &after_reload));
    assert_eq!(server.jwks_fetches(), fetches);

    let mut twin = provider_for(&server, KeySource::Jwks(json!({"keys": [Signer::rsa_b("a").jwk()]}).to_string()));
    twin.id = "twin".to_owned();
    identities.set_providers(vec![provider_for(&server, KeySource::Discovery), twin]);
    assert_eq!(
        identities.verify(&token).await.unwrap().provider,
        "cluster",
        "of two providers for one issuer, the first"
    );

    identities.set_providers(vec![]);
    assert_eq!(
        refusal(&identities, &token).await,
        Refusal::IssuerUnknown,
        "a removed provider's tokens are not remembered"
    );
}

#[tokio::test]
async fn a_result_verified_across_a_change_is_not_remembered() {
    let a = Signer::rsa_a("a");
    let (server, identities) = trusting(&[&a], |_| {}).await;
    let identities = Arc::new(identities);
    let token = a.token(&claims(&server));
    server.delay_answers(Duration::from_millis(300));
    let verifying = tokio::spawn({
        let (identities, token) = (identities.clone(), token.clone());
        async move { identities.verify(&token).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.discovery_fetches() == 0 {
        assert!(Instant::now() < deadline, "the verification never asked for keys");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    identities.clear(); // a binding changed while the keys were on their way
    let first = verifying.await.unwrap().unwrap();
    let second = identities.verify(&token).await.unwrap();
    assert!(!Arc::ptr_eq(&first, &second), "the result from before the change was not kept");
    let third = identities.verify(&token).await.unwrap();
    assert!(Arc::ptr_eq(&second, &third));
}

#[tokio::test]
async fn refusals_never_show_the_token_or_a_claim_value() {
    const CANARY: &str = "CANARY7f3a";
    let a = Signer::rsa_a("a");
    let (server, identities) = trusting(&[&a], |_| {}).await;
    let mut claims = claims(&server);
    claims["sub"] = json!(format!("system:serviceaccount:{CANARY}:x"));
    claims["kubernetes.io"]["namespace"] = json!(CANARY);
    let mut tokens = vec![a.sign(json!({"alg": "RS256", "kid": format!("{CANARY}-kid")}), &claims)];
    for (claim, value) in [
        ("aud", json!(CANARY)),
        ("exp", json!(CANARY)),
        ("nbf", json!(CANARY)),
        ("iss", json!(CANARY)),
        ("sub", json!([CANARY])),
    ] {
        let mut bad = claims.clone();
        bad[claim] = value;
        tokens.push(a.token(&bad));
    }
    tokens.push(a.sign(json!({"alg": CANARY, "kid": "a"}), &claims));
    tokens.push(a.sign(json!({"alg": "RS256", "kid": "a", "jku": CANARY}), &claims));
    tokens.push(Signer::rsa_other("a").token(&claims));
    tokens.push(format!("{CANARY}.{CANARY}.{CANARY}"));
    let mut seen = std::collections::HashSet::new();
    for token in &tokens {
        let refused = refusal(&identities, token).await;
        seen.insert(refused.label());
        for shown in [refused.to_string(), format!("{refused:?}")] {
            assert!(!shown.contains(CANARY) && !shown.contains(token.as_str()), "{shown}");
        }
    }
    assert!(seen.len() >= 7, "{seen:?}");
    let verified = identities.verify(&a.token(&claims)).await.unwrap();
    assert!(!format!("{verified:?}").contains(CANARY));
}

fn project(name: &str) -> ProjectName {
    ProjectName::parse(name).unwrap()
}

fn rule(name: &str, bound: &[(&str, &str)], role: Role, projects: &[&str]) -> BindingRule {
    BindingRule {
        name: name.to_owned(),
        provider: "cluster".to_owned(),
        bound_claims: bound.iter().map(|(c, p)| (c.to_string(), p.to_string())).collect(),
        role,
        allowed_projects: projects.iter().map(|p| project(p)).collect(),
    }
}

fn kubernetes_identity() -> Verified {
    let Value::Object(claims) = kubernetes_claims("https://cluster.example", "pullpass", 600) else { unreachable!() };
    Verified::for_tests("cluster", claims)
}

#[test]
fn matching_bindings_grant_the_union_of_their_projects() {
    let verified = kubernetes_identity();
    let bindings = vec![
        rule("ns", &[("/kubernetes.io/namespace", "ci")], Role::Launcher, &["rnaseq", "web"]),
        rule("sa", &[("sub", "system:serviceaccount:ci:*")], Role::Launcher, &["web", "atlas"]),
        rule("other-ns", &[("/kubernetes.io/namespace", "prod")], Role::Launcher, &["prod"]),
    ];
    let grant = resolve(&verified, &bindings).unwrap();
    assert_eq!(grant.role, Role::Launcher);
    assert_eq!(grant.projects, vec![project("atlas"), project("rnaseq"), project("web")]);
    assert_eq!(grant.bindings, vec!["ns".to_owned(), "sa".to_owned()]);

    let mut all = bindings.clone();
    all.push(rule("everything", &[("/kubernetes.io/serviceaccount/name", "builder")], Role::Launcher, &[]));
    assert_eq!(resolve(&verified, &all).unwrap().projects, vec![], "a binding without projects grants all");
}

#[test]
fn bindings_that_disagree_on_the_role_grant_viewer() {
    let verified = kubernetes_identity();
    let bindings = vec![
        rule("launch", &[("/kubernetes.io/namespace", "ci")], Role::Launcher, &["web"]),
        rule("look", &[("sub", "system:serviceaccount:ci:builder")], Role::Viewer, &[]),
    ];
    assert_eq!(resolve(&verified, &bindings).unwrap().role, Role::Viewer);
}

#[test]
fn no_grant_without_a_matching_binding_of_the_tokens_provider() {
    let verified = kubernetes_identity();
    assert_eq!(resolve(&verified, &[]), None);
    let other_provider = BindingRule {
        provider: "github".to_owned(),
        ..rule("gh", &[("sub", "system:serviceaccount:ci:builder")], Role::Launcher, &[])
    };
    let admin = rule("admin", &[("sub", "system:serviceaccount:ci:builder")], Role::Admin, &[]);
    let audience_only = rule("aud", &[("aud", "pullpass")], Role::Launcher, &[]);
    let glob_across_colon = rule("glob", &[("sub", "system:serviceaccount:c*")], Role::Launcher, &[]);
    assert_eq!(resolve(&verified, &[other_provider, admin, audience_only, glob_across_colon]), None);
}

#[test]
fn provider_settings_are_checked_and_bounded() {
    let base = ProviderConfig::new("k8s", "https://cluster.example", KeySource::Discovery, &["pullpass"]);
    assert_eq!(base.validate(), Ok(()));
    let inline = json!({"keys": [Signer::rsa_a("a").jwk()]}).to_string();
    type Edit = fn(&mut ProviderConfig);
    let cases: Vec<(&str, Edit)> = vec![
        ("identity_provider.clock_skew", |c| c.clock_skew = Duration::from_secs(61)),
        ("identity_provider.max_token_lifetime", |c| c.max_token_lifetime = Duration::from_secs(24 * 3600 + 1)),
        ("identity_provider.max_token_lifetime", |c| c.max_token_lifetime = Duration::ZERO),
        ("identity_provider.audiences", |c| c.audiences.clear()),
        ("identity_provider.audiences", |c| c.audiences = vec![String::new()]),
        ("identity_provider.allowed_algorithms", |c| c.allowed_algorithms.clear()),
        ("identity_provider.issuer", |c| c.issuer = "cluster".to_owned()),
        ("identity_provider.issuer", |c| c.issuer = "http://cluster.example".to_owned()),
        ("identity_provider.issuer", |c| c.issuer = String::new()),
        ("identity_provider.jwks_uri", |c| c.key_source = KeySource::JwksUri("http://10.0.0.1/jwks".to_owned())),
        ("identity_provider.jwks", |c| c.key_source = KeySource::Jwks("{\"keys\":[]}".to_owned())),
        ("identity_provider.jwks", |c| c.key_source = KeySource::Jwks("nope".to_owned())),
        ("identity_provider.ca_certificates", |c| c.ca_certificates_pem = "not a certificate".to_owned()),
    ];
    for (field, edit) in cases {
        let mut config = base.clone();
        edit(&mut config);
        let Err(Error::InvalidArgument(violations)) = config.validate() else { panic!("{field}: accepted") };
        assert_eq!(violations[0].field, field);
    }
    let mut cluster = base.clone();
    cluster.issuer = "kubernetes.default.svc".to_owned();
    cluster.key_source = KeySource::Jwks(inline);
    assert_eq!(cluster.validate(), Ok(()), "an inline key set needs no issuer URL");
    let mut local = base;
    local.key_source = KeySource::JwksUri("http://127.0.0.1:8080/openid/v1/jwks".to_owned());
    assert_eq!(local.validate(), Ok(()));
}
