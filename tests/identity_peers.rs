//! The workload-identity test peers test themselves, before any test of
//! pullpass leans on them: the PyJWT issuer (`support/fixtures/identity.py`)
//! and npm's oidc-provider (`support/fixtures/oidc_provider.cjs`) start,
//! serve valid discovery documents and key sets, and mint tokens that two
//! verifiers independent of pullpass accept (PyJWT's PyJWKClient and npm's
//! jose, each fetching the key set itself); each hostile token is exactly
//! what it claims to be (checked on its bytes, with ring where a verifier
//! would refuse before looking); rotations add and remove keys; and no
//! fixture writes a token to its log.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pullpass_tests::identity::{
    Expect, Hostile, IdentityIssuer, IssuerOptions, OidcProvider, decode_hs256_with_pyjwt, decode_unverified,
    verify_with_jose, verify_with_pyjwt,
};
use pullpass_tests::registry::{http_request, python};
use serde_json::{Value, json};

const AUDIENCE: &str = "pullpass";
const ALL_ALGORITHMS: [&str; 4] = ["RS256", "ES256", "PS256", "EdDSA"];

fn expect(issuer: &IdentityIssuer) -> Expect {
    Expect::new(&issuer.jwks_uri(), issuer.issuer(), AUDIENCE).algorithms(&ALL_ALGORITHMS)
}

/// Verifies with both independent verifiers; returns the claims.
fn verified_by_both(token: &str, expect: &Expect) -> Value {
    let by_pyjwt = verify_with_pyjwt(token, expect).unwrap_or_else(|r| panic!("PyJWT refused: {r:?}"));
    let by_jose = verify_with_jose(token, expect).unwrap_or_else(|r| panic!("jose refused: {r:?}"));
    assert_eq!(by_pyjwt.claims, by_jose.claims);
    by_pyjwt.claims
}

fn number(value: &Value) -> i64 {
    value.as_i64().unwrap_or_else(|| panic!("not an integer: {value}"))
}

fn signing_input_and_signature(token: &str) -> (String, Vec<u8>) {
    let (input, signature) = token.rsplit_once('.').expect("three segments");
    (input.to_owned(), URL_SAFE_NO_PAD.decode(signature).expect("base64url signature"))
}

/// The JWK of `kid` in the issuer's key set.
fn published_jwk(issuer: &IdentityIssuer, kid: &str) -> Option<Value> {
    issuer.jwks()["keys"].as_array().expect("keys").iter().find(|k| k["kid"] == kid).cloned()
}

#[test]
fn the_issuer_serves_discovery_and_a_key_set_whose_kids_are_kubernetes_key_ids() {
    let issuer = IdentityIssuer::start_kubernetes();
    assert_eq!(issuer.issuer(), issuer.url());
    let discovery = issuer.discovery();
    assert_eq!(discovery["issuer"], issuer.issuer());
    assert_eq!(discovery["jwks_uri"], issuer.jwks_uri());
    assert!(issuer.jwks_uri().ends_with("/openid/v1/jwks"), "{}", issuer.jwks_uri());
    assert_eq!(discovery["response_types_supported"], json!(["id_token"]));
    assert_eq!(discovery["subject_types_supported"], json!(["public"]));
    assert_eq!(discovery["id_token_signing_alg_values_supported"], json!(["ES256", "EdDSA", "PS256", "RS256"]));

    let jwks = issuer.jwks();
    let keys = jwks["keys"].as_array().expect("keys");
    let algs: Vec<&str> = keys.iter().map(|k| k["alg"].as_str().expect("alg")).collect();
    assert_eq!(algs, ["RS256", "PS256", "ES256", "EdDSA"]);
    for key in keys {
        assert_eq!(key["use"], "sig", "{key}");
        assert!(key.get("d").is_none() && key.get("p").is_none(), "a private member is published: {key}");
    }
    // Each kid is base64url(SHA-256(DER SubjectPublicKeyInfo)), as
    // Kubernetes derives it: recomputed by cryptography from the JWK.
    let script = "import base64, hashlib, json, sys\n\
                  import jwt\n\
                  from cryptography.hazmat.primitives import serialization\n\
                  out = []\n\
                  for k in json.load(sys.stdin)['keys']:\n\
                  \x20   der = jwt.PyJWK(k).key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)\n\
                  \x20   out.append([k['kid'], base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b'=').decode()])\n\
                  print(json.dumps(out))\n";
    let mut child = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), jwks.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the kid check failed");
    let pairs: Vec<(String, String)> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(pairs.len(), 4);
    for (kid, derived) in pairs {
        assert_eq!(kid, derived);
    }

    let stats = issuer.stats();
    assert_eq!((stats.discovery, stats.jwks, stats.foreign_fetches), (1, 1, 0));
}

