//! AWS STS: `AssumeRole` (SigV4-signed with an access key, possibly a
//! session's) and `AssumeRoleWithWebIdentity` (unsigned: the web identity
//! token is the proof). Both take an inline session policy and a duration,
//! and answer temporary credentials in XML.
//!
//! The endpoint is regional (`https://sts.{region}.amazonaws.com/`) unless
//! the operator names one (`AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`).

use std::time::Duration;

use reqwest::{StatusCode, Url};

use super::sigv4::{self, AwsKey, SignedRequest};
use super::{Failure, Upstream, failure_of, retry_after};
use crate::domain::Timestamp;
use crate::secret::SecretBytes;

const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
const VERSION: &str = "2011-06-15";

/// AWS credentials: a long-term access key, or a session's (with its
/// token). `Debug` shows the key id only.
#[derive(Clone)]
pub struct AwsCredentials {
    /// `AKIA…` or `ASIA…`.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretBytes,
    /// The session token of temporary credentials.
    pub session_token: Option<SecretBytes>,
    /// When temporary credentials expire.
    pub expiration: Option<Timestamp>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

impl AwsCredentials {
    /// The signing key.
    pub fn key(&self) -> Result<AwsKey<'_>, Failure> {
        Ok(AwsKey {
            access_key_id: &self.access_key_id,
            secret_access_key: self
                .secret_access_key
                .expose_str()
                .ok_or_else(|| Failure::Misconfigured("the secret access key is not UTF-8".into()))?,
        })
    }

    /// The session token as text, if any.
    pub fn token(&self) -> Option<&str> {
        self.session_token.as_ref().and_then(|t| t.expose_str())
    }
}

/// What a role is assumed for.
#[derive(Debug)]
pub struct RoleRequest<'a> {
    /// The role's ARN.
    pub role_arn: &'a str,
    /// `RoleSessionName` (shown in CloudTrail).
    pub session_name: &'a str,
    /// The inline session policy (JSON), if any.
    pub policy: Option<&'a str>,
    /// `DurationSeconds` (at least 900).
    pub duration: Duration,
    /// `ExternalId`, if any (AssumeRole only).
    pub external_id: &'a str,
    /// The region (of the STS endpoint, and of the signature).
    pub region: &'a str,
    /// In AWS China (`.amazonaws.com.cn` endpoints)?
    pub china: bool,
}

