//! Amazon ECR registry hosts:
//! `<12-digit account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]`.

/// The AWS region of an ECR registry host, or `None` when the host is not
/// an ECR registry.
pub fn ecr_region(host: &str) -> Option<&str> {
    let rest = host.strip_suffix(".amazonaws.com").or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let (account, rest) = rest.split_once('.')?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let region = rest.strip_prefix("dkr.ecr.").or_else(|| rest.strip_prefix("dkr.ecr-fips."))?;
    let valid = !region.is_empty()
        && !region.contains('.')
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    valid.then_some(region)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_is_read_from_ecr_hosts_only() {
        assert_eq!(ecr_region("123456789012.dkr.ecr.eu-west-1.amazonaws.com"), Some("eu-west-1"));
        assert_eq!(ecr_region("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com"), Some("us-east-1"));
        assert_eq!(ecr_region("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"), Some("cn-north-1"));
        assert_eq!(ecr_region("12345.dkr.ecr.eu-west-1.amazonaws.com"), None);
        assert_eq!(ecr_region("123456789012.dkr.ecr.eu.west.amazonaws.com"), None);
        assert_eq!(ecr_region("ecr.example.com"), None);
    }
}