#[test]
fn kubernetes_tokens_have_the_service_account_layout_and_verify_independently() {
    let issuer = IdentityIssuer::start_kubernetes();
    let token = issuer.mint_kubernetes("ci", "builder", AUDIENCE);
    let (header, _) = decode_unverified(&token);
    assert_eq!(header, json!({"alg": "RS256", "kid": issuer.current_kid("RS256")}), "no typ, as Kubernetes");
    let claims = verified_by_both(&token, &expect(&issuer));
    assert_eq!(claims["aud"], json!([AUDIENCE]));
    assert_eq!(claims["iss"], issuer.issuer());
    assert_eq!(claims["sub"], "system:serviceaccount:ci:builder");
    let k8s = &claims["kubernetes.io"];
    assert_eq!(k8s["namespace"], "ci");
    assert_eq!(k8s["serviceaccount"]["name"], "builder");
    for uid in [&k8s["serviceaccount"]["uid"], &k8s["pod"]["uid"], &k8s["node"]["uid"]] {
        assert_eq!(uid.as_str().expect("uid").len(), 36, "a UUID: {uid}");
    }
    assert!(k8s["pod"]["name"].is_string() && k8s["node"]["name"].is_string());
    assert_eq!(number(&claims["nbf"]), number(&claims["iat"]));
    assert_eq!(number(&claims["exp"]) - number(&claims["iat"]), 3600);
    assert!(claims["jti"].is_string());

    // ES256 too; the service account's uid is the same on every token.
    let es256 = issuer.mint(json!({"kind": "kubernetes", "namespace": "ci", "service_account": "builder",
        "audience": [AUDIENCE], "alg": "ES256"}));
    assert_eq!(decode_unverified(&es256).0["kid"], issuer.current_kid("ES256"));
    let again = verified_by_both(&es256, &expect(&issuer));
    assert_eq!(again["kubernetes.io"]["serviceaccount"]["uid"], k8s["serviceaccount"]["uid"]);
    assert!(issuer.logs().is_empty(), "the issuer logged: {}", issuer.logs());
}

#[test]
fn github_tokens_carry_the_repository_owner_id_and_verify_independently() {
    let issuer = IdentityIssuer::start();
    let token = issuer.mint(json!({"kind": "github", "repository": "octo-org/app", "repository_owner_id": "4242",
        "audience": AUDIENCE, "alg": "PS256"}));
    let (header, _) = decode_unverified(&token);
    assert_eq!((header["typ"].as_str(), header["alg"].as_str()), (Some("JWT"), Some("PS256")));
    let claims = verified_by_both(&token, &expect(&issuer));
    assert_eq!(claims["aud"], AUDIENCE, "GitHub's aud is a string");
    assert_eq!(claims["sub"], "repo:octo-org/app:ref:refs/heads/main");
    assert_eq!(claims["repository"], "octo-org/app");
    assert_eq!(claims["repository_owner"], "octo-org");
    assert_eq!(claims["repository_owner_id"], "4242");
    assert_eq!(claims["ref"], "refs/heads/main");
    assert_eq!(claims["runner_environment"], "github-hosted");
    for name in ["repository_id", "actor", "workflow_ref", "job_workflow_ref", "event_name", "sha", "run_id"] {
        assert!(claims[name].is_string(), "{name} missing: {claims}");
    }
    assert_eq!(number(&claims["exp"]) - number(&claims["iat"]), 300);
    assert_eq!(number(&claims["nbf"]), number(&claims["iat"]) - 300);

    let with_environment = issuer.mint(json!({"kind": "github", "repository": "octo-org/app",
        "environment": "prod"}));
    let claims = verified_by_both(&with_environment, &expect(&issuer));
    assert_eq!(claims["sub"], "repo:octo-org/app:environment:prod");
    assert_eq!(claims["environment"], "prod");
}

