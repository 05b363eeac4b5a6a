//! Quay robot-account federation: the robot trusts pullpass's issuer (its
//! federation names the issuer URL and the credential's `sub`), and
//! `GET https://<quay>/oauth2/federation/robot/token` with HTTP Basic
//! (the robot's name, and pullpass's token as the password) answers an
//! expiring robot token. That token then runs the normal distribution token
//! flow as the robot's password. Kept per credential until shortly before
//! it expires.

use std::time::Duration;

use reqwest::Url;

use super::{Exchange, Failure, Upstream, refused, token_flow};
use crate::domain::credential::QuayRobotFederation;
use crate::domain::{Lease, LeaseSecret, Timestamp};

/// How long a robot token is kept when Quay does not say (Quay's federated
/// robot tokens last an hour).
const ROBOT_TOKEN_KEPT: Duration = Duration::from_secs(3600);

/// The QUAY flow by robot federation.
pub async fn federated(
    upstream: &Upstream,
    exchange: Exchange<'_>,
    federation: &QuayRobotFederation,
) -> Result<Lease, Failure> {
    let credential = exchange.credential;
    let (robot_token, expiry) = upstream
        .sessions()
        .get_or_fetch(credential, "quay_robot_token", || robot_token(upstream, exchange, federation))
        .await?;
    let result = token_flow::issue(upstream, exchange, &federation.robot, robot_token.expose()).await;
    if matches!(result, Err(Failure::Rejected(_))) {
        upstream.sessions().forget(credential, "quay_robot_token");
    }
    let mut lease = result?;
    lease.expire_time = lease.expire_time.min(expiry);
    Ok(lease)
}

async fn robot_token(
    upstream: &Upstream,
    exchange: Exchange<'_>,
    federation: &QuayRobotFederation,
) -> Result<(LeaseSecret, Timestamp), Failure> {
    let credential = exchange.credential;
    let host = credential.registry.host().as_str();
    let base = token_flow::base_url(upstream, host);
    let url = Url::parse(&format!("{base}/oauth2/federation/robot/token"))
        .map_err(|_| Failure::Misconfigured("the Quay federation URL is not a URL".into()))?;
    upstream.config().realm.check_transport(&url).map_err(Failure::Refused)?;
    let token = upstream.federation_token(credential, host).await?;
    let client = upstream.http().client_for(&credential.ca_bundle_pem).map_err(Failure::Misconfigured)?;
    let password = token.expose_str().unwrap_or_default();
    let reply = upstream
        .http()
        .send(
            crate::metrics::UpstreamKind::QuayFederation,
            || client.get(url.clone()).basic_auth(&federation.robot, Some(password)),
            exchange.deadline,
        )
        .await?;
    if !reply.status.is_success() {
        let step = format!("Quay refused robot federation for {}", federation.robot);
        return Err(refused(&reply, &step, "Quay's robot federation"));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        token: String,
        expires_in: Option<u64>,
    }
    let answer: Answer = serde_json::from_slice(&reply.body)
        .map_err(|_| Failure::Protocol("Quay's robot federation answer is not the expected JSON".into()))?;
    let kept = answer.expires_in.map_or(ROBOT_TOKEN_KEPT, Duration::from_secs).min(ROBOT_TOKEN_KEPT);
    let expiry = super::acr::jwt_expiry(&answer.token)
        .unwrap_or_else(|| Timestamp::now().plus(kept))
        .min(Timestamp::now().plus(kept));
    Ok((LeaseSecret::new(answer.token), expiry))
}
