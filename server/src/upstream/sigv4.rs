//! AWS Signature Version 4, for the one request pullpass sends to AWS (ECR
//! `GetAuthorizationToken`). HMAC-SHA256 and SHA-256 from ring. Checked
//! against botocore: the unit test's expected signature was computed with
//! botocore's `SigV4Auth`, and the end-to-end tests' ECR fixture verifies
//! every request with botocore.

use ring::{digest, hmac};

use crate::domain::Timestamp;

/// The parts of a request that are signed.
#[derive(Debug, Clone)]
pub struct SignedRequest<'a> {
    /// `POST`.
    pub method: &'a str,
    /// The URL path (`/`).
    pub path: &'a str,
    /// The `Host` header value (`api.ecr.eu-west-1.amazonaws.com`).
    pub host: &'a str,
    /// Headers other than `host` and `x-amz-date`, with lowercase names.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

/// An AWS access key.
#[derive(Clone, Copy)]
pub struct AwsKey<'a> {
    /// The access key id (`AKIA…`).
    pub access_key_id: &'a str,
    /// The secret access key.
    pub secret_access_key: &'a str,
}

impl std::fmt::Debug for AwsKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// `YYYYMMDDTHHMMSSZ`.
pub fn amz_date(time: Timestamp) -> String {
    time.to_rfc3339().replace(['-', ':'], "")
}

/// The `Authorization` header value for `request`, signed at `amz_date`
/// (`YYYYMMDDTHHMMSSZ`) for `region` and `service`.
pub fn authorization(
    request: &SignedRequest<'_>,
    key: AwsKey<'_>,
    region: &str,
    service: &str,
    amz_date: &str,
) -> String {
    let date = &amz_date[..8];
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .chain([("host".to_owned(), request.host.to_owned()), ("x-amz-date".to_owned(), amz_date.to_owned())])
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed_headers = headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(";");
    let canonical_request = format!(
        "{}\n{}\n\n{canonical_headers}\n{signed_headers}\n{}",
        request.method,
        request.path,
        hex(digest::digest(&digest::SHA256, request.body).as_ref())
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref())
    );
    let secret = zeroize::Zeroizing::new(format!("AWS4{}", key.secret_access_key));
    let k_date = hmac_sha256(secret.as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(k_date.as_ref(), region.as_bytes());
    let k_service = hmac_sha256(k_region.as_ref(), service.as_bytes());
    let k_signing = hmac_sha256(k_service.as_ref(), b"aws4_request");
    let signature = hex(hmac_sha256(k_signing.as_ref(), string_to_sign.as_bytes()).as_ref());
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        key.access_key_id
    )
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values computed with botocore 1.38 (`SigV4Auth("ecr",
    /// "eu-west-1")`) for the same request.
    #[test]
    fn signature_matches_botocore_for_get_authorization_token() {
        let request = SignedRequest {
            method: "POST",
            path: "/ecr/",
            host: "127.0.0.1:8080",
            headers: &[
                ("Content-Type", "application/x-amz-json-1.1"),
                ("X-Amz-Target", "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"),
            ],
            body: b"{}",
        };
        let key = AwsKey {
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        };
        let header = authorization(&request, key, "eu-west-1", "ecr", "20261123T120000Z");
        assert_eq!(
            header,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261123/eu-west-1/ecr/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-target, \
             Signature=ab2bc25e02bdb1fdaf11ba9c7c41ca12756c16872236f230ec7c3edf35bef56a"
        );
    }

    #[test]
    fn amz_dates_are_compact_utc() {
        let t = Timestamp::parse_rfc3339("2026-11-23T12:00:00Z").unwrap();
        assert_eq!(amz_date(t), "20261123T120000Z");
    }
}