#[test]
fn gitlab_tokens_carry_project_path_and_ref_protected_as_a_string_and_verify_independently() {
    let issuer = IdentityIssuer::start();
    let protected = issuer.mint_gitlab("acme/builds", true, AUDIENCE);
    let claims = verified_by_both(&protected, &expect(&issuer));
    assert_eq!(claims["project_path"], "acme/builds");
    assert_eq!(claims["namespace_path"], "acme");
    assert_eq!(claims["ref_protected"], "true", "GitLab's ref_protected is a string");
    assert_eq!(claims["sub"], "project_path:acme/builds:ref_type:branch:ref:main");
    for name in ["namespace_id", "project_id", "pipeline_source", "user_login", "ref_path", "runner_environment"] {
        assert!(claims[name].is_string(), "{name} missing: {claims}");
    }
    assert_eq!(number(&claims["exp"]) - number(&claims["iat"]), 3600);
    assert_eq!(number(&claims["nbf"]), number(&claims["iat"]) - 5);

    let unprotected = issuer.mint(json!({"kind": "gitlab", "project_path": "acme/builds", "ref_protected": false,
        "alg": "EdDSA"}));
    assert_eq!(decode_unverified(&unprotected).0["alg"], "EdDSA");
    assert_eq!(verified_by_both(&unprotected, &expect(&issuer))["ref_protected"], "false");
}

#[test]
fn mint_overrides_reach_the_token() {
    let issuer = IdentityIssuer::start();
    let minted = issuer.mint_full(json!({
        "kind": "kubernetes", "namespace": "ci", "service_account": "builder",
        "audience": AUDIENCE, "lifetime": 7200, "iat_offset": -60, "nbf_offset": 30,
        "claims": {"jti": null, "extra": {"a": 1}}, "kid": "chosen-kid", "header": {"typ": "JWT"},
    }));
    let (header, claims) = decode_unverified(&minted.token);
    assert_eq!(header, minted.header);
    assert_eq!(claims, minted.claims);
    assert_eq!(header["kid"], "chosen-kid");
    assert_eq!(minted.kid.as_deref(), Some("chosen-kid"));
    assert_eq!(header["typ"], "JWT");
    assert_eq!(claims["aud"], AUDIENCE, "a string audience stays a string");
    assert_eq!(number(&claims["exp"]) - number(&claims["iat"]), 7200);
    assert_eq!(number(&claims["nbf"]) - number(&claims["iat"]), 30);
    assert!(claims.get("jti").is_none(), "null removes a claim");
    assert_eq!(claims["extra"], json!({"a": 1}));
    assert!(!format!("{minted:?}").contains(&minted.token), "Debug shows the token");

    // Expired, and not yet valid, as both verifiers see them.
    let expired = issuer.mint(json!({"kind": "kubernetes", "audience": [AUDIENCE], "iat_offset": -600,
        "exp_offset": -120}));
    assert_eq!(verify_with_pyjwt(&expired, &expect(&issuer)).unwrap_err().error, "ExpiredSignatureError");
    assert_eq!(verify_with_jose(&expired, &expect(&issuer)).unwrap_err().error, "ERR_JWT_EXPIRED");
    let early = issuer.mint(json!({"kind": "kubernetes", "audience": [AUDIENCE], "iat_offset": 600}));
    assert_eq!(verify_with_pyjwt(&early, &expect(&issuer)).unwrap_err().error, "ImmatureSignatureError");
    let refused = verify_with_jose(&early, &expect(&issuer)).unwrap_err();
    assert_eq!((refused.error.as_str(), refused.claim.as_deref()), ("ERR_JWT_CLAIM_VALIDATION_FAILED", Some("nbf")));

    // A wrong audience, and a bad request that names what is wrong.
    let other = issuer.mint_kubernetes("ci", "builder", "someone-else");
    assert_eq!(verify_with_pyjwt(&other, &expect(&issuer)).unwrap_err().error, "InvalidAudienceError");
    let refusal = issuer.try_mint(json!({"kind": "kubernetes", "alg": "ES512"})).unwrap_err();
    assert!(refusal.contains("no key for ES512"), "{refusal}");
    assert!(issuer.try_mint(json!({"kind": "nobody"})).unwrap_err().contains("kind must be one of"));
}