/// How the role is assumed.
#[derive(Debug)]
pub enum Proof<'a> {
    /// `AssumeRole`, signed with these credentials.
    Signed(&'a AwsCredentials),
    /// `AssumeRoleWithWebIdentity` with this token.
    WebIdentity(&'a SecretBytes),
}

/// The STS endpoint of `region`.
pub fn endpoint(upstream: &Upstream, region: &str, china: bool) -> String {
    match &upstream.config().aws.sts_endpoint {
        Some(url) => url.clone(),
        None if china => format!("https://sts.{region}.amazonaws.com.cn/"),
        None => format!("https://sts.{region}.amazonaws.com/"),
    }
}

/// Assumes `request.role_arn`; the answer's temporary credentials. STS is
/// reached with the public roots only: a credential's CA bundle is for its
/// own registry, never for a cloud endpoint.
pub async fn assume_role(
    upstream: &Upstream,
    request: &RoleRequest<'_>,
    proof: Proof<'_>,
    deadline: std::time::Instant,
) -> Result<AwsCredentials, Failure> {
    let url = Url::parse(&endpoint(upstream, request.region, request.china))
        .map_err(|_| Failure::Misconfigured("the STS endpoint is not a URL".into()))?;
    upstream.config().realm.check_transport(&url).map_err(Failure::Refused)?;
    let duration = request.duration.as_secs().max(900).to_string();
    let (action, signing, body) = {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("Version", VERSION)
            .append_pair("RoleArn", request.role_arn)
            .append_pair("RoleSessionName", request.session_name)
            .append_pair("DurationSeconds", &duration);
        if let Some(policy) = request.policy {
            form.append_pair("Policy", policy);
        }
        let (action, signing) = match &proof {
            Proof::Signed(credentials) => {
                if !request.external_id.is_empty() {
                    form.append_pair("ExternalId", request.external_id);
                }
                ("AssumeRole", Some(*credentials))
            }
            Proof::WebIdentity(token) => {
                let token = token
                    .expose_str()
                    .ok_or_else(|| Failure::Misconfigured("the web identity token is not text".into()))?;
                form.append_pair("WebIdentityToken", token);
                ("AssumeRoleWithWebIdentity", None)
            }
        };
        form.append_pair("Action", action);
        (action, signing, zeroize::Zeroizing::new(form.finish()))
    };
    let host = authority(&url);
    let amz_date = sigv4::amz_date(Timestamp::now());
    let authorization = match signing {
        Some(credentials) => {
            let mut headers = vec![("content-type", CONTENT_TYPE)];
            if let Some(token) = credentials.token() {
                headers.push(("x-amz-security-token", token));
            }
            Some(zeroize::Zeroizing::new(sigv4::authorization(
                &SignedRequest {
                    method: "POST",
                    path: url.path(),
                    host: &host,
                    headers: &headers,
                    body: body.as_bytes(),
                },
                credentials.key()?,
                request.region,
                "sts",
                &amz_date,
            )))
        }
        None => None,
    };
    let client = upstream.http().client_for("").map_err(Failure::Misconfigured)?;
    let reply = upstream
        .http()
        .send(
            crate::metrics::UpstreamKind::Sts,
            || {
                let mut builder = client.post(url.clone()).header("content-type", CONTENT_TYPE).body(body.to_string());
                if let (Some(authorization), Some(credentials)) = (&authorization, signing) {
                    builder = builder.header("x-amz-date", &amz_date).header("authorization", authorization.as_str());
                    if let Some(token) = credentials.token() {
                        builder = builder.header("x-amz-security-token", token);
                    }
                }
                builder
            },
            deadline,
        )
        .await?;
    if !reply.status.is_success() {
        let code = xml_text(&reply.body, "Code").unwrap_or_default();
        let code: String = code.chars().filter(|c| c.is_ascii_alphanumeric()).take(64).collect();
        return Err(match (reply.status, code.as_str()) {
            (_, "Throttling" | "ThrottlingException") => Failure::RateLimited(retry_after(&reply)),
            (StatusCode::TOO_MANY_REQUESTS, _) => failure_of(&reply, "AWS STS"),
            (status, _) if status.is_server_error() => failure_of(&reply, "AWS STS"),
            (status, code) => Failure::Rejected(format!("AWS STS refused {action}: {status} {code}")),
        });
    }
    let field = |tag: &str| {
        xml_text(&reply.body, tag).ok_or_else(|| Failure::Protocol(format!("AWS STS answered {action} without {tag}")))
    };
    let expiration = field("Expiration")?;
    Ok(AwsCredentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: SecretBytes::from_string(field("SecretAccessKey")?),
        session_token: Some(SecretBytes::from_string(field("SessionToken")?)),
        expiration: Some(
            Timestamp::parse_rfc3339(&expiration)
                .ok_or_else(|| Failure::Protocol("AWS STS answered an Expiration that is not a time".into()))?,
        ),
    })
}

/// `host[:port]` of a URL, as signed in the `Host` header.
pub fn authority(url: &Url) -> String {
    match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    }
}

/// The text of the first `<tag>…</tag>` in an XML answer, unescaped. STS
/// answers are flat enough that this is all pullpass needs of XML.
pub fn xml_text(body: &[u8], tag: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&close)?;
    let raw = text[start..end].trim();
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&#xD;", "\r")
            .replace("&amp;", "&"),
    )
}

/// A `RoleSessionName` for a credential: `pullpass-` and its id, in AWS's
/// alphabet, at most 64 characters.
pub fn session_name(workspace: &str, credential: &str) -> String {
    let name: String = format!("pullpass-{workspace}-{credential}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "+=,.@-_".contains(c) { c } else { '-' })
        .take(64)
        .collect();
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_fields_are_found_and_unescaped() {
        let body = b"<AssumeRoleResponse><AssumeRoleResult><Credentials>\n<AccessKeyId>ASIAX</AccessKeyId>\
            <SecretAccessKey>a&amp;b&lt;c</SecretAccessKey></Credentials></AssumeRoleResult></AssumeRoleResponse>";
        assert_eq!(xml_text(body, "AccessKeyId").as_deref(), Some("ASIAX"));
        assert_eq!(xml_text(body, "SecretAccessKey").as_deref(), Some("a&b<c"));
        assert_eq!(xml_text(body, "SessionToken"), None);
    }

    #[test]
    fn session_names_stay_in_aws_alphabet_and_length() {
        assert_eq!(session_name("acme", "ecr-prod"), "pullpass-acme-ecr-prod");
        let long = session_name(&"w".repeat(64), "c");
        assert_eq!(long.len(), 64);
        assert_eq!(session_name("a b", "c/d"), "pullpass-a-b-c-d");
    }
}
