//! The two exposition formats scrapers speak, chosen by `Accept`:
//! OpenMetrics 1.0 (what `prometheus-client` writes, and what Prometheus
//! asks for first), or the Prometheus text format 0.0.4 for scrapers that
//! ask for `text/plain` only.
//!
//! The 0.0.4 text is derived from the OpenMetrics text: the formats differ
//! only in metadata. A counter's `HELP`/`TYPE` name its `_total` samples,
//! and there are no `UNIT` lines and no `# EOF`.

use std::collections::HashMap;

/// OpenMetrics' content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format's content type.
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A format to answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.
    OpenMetrics,
    /// Prometheus text 0.0.4.
    Text004,
}

impl Format {
    /// The format an `Accept` header prefers: OpenMetrics unless
    /// `text/plain` is asked for with a higher quality (or alone).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else { return Format::OpenMetrics };
        let (mut openmetrics, mut text) = (None::<f32>, None::<f32>);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let quality = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let slot = match media.as_str() {
                "application/openmetrics-text" => &mut openmetrics,
                "text/plain" => &mut text,
                _ => continue,
            };
            *slot = Some(slot.map_or(quality, |q| q.max(quality)));
        }
        match (openmetrics, text) {
            (_, Some(t)) if t > 0.0 && openmetrics.is_none_or(|o| t > o) => Format::Text004,
            _ => Format::OpenMetrics,
        }
    }

    /// The content type of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS,
            Format::Text004 => TEXT_004,
        }
    }
}

/// The current metrics in `format`.
pub fn render(format: Format) -> String {
    let text = super::openmetrics_text();
    match format {
        Format::OpenMetrics => text,
        Format::Text004 => to_text_004(&text),
    }
}

/// OpenMetrics text as Prometheus text 0.0.4.
pub fn to_text_004(openmetrics: &str) -> String {
    let mut types: HashMap<&str, &str> = HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            types.insert(name, kind);
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let metadata = ["# HELP ", "# TYPE "].into_iter().find(|p| line.starts_with(p));
        match metadata {
            Some(prefix) => {
                let rest = &line[prefix.len()..];
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let kind = types.get(name).copied().unwrap_or("unknown");
                let shown = if kind == "counter" { format!("{name}_total") } else { name.to_owned() };
                let tail = if prefix == "# TYPE " {
                    match tail {
                        "unknown" => "untyped",
                        "info" | "stateset" => "gauge",
                        "gaugehistogram" => "histogram",
                        other => other,
                    }
                } else {
                    tail
                };
                out.push_str(prefix);
                out.push_str(&shown);
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_asks_for_openmetrics_and_plain_scrapers_get_text() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain;version=0.0.4")), Format::Text004);
        assert_eq!(Format::negotiate(Some("text/plain;q=0.9, application/openmetrics-text;q=0.5")), Format::Text004);
        assert_eq!(Format::negotiate(Some("text/plain;q=0")), Format::OpenMetrics);
    }

    #[test]
    fn text_004_names_counters_by_their_samples_and_drops_openmetrics_only_lines() {
        let openmetrics = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{k=\"v\"} 3\n\
                           # HELP b_seconds Latency.\n# TYPE b_seconds histogram\n# UNIT b_seconds seconds\n\
                           b_seconds_bucket{le=\"+Inf\"} 1\nb_seconds_sum 0.5\nb_seconds_count 1\n# EOF\n";
        assert_eq!(
            to_text_004(openmetrics),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{k=\"v\"} 3\n\
             # HELP b_seconds Latency.\n# TYPE b_seconds histogram\n\
             b_seconds_bucket{le=\"+Inf\"} 1\nb_seconds_sum 0.5\nb_seconds_count 1\n"
        );
    }
}