#[test]
fn an_alg_none_token_is_unsigned_and_both_verifiers_refuse_it() {
    let issuer = IdentityIssuer::start();
    let minted = issuer.mint_hostile(Hostile::AlgNone, json!({"kind": "kubernetes", "audience": [AUDIENCE]}));
    assert!(minted.token.ends_with('.'), "an empty signature");
    assert_eq!(minted.header["alg"], "none");
    assert_eq!(minted.header["kid"], issuer.current_kid("RS256"));
    assert_eq!(verify_with_pyjwt(&minted.token, &expect(&issuer)).unwrap_err().error, "InvalidAlgorithmError");
    assert_eq!(verify_with_jose(&minted.token, &expect(&issuer)).unwrap_err().error, "ERR_JOSE_ALG_NOT_ALLOWED");
}

#[test]
fn an_hs256_token_is_keyed_with_the_rsa_public_key_pem_which_pyjwt_refuses_as_a_secret() {
    let issuer = IdentityIssuer::start();
    let minted = issuer.mint_hostile(Hostile::Hs256WithPublicKey, json!({"kind": "github", "audience": AUDIENCE}));
    let kid = issuer.current_kid("RS256");
    assert_eq!((minted.header["alg"].as_str(), minted.kid.as_deref()), (Some("HS256"), Some(kid.as_str())));
    let pem = issuer.public_key_pem(&kid);
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "SubjectPublicKeyInfo PEM");
    let (input, signature) = signing_input_and_signature(&minted.token);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, pem.as_bytes());
    assert!(ring::hmac::verify(&key, input.as_bytes(), &signature).is_ok(), "HMAC-SHA256 keyed with the PEM");
    // The CVE-2022-29217 fix: PyJWT will not take a public key as a secret.
    assert_eq!(decode_hs256_with_pyjwt(&minted.token, &pem).unwrap_err().error, "InvalidKeyError");
    assert_eq!(verify_with_pyjwt(&minted.token, &expect(&issuer)).unwrap_err().error, "InvalidAlgorithmError");
    assert_eq!(verify_with_jose(&minted.token, &expect(&issuer)).unwrap_err().error, "ERR_JOSE_ALG_NOT_ALLOWED");
}

#[test]
fn string_exp_and_nbf_ride_on_a_good_signature_and_jose_refuses_them() {
    let issuer = IdentityIssuer::start();
    for (variant, claim) in [(Hostile::ExpAsString, "exp"), (Hostile::NbfAsString, "nbf")] {
        let minted = issuer.mint_hostile(variant, json!({"kind": "kubernetes", "audience": [AUDIENCE]}));
        let value = minted.claims[claim].as_str().unwrap_or_else(|| panic!("{claim} is not a string"));
        value.parse::<i64>().expect("the right number, as a string");
        let good = verify_with_pyjwt(&minted.token, &Expect::signature_only(&issuer.jwks_uri()));
        assert_eq!(good.expect("the signature is good").claims[claim], value);
        let refused = verify_with_jose(&minted.token, &expect(&issuer)).unwrap_err();
        assert_eq!(
            (refused.error.as_str(), refused.claim.as_deref()),
            ("ERR_JWT_CLAIM_VALIDATION_FAILED", Some(claim))
        );
        // PyJWT 2.15 reads a numeric string with int(): not a check to lean on.
    }
}

#[test]
fn jku_x5u_jwk_and_crit_headers_ride_on_a_good_signature_and_nothing_fetches_them() {
    let issuer = IdentityIssuer::start();
    let request = json!({"kind": "kubernetes", "audience": [AUDIENCE]});
    for (variant, field) in [
        (Hostile::JkuHeader, "jku"),
        (Hostile::X5uHeader, "x5u"),
        (Hostile::JwkHeader, "jwk"),
        (Hostile::CritHeader, "crit"),
    ] {
        let minted = issuer.mint_hostile(variant, request.clone());
        assert!(minted.header.get(field).is_some(), "{field}: {}", minted.header);
        assert_eq!(minted.header["kid"], issuer.current_kid("RS256"));
        verify_with_pyjwt(&minted.token, &Expect::signature_only(&issuer.jwks_uri()))
            .unwrap_or_else(|r| panic!("{field}: the signature is not good: {r:?}"));
        match variant {
            Hostile::JkuHeader | Hostile::X5uHeader => {
                let url = minted.header[field].as_str().expect("a URL");
                assert!(url.starts_with(&format!("{}/foreign/", issuer.url())), "{url}");
            }
            Hostile::JwkHeader => {
                assert_eq!(Some(minted.header["jwk"].clone()), published_jwk(&issuer, &issuer.current_kid("RS256")));
            }
            _ => {
                assert_eq!(minted.header["crit"], json!(["pullpass-test"]));
                assert_eq!(verify_with_pyjwt(&minted.token, &expect(&issuer)).unwrap_err().error, "InvalidTokenError");
                assert_eq!(
                    verify_with_jose(&minted.token, &expect(&issuer)).unwrap_err().error,
                    "ERR_JOSE_NOT_SUPPORTED"
                );
            }
        }
    }
    assert_eq!(issuer.stats().foreign_fetches, 0, "a verifier fetched a URL a token named");
    // The URLs do answer (and count) when fetched.
    let (status, body) = http_request(issuer.address(), "GET", "/foreign/jwks", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(issuer.stats().foreign_fetches, 1);
}

#[test]
fn foreign_keys_and_unknown_kids_fail_only_on_the_key() {
    let issuer = IdentityIssuer::start();
    let request = json!({"kind": "github", "audience": AUDIENCE});
    let current = issuer.current_kid("RS256");

    // Another issuer's key, with its own kid: not in the key set, but a
    // real token under that key's set.
    let foreign = issuer.mint_hostile(Hostile::ForeignKey, request.clone());
    let foreign_kid = foreign.kid.clone().expect("kid");
    assert_ne!(foreign_kid, current);
    assert!(published_jwk(&issuer, &foreign_kid).is_none());
    assert_eq!(verify_with_pyjwt(&foreign.token, &expect(&issuer)).unwrap_err().error, "PyJWKClientError");
    assert_eq!(verify_with_jose(&foreign.token, &expect(&issuer)).unwrap_err().error, "ERR_JWKS_NO_MATCHING_KEY");
    let elsewhere = Expect { jwks_uri: issuer.foreign_jwks_uri(), ..expect(&issuer) };
    verify_with_pyjwt(&foreign.token, &elsewhere).expect("good under the other issuer's key set");

    // The same key with the published kid: only the signature is wrong.
    let known = issuer.mint_hostile(Hostile::ForeignKeyWithKnownKid, request.clone());
    assert_eq!(known.kid.as_deref(), Some(current.as_str()));
    assert_eq!(verify_with_pyjwt(&known.token, &expect(&issuer)).unwrap_err().error, "InvalidSignatureError");
    let refused = verify_with_jose(&known.token, &expect(&issuer)).unwrap_err();
    assert_eq!(refused.error, "ERR_JWS_SIGNATURE_VERIFICATION_FAILED");

    // The published key with a kid nobody has: the signature is good.
    let unknown = issuer.mint_hostile(Hostile::UnknownKid, request);
    let unknown_kid = unknown.kid.clone().expect("kid");
    assert!(unknown_kid != current && published_jwk(&issuer, &unknown_kid).is_none());
    assert_eq!(verify_with_pyjwt(&unknown.token, &expect(&issuer)).unwrap_err().error, "PyJWKClientError");
    assert_eq!(verify_with_jose(&unknown.token, &expect(&issuer)).unwrap_err().error, "ERR_JWKS_NO_MATCHING_KEY");
    let jwk = published_jwk(&issuer, &current).expect("the current key");
    let component = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().expect(name)).expect("base64url");
    let (n, e) = (component("n"), component("e"));
    let (input, signature) = signing_input_and_signature(&unknown.token);
    ring::signature::RsaPublicKeyComponents { n: &n, e: &e }
        .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, input.as_bytes(), &signature)
        .expect("signed by the published RS256 key");
}

#[test]
fn every_hostile_variant_mints_and_no_token_reaches_the_log() {
    let issuer = IdentityIssuer::start();
    let mut tokens = Vec::new();
    for variant in Hostile::ALL {
        tokens.push(issuer.mint_hostile(variant, json!({"kind": "kubernetes", "audience": [AUDIENCE]})).token);
    }
    tokens.push(issuer.mint_github("octo-org/app", "65", AUDIENCE));
    assert_eq!(issuer.stats().mints, 12);
    let logs = issuer.logs();
    for token in &tokens {
        let signature = token.rsplit('.').next().unwrap_or_default();
        assert!(!logs.contains(token.as_str()) && (signature.is_empty() || !logs.contains(signature)));
    }
}

#[test]
fn a_rotation_adds_a_key_that_signs_and_can_remove_the_old_ones() {
    let issuer = IdentityIssuer::start_kubernetes();
    let before = issuer.mint_kubernetes("ci", "builder", AUDIENCE);
    let old = issuer.current_kid("RS256");

    // The unknown kid a verifier sees after a rotation is in the key set
    // when it fetches again; the old key stays.
    let added = issuer.rotate(false);
    assert!(added.removed.is_empty());
    assert_ne!(added.kid, old);
    assert_eq!(issuer.current_kid("RS256"), added.kid);
    assert!(published_jwk(&issuer, &added.kid).is_some() && published_jwk(&issuer, &old).is_some());
    let after = issuer.mint_kubernetes("ci", "builder", AUDIENCE);
    assert_eq!(decode_unverified(&after).0["kid"], added.kid);
    verify_with_pyjwt(&before, &expect(&issuer)).expect("the old key still verifies");
    verify_with_jose(&after, &expect(&issuer)).expect("the new key verifies");

    // A rotation that removes the old keys: their tokens fail.
    let replaced = issuer.rotate(true);
    assert_eq!(replaced.removed, vec![old.clone(), added.kid.clone()]);
    assert!(published_jwk(&issuer, &old).is_none() && published_jwk(&issuer, &added.kid).is_none());
    for token in [&before, &after] {
        assert_eq!(verify_with_pyjwt(token, &expect(&issuer)).unwrap_err().error, "PyJWKClientError");
        assert_eq!(verify_with_jose(token, &expect(&issuer)).unwrap_err().error, "ERR_JWKS_NO_MATCHING_KEY");
    }
    verify_with_pyjwt(&issuer.mint_kubernetes("ci", "builder", AUDIENCE), &expect(&issuer))
        .expect("the replacement key verifies");
    // Other algorithms kept their keys; a retired key can still sign.
    assert!(published_jwk(&issuer, &issuer.current_kid("ES256")).is_some());
    let retired = issuer.mint(json!({"kind": "kubernetes", "audience": [AUDIENCE], "signing_key": old}));
    assert_eq!(decode_unverified(&retired).0["kid"], old);
    // A first key for another algorithm.
    let es384 = issuer.rotate_alg("ES384", false);
    let token = issuer.mint(json!({"kind": "kubernetes", "audience": [AUDIENCE], "alg": "ES384"}));
    assert_eq!(decode_unverified(&token).0["kid"], es384.kid);
    verify_with_pyjwt(&token, &expect(&issuer).algorithms(&["ES384"])).expect("ES384 verifies");
    assert_eq!(issuer.stats().rotations, 3);
}

#[test]
fn the_issuer_path_a_configured_issuer_and_failing_endpoints() {
    let tenant =
        IdentityIssuer::start_with(&IssuerOptions { issuer_path: Some("/tenant".into()), ..Default::default() });
    assert_eq!(tenant.issuer(), format!("{}/tenant", tenant.url()));
    assert_eq!(tenant.discovery_url(), format!("{}/tenant/.well-known/openid-configuration", tenant.url()));
    assert_eq!(tenant.discovery()["issuer"], tenant.issuer());
    let (status, _) = http_request(tenant.address(), "GET", "/.well-known/openid-configuration", None);
    assert_eq!(status, 404, "discovery lives under the issuer's path only");
    let token = tenant.mint_gitlab("acme/builds", true, AUDIENCE);
    assert_eq!(verified_by_both(&token, &expect(&tenant))["iss"], tenant.issuer());

    let github = "https://token.actions.githubusercontent.com";
    let named = IdentityIssuer::start_with(&IssuerOptions { issuer: Some(github.into()), ..Default::default() });
    assert_eq!(named.discovery()["issuer"], github);
    assert_eq!(named.discovery()["jwks_uri"], named.jwks_uri(), "the key set stays on loopback");
    let token = named.mint_github("octo-org/app", "65", AUDIENCE);
    assert_eq!(verified_by_both(&token, &expect(&named))["iss"], github);

    named.control(json!({"jwks_status": 503, "discovery_status": 500}));
    assert_eq!(http_request(named.address(), "GET", "/jwks", None).0, 503);
    assert_eq!(http_request(named.address(), "GET", "/.well-known/openid-configuration", None).0, 500);
    named.control(json!({"jwks_body": "not a key set"}));
    assert_eq!(http_request(named.address(), "GET", "/jwks", None), (200, "not a key set".to_owned()));
    named.control(json!({}));
    assert_eq!(named.jwks()["keys"].as_array().map(Vec::len), Some(4));
}

const RESOURCE: &str = "https://pullpass.test";

#[test]
fn oidc_provider_serves_discovery_and_a_key_set() {
    let provider = OidcProvider::start();
    let discovery = provider.discovery();
    assert_eq!(discovery["issuer"], provider.issuer());
    assert_eq!(discovery["jwks_uri"], provider.jwks_uri());
    assert_eq!(discovery["token_endpoint"], format!("{}/token", provider.issuer()));
    assert!(discovery["grant_types_supported"].as_array().expect("grants").contains(&json!("client_credentials")));
    let jwks = provider.jwks();
    let kinds: Vec<&str> = jwks["keys"].as_array().expect("keys").iter().map(|k| k["kty"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["RSA", "EC"]);
    for key in jwks["keys"].as_array().unwrap() {
        assert!(key["kid"].is_string() && key.get("d").is_none(), "{key}");
    }
    assert!(!format!("{provider:?}").contains("secret"), "{provider:?}");
    let stats = provider.stats();
    assert_eq!((stats.discovery, stats.jwks), (1, 1));
}

#[test]
fn oidc_provider_issues_jwt_access_tokens_that_verify_independently() {
    let provider = OidcProvider::start();
    let extra = json!({"sub_namespace": "ci", "repository_owner_id": "65"});
    let token = provider.token(RESOURCE, extra);
    let (header, _) = decode_unverified(&token);
    assert_eq!((header["typ"].as_str(), header["alg"].as_str()), (Some("at+jwt"), Some("RS256")));
    let expect =
        Expect { typ: Some("at+jwt".into()), ..Expect::new(&provider.jwks_uri(), &provider.issuer(), RESOURCE) };
    let claims = verified_by_both(&token, &expect);
    assert_eq!(claims["aud"], RESOURCE);
    assert_eq!(claims["iss"], provider.issuer());
    assert_eq!(claims["client_id"], "pullpass-test-client");
    assert_eq!(claims["sub"], "pullpass-test-client");
    assert_eq!(claims["repository_owner_id"], "65");
    assert_eq!(claims["sub_namespace"], "ci");
    assert_eq!(number(&claims["exp"]) - number(&claims["iat"]), 300);

    let es256 = provider.try_token("https://other.test", Value::Null, "ES256", 60).expect("an ES256 token");
    assert_eq!(decode_unverified(&es256).0["alg"], "ES256");
    let other = Expect { audience: Some("https://other.test".into()), ..expect.clone() };
    assert_eq!(number(&verified_by_both(&es256, &other)["exp"]) - number(&decode_unverified(&es256).1["iat"]), 60);
    assert_eq!(verify_with_pyjwt(&es256, &expect).unwrap_err().error, "InvalidAudienceError");

    let refused = provider.try_token(RESOURCE, Value::Null, "HS256", 60).unwrap_err();
    assert!(refused.starts_with("HTTP 400"), "{refused}");
    let logs = provider.logs();
    assert!(!logs.contains(&token) && !logs.contains(&es256), "a token in oidc-provider's log");
}

#[test]
fn oidc_provider_key_rotation_keeps_or_removes_the_old_keys() {
    let provider = OidcProvider::start();
    let expect = Expect::new(&provider.jwks_uri(), &provider.issuer(), RESOURCE);
    let before = provider.token(RESOURCE, Value::Null);
    let old = decode_unverified(&before).0["kid"].as_str().expect("kid").to_owned();

    let kept = provider.rotate(false);
    assert!(kept.removed.is_empty() && kept.rs256 != old);
    let after = provider.token(RESOURCE, Value::Null);
    assert_eq!(decode_unverified(&after).0["kid"], kept.rs256);
    verify_with_pyjwt(&before, &expect).expect("the old key still verifies");
    verify_with_jose(&after, &expect).expect("the new key verifies");
    assert_eq!(provider.jwks()["keys"].as_array().map(Vec::len), Some(4));

    let replaced = provider.rotate(true);
    assert!(replaced.removed.contains(&old) && replaced.removed.contains(&kept.rs256));
    for token in [&before, &after] {
        assert_eq!(verify_with_jose(token, &expect).unwrap_err().error, "ERR_JWKS_NO_MATCHING_KEY");
    }
    verify_with_pyjwt(&provider.token(RESOURCE, Value::Null), &expect).expect("the replacement verifies");
    assert_eq!(provider.stats().rotations, 2);
}
