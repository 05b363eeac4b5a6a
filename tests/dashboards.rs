//! The shipped Grafana dashboard and Prometheus alert rules, checked against
//! real data: `promtool` checks the rules and runs their unit tests, and a
//! real Prometheus (Debian's 2.42) scrapes a real `pullpassd` that served
//! leases (from the registry and from its cache), a pull through the gateway,
//! refused calls and a registry's 429. Every panel query of
//! `packaging/grafana/pullpass.json` must then return series there, and every
//! rule of `packaging/prometheus/alerts.yaml` must load, evaluate, and read
//! metrics and labels pullpassd really exports. Everything is on 127.0.0.1;
//! every wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pullpass::v1::{GetCredentialRequest, ListWorkspacesRequest};
use pullpass_tests::gateway::{GatewayWorld, basic, http_client, pull_like_a_runtime};
use pullpass_tests::registry::world::ok;
use pullpass_tests::repo_root;
use serde_json::Value;

const DASHBOARD: &str = "packaging/grafana/pullpass.json";
const ALERTS: &str = "packaging/prometheus/alerts.yaml";
const ALERT_TESTS: &str = "packaging/prometheus/alerts.test.yaml";
/// The scrape job's name in the test Prometheus (what `$job` selects).
const JOB: &str = "pullpass";

/// What Grafana puts in place of its variables when the dashboard is shown
/// with every instance of the job selected.
const GRAFANA_VARIABLES: [(&str, &str); 6] = [
    ("__rate_interval", "1m"),
    ("__interval", "15s"),
    ("__range", "1h"),
    ("job", JOB),
    // The instance variable's "All" value (`allValue`).
    ("instance", ".*"),
    ("DS_PROMETHEUS", "prometheus"),
];

/// Runs `promtool ARGS…` in the repository root.
fn promtool(args: &[&str]) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("promtool could not run ({e}): run scripts/install-test-deps.sh"))
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// The alert names in alerts.yaml, in file order.
fn alert_names() -> Vec<String> {
    let rules = std::fs::read_to_string(repo_root().join(ALERTS)).expect("alerts.yaml");
    rules.lines().filter_map(|l| l.trim().strip_prefix("- alert:")).map(|n| n.trim().to_owned()).collect()
}

#[test]
fn alert_rules_pass_promtool_check() {
    let output = promtool(&["check", "rules", ALERTS]);
    let said = text(&output);
    assert!(output.status.success(), "promtool check rules {ALERTS}:\n{said}");
    let names = alert_names();
    assert!(names.len() >= 8, "alerts.yaml names only {names:?}");
    assert!(said.contains(&format!("SUCCESS: {} rules found", names.len())), "{said}");
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let output = promtool(&["test", "rules", ALERT_TESTS]);
    assert!(output.status.success(), "promtool test rules {ALERT_TESTS}:\n{}", text(&output));

    // Each alert has a case where it fires and one where it must not.
    let tests = std::fs::read_to_string(repo_root().join(ALERT_TESTS)).expect("alerts.test.yaml");
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix("alertname:") else { continue };
        match lines.get(i + 1) {
            Some(&"exp_alerts: []") => quiet.insert(name.trim().to_owned()),
            Some(&"exp_alerts:") => firing.insert(name.trim().to_owned()),
            other => panic!("alertname {name} is followed by {other:?}, not exp_alerts"),
        };
    }
    let mut missing = Vec::new();
    for name in alert_names() {
        if !firing.contains(&name) {
            missing.push(format!("{name}: no case where it fires"));
        }
        if !quiet.contains(&name) {
            missing.push(format!("{name}: no case where it must not fire"));
        }
    }
    assert!(missing.is_empty(), "{ALERT_TESTS} lacks cases:\n{}", missing.join("\n"));
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo_root().join(DASHBOARD)).expect("the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel, rows' collapsed panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

/// Every query target: (panel title, target).
fn targets(dashboard: &Value) -> Vec<(String, &Value)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"].as_array().into_iter().flatten().map(move |t| (title.clone(), t))
        })
        .collect()
}

/// `expr` with Grafana's variables (`$name`, `${name}`) replaced as the
/// dashboard would show them; Err names a variable left over.
fn substitute(expr: &str) -> Result<String, String> {
    let mut out = expr.to_owned();
    // Longest names first: `$__rate_interval` before `$__range`.
    let mut variables = GRAFANA_VARIABLES.to_vec();
    variables.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    for (name, value) in variables {
        out = out.replace(&format!("${{{name}}}"), value).replace(&format!("${name}"), value);
    }
    match out.find('$') {
        Some(at) => Err(format!("an unknown variable at `{}`", &out[at..])),
        None => Ok(out),
    }
}

#[test]
fn the_dashboard_is_importable_grafana_json_on_a_datasource_variable() {
    let dashboard = dashboard();
    let mut problems = Vec::new();
    let schema = dashboard["schemaVersion"].as_u64().unwrap_or_default();
    if !(36..=41).contains(&schema) {
        problems.push(format!("schemaVersion {schema}: not one Grafana 10–11 imports as is"));
    }
    for key in ["uid", "title"] {
        if dashboard[key].as_str().is_none_or(str::is_empty) {
            problems.push(format!("no {key}"));
        }
    }
    if !dashboard["id"].is_null() {
        problems.push("id is set: an import would overwrite another dashboard".into());
    }
    let variables = dashboard["templating"]["list"].as_array().cloned().unwrap_or_default();
    let datasource = variables.iter().find(|v| v["name"] == "DS_PROMETHEUS");
    if datasource.is_none_or(|v| v["type"] != "datasource" || v["query"] != "prometheus") {
        problems.push("no datasource variable DS_PROMETHEUS of type prometheus".into());
    }
    for variable in &variables {
        let name = variable["name"].as_str().unwrap_or_default();
        if !GRAFANA_VARIABLES.iter().any(|(known, _)| *known == name) {
            problems.push(format!("variable {name}: the end-to-end test does not know what to put in its place"));
        }
        let all = GRAFANA_VARIABLES.iter().find(|(known, _)| *known == name).map(|(_, value)| *value);
        if variable["includeAll"] == true && variable["allValue"].as_str() != all {
            problems.push(format!(
                "variable {name}: allValue {} is not the {all:?} the test puts in",
                variable["allValue"]
            ));
        }
        if variable["type"] == "query" && variable["datasource"]["uid"] != "${DS_PROMETHEUS}" {
            problems.push(format!("variable {name} does not query ${{DS_PROMETHEUS}}"));
        }
    }

    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        let id = panel["id"].as_u64().unwrap_or_default();
        if id == 0 || !ids.insert(id) {
            problems.push(format!("{title}: id {id} missing or used twice"));
        }
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| grid[k].as_u64());
        let (Some(x), Some(y), Some(w), Some(h)) = (x, y, w, h) else {
            problems.push(format!("{title}: no gridPos"));
            continue;
        };
        if x + w > 24 || w == 0 || h == 0 {
            problems.push(format!("{title}: gridPos {grid} is outside the 24 columns"));
        }
        for column in x..x + w {
            for row in y..y + h {
                if let Some(other) = cells.insert((column, row), title.to_owned()) {
                    problems.push(format!("{title} overlaps {other} at ({column}, {row})"));
                }
            }
        }
        if panel["type"] == "row" {
            continue;
        }
        if !matches!(panel["type"].as_str(), Some("timeseries" | "stat")) {
            problems.push(format!("{title}: panel type {}", panel["type"]));
        }
        if panel["datasource"]["uid"] != "${DS_PROMETHEUS}" {
            problems.push(format!("{title}: datasource {} is not ${{DS_PROMETHEUS}}", panel["datasource"]));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{title}: no query"));
        }
        let mut refs = BTreeSet::new();
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            if !refs.insert(target["refId"].as_str().unwrap_or_default().to_owned()) {
                problems.push(format!("{title}: refId {} missing or used twice", target["refId"]));
            }
            if target["datasource"]["uid"] != "${DS_PROMETHEUS}" {
                problems.push(format!("{title}: a query's datasource is not ${{DS_PROMETHEUS}}"));
            }
            if let Err(e) = substitute(expr) {
                problems.push(format!("{title}: {e}"));
            }
            // A rate over a window Grafana sizes to the scrape interval.
            for (at, _) in expr.match_indices("rate(") {
                let window = expr[at..].split_once('[').map(|(_, rest)| rest.split(']').next().unwrap_or_default());
                if window != Some("$__rate_interval") {
                    problems.push(format!("{title}: rate over [{}], not [$__rate_interval]", window.unwrap_or("?")));
                }
            }
            if !expr.contains(r#"job="$job""#) || !expr.contains(r#"instance=~"$instance""#) {
                problems.push(format!("{title}: `{expr}` does not select $job and $instance"));
            }
        }
    }
    assert!(problems.is_empty(), "{DASHBOARD}:\n{}", problems.join("\n"));
}

/// Percent-encodes a query parameter.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A private Prometheus scraping one target every second, with the shipped
/// alert rules loaded; killed when dropped.
struct Prometheus {
    child: Child,
    address: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts it on a free loopback port (retrying if another process took
    /// the port meanwhile) and waits until it is ready.
    async fn start(target: &str, rules: &Path) -> Self {
        let dir = tempfile::Builder::new().prefix("pullpass-prometheus-").tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{target}']\n",
                rules = rules.display()
            ),
        )
        .expect("prometheus.yml");
        let mut failures = Vec::new();
        for attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port();
            let address = format!("127.0.0.1:{port}");
            let log = dir.path().join(format!("prometheus-{attempt}.log"));
            let mut child = Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().join(format!("data-{attempt}")).display()))
                .arg(format!("--web.listen-address={address}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .unwrap_or_else(|e| panic!("prometheus could not run ({e}): run scripts/install-test-deps.sh"));
            match ready(&mut child, &address, Duration::from_secs(60)).await {
                Ok(()) => return Prometheus { child, address, log, _dir: dir },
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let logs = std::fs::read_to_string(&log).unwrap_or_default();
                    failures.push(format!("on {address}: {why}\n{logs}"));
                }
            }
        }
        panic!("prometheus did not start:\n{}", failures.join("\n"))
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/PATH`: the `data` of a success, or the error.
    async fn api(&self, path: &str) -> Result<Value, String> {
        let response = http_client()
            .get(format!("http://{}/api/v1/{path}", self.address))
            .send()
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| format!("no body: {e}"))?;
        let json: Value = serde_json::from_str(&body).map_err(|_| format!("{status}: {body}"))?;
        match json["status"].as_str() {
            Some("success") => Ok(json["data"].clone()),
            _ => Err(format!("{}: {}", json["errorType"].as_str().unwrap_or("error"), json["error"])),
        }
    }

    /// Evaluates `promql` now: the series of its instant vector.
    async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("query?query={}", encode(promql))).await?;
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            other => Err(format!("a {other:?}, not an instant vector")),
        }
    }
}

/// Waits for Prometheus' `/-/ready`; Err if it exited or time ran out.
async fn ready(child: &mut Child, address: &str, limit: Duration) -> Result<(), String> {
    let client = http_client();
    let until = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("prometheus exited ({status})"));
        }
        let ready = client.get(format!("http://{address}/-/ready")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!("prometheus was not ready within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seconds since the epoch (Prometheus' sample timestamps).
fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs_f64()
}

/// One label matcher of a selector: label, operator, value.
type Matcher = (String, String, String);

/// The selectors of pullpass's metrics (`pullpass_…`, `grpc_server_…`) in
/// a PromQL expression: each metric name with its label matchers.
fn selectors(expr: &str) -> Vec<(String, Vec<Matcher>)> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            // A string outside a selector (a function's argument): skip it.
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        let mut j = i;
        while j < chars.len() && chars[j] == ' ' {
            j += 1;
        }
        let mut matchers = Vec::new();
        if chars.get(j) == Some(&'{') {
            let mut body = String::new();
            let mut quoted = false;
            j += 1;
            while j < chars.len() && (quoted || chars[j] != '}') {
                if chars[j] == '"' {
                    quoted = !quoted;
                }
                body.push(chars[j]);
                j += 1;
            }
            for part in split_outside_quotes(&body) {
                let part = part.trim();
                let at = part.find(['=', '!']).unwrap_or(part.len());
                let rest = &part[at..];
                let op = ["=~", "!~", "!=", "="].into_iter().find(|op| rest.starts_with(op)).unwrap_or("?");
                let value = rest[op.len().min(rest.len())..].trim().trim_matches('"');
                matchers.push((part[..at].trim().to_owned(), op.to_owned(), value.to_owned()));
            }
            i = j + 1;
        }
        if name.starts_with("pullpass_") || name.starts_with("grpc_server_") {
            found.push((name, matchers));
        }
    }
    found
}

fn split_outside_quotes(body: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in body.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                parts.last_mut().expect("a part").push(c);
            }
            ',' if !quoted => parts.push(String::new()),
            _ => parts.last_mut().expect("a part").push(c),
        }
    }
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// The gRPC codes as pullpassd spells them (Go's names).
fn grpc_code_names() -> BTreeSet<&'static str> {
    (0..=16).map(|n| pullpass_server::metrics::grpc::code_name(tonic::Code::from(n))).collect()
}

/// Problems with the `grpc_code` values a selector names (Go spells
/// "Canceled", not "Cancelled").
fn misspelled_codes(expr: &str) -> Vec<String> {
    let known = grpc_code_names();
    selectors(expr)
        .into_iter()
        .flat_map(|(_, matchers)| matchers)
        .filter(|(label, _, _)| label == "grpc_code")
        .flat_map(|(_, _, value)| value.split('|').map(str::to_owned).collect::<Vec<_>>())
        .filter(|code| !known.contains(code.as_str()))
        .map(|code| format!("grpc_code {code} is not a code pullpassd exports ({known:?})"))
        .collect()
}

/// The labels a legend format names (`{{kind}} {{outcome}}`).
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|rest| rest.split_once("}}").map(|(name, _)| name.trim().to_owned()))
        .collect()
}

/// Traffic of every kind the dashboard shows: leases exchanged upstream,
/// then cached; a pull through the gateway; calls refused
/// (Unauthenticated, NotFound); a token service answering 429, then an
/// exchange held back by its Retry-After.
async fn drive_traffic(gw: &GatewayWorld) {
    let world = &gw.world;
    let images: Vec<String> = (0..4).map(|i| world.registry.image(&format!("team/app{i}:1.0"))).collect();
    for image in &images {
        assert!(!ok(&world.issue(&[image], &[]).await[0]).cached, "{image}: cached before it was asked for");
    }
    for image in &images {
        assert!(ok(&world.issue(&[image], &[]).await[0]).cached, "{image}: not cached the second time");
    }

    let authorization = basic("pullpass", &gw.password("team/app:1.0").await);
    pull_like_a_runtime(gw, "team/app", "1.0", &authorization).await;

    let anonymous = world.server.client_with(None).await;
    let refused = anonymous.access().list_workspaces(ListWorkspacesRequest::default()).await;
    assert_eq!(refused.expect_err("no token").code(), tonic::Code::Unauthenticated);
    let missing = GetCredentialRequest { name: "workspaces/acme/credentials/missing".into() };
    let refused = world.client.credentials().get_credential(missing).await;
    assert_eq!(refused.expect_err("no such credential").code(), tonic::Code::NotFound);

    world.issuer.peer.control(serde_json::json!({"token_status": 429, "retry_after": "60"}));
    let limited = world.registry.image("team/limited:1.0");
    for _ in 0..2 {
        let auths = world.issue(&[&limited], &[]).await;
        let code = auths[0].status.as_ref().expect("a status").code;
        assert_eq!(code, tonic::Code::ResourceExhausted as i32, "{limited} while the registry answers 429");
    }
    world.issuer.peer.control(serde_json::json!({}));
}

/// Waits until Prometheus has scraped pullpassd at least twice after
/// `after` (seconds since the epoch): then every counter the traffic
/// created has two samples, enough for `rate`.
async fn wait_for_scrapes_after(prometheus: &Prometheus, after: f64) {
    let value = async |query: String| {
        let series = prometheus.query(&query).await.ok()?;
        series.first().and_then(|s| s["value"][1].as_str()).and_then(|v| v.parse::<f64>().ok())
    };
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        // `timestamp` of a plain selector is the sample's own time.
        let last = value(format!(r#"timestamp(up{{job="{JOB}"}})"#)).await;
        let up = value(format!(r#"up{{job="{JOB}"}}"#)).await;
        if up == Some(1.0) && last.is_some_and(|last| last >= after + 2.0) {
            return;
        }
        assert!(
            Instant::now() < until,
            "prometheus did not scrape pullpassd twice within 90 s (last successful scrape: {last:?}); its log:\n{}",
            prometheus.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The dashboard's template variables that query Prometheus
/// (`label_values(SELECTOR, LABEL)`) must find the job and its instance.
async fn check_variables(prometheus: &Prometheus, dashboard: &Value, instance: &str, problems: &mut Vec<String>) {
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap_or_default();
        let definition = variable["query"].as_str().or(variable["query"]["query"].as_str()).unwrap_or_default();
        let Some((selector, label)) = definition
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|args| args.rsplit_once(','))
        else {
            problems.push(format!("variable {name}: `{definition}` is not label_values(SELECTOR, LABEL)"));
            continue;
        };
        let selector = match substitute(selector.trim()) {
            Ok(selector) => selector,
            Err(e) => {
                problems.push(format!("variable {name}: {e}"));
                continue;
            }
        };
        let label = label.trim();
        let values: BTreeSet<String> = match prometheus.api(&format!("series?match[]={}", encode(&selector))).await {
            Ok(series) => {
                series.as_array().into_iter().flatten().filter_map(|s| s[label].as_str().map(str::to_owned)).collect()
            }
            Err(e) => {
                problems.push(format!("variable {name}: series of `{selector}` failed: {e}"));
                continue;
            }
        };
        let expected = if label == "job" { JOB } else { instance };
        if !values.contains(expected) {
            problems.push(format!("variable {name}: `{definition}` finds {values:?}, not {expected}"));
        }
    }
}

/// Evaluates every panel query; the problems (all of them), and whether
/// waiting may help (a query found no series yet).
async fn check_panels(prometheus: &Prometheus, dashboard: &Value) -> (Vec<String>, bool) {
    let mut problems = Vec::new();
    let mut empty = false;
    for (title, target) in targets(dashboard) {
        let expr = target["expr"].as_str().unwrap_or_default();
        let promql = match substitute(expr) {
            Ok(promql) => promql,
            Err(e) => {
                problems.push(format!("{title}: {e}"));
                continue;
            }
        };
        problems.extend(misspelled_codes(&promql).into_iter().map(|p| format!("{title}: {p}")));
        match prometheus.query(&promql).await {
            Err(e) => problems.push(format!("{title}: `{promql}` fails: {e}")),
            Ok(series) if series.is_empty() => {
                empty = true;
                problems.push(format!("{title}: `{promql}` returns no series"));
            }
            Ok(series) => {
                let legend = target["legendFormat"].as_str().unwrap_or_default();
                for label in legend_labels(legend) {
                    if let Some(unlabelled) = series.iter().find(|s| s["metric"][&label].as_str().is_none()) {
                        problems.push(format!(
                            "{title}: legend `{legend}` names {label}, which series {} of `{promql}` lacks",
                            unlabelled["metric"]
                        ));
                    }
                }
            }
        }
    }
    (problems, empty)
}

/// The alert rules Prometheus loaded, once each was evaluated at least once.
async fn evaluated_rules(prometheus: &Prometheus) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let rules: Vec<Value> = match prometheus.api("rules?type=alert").await {
            Ok(data) => data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect(),
            Err(e) => panic!("GET /api/v1/rules: {e}"),
        };
        if !rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown") {
            return rules;
        }
        assert!(Instant::now() < until, "the alert rules were not all evaluated within 60 s: {rules:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every alert rule loads and evaluates, and reads metrics, labels and
/// label values pullpassd really exports: a misspelt name would make an
/// alert that can never fire.
async fn check_alerts(prometheus: &Prometheus, rules: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let loaded: BTreeSet<String> = rules.iter().filter_map(|r| r["name"].as_str().map(str::to_owned)).collect();
    let named: BTreeSet<String> = alert_names().into_iter().collect();
    if loaded != named || rules.len() != named.len() {
        problems.push(format!("prometheus loaded the alerts {loaded:?}, alerts.yaml names {named:?}"));
    }
    let mut checked = BTreeSet::new();
    for rule in rules {
        let name = rule["name"].as_str().unwrap_or_default();
        let expr = rule["query"].as_str().unwrap_or_default();
        if rule["health"] != "ok" {
            problems.push(format!("{name}: health {}, {}", rule["health"], rule["lastError"]));
        }
        if let Err(e) = prometheus.query(expr).await {
            problems.push(format!("{name}: `{expr}` fails: {e}"));
        }
        problems.extend(misspelled_codes(expr).into_iter().map(|p| format!("{name}: {p}")));
        for (metric, matchers) in selectors(expr) {
            let mut wanted = vec![(format!(r#"{metric}{{job="{JOB}"}}"#), format!("{metric} is not exported"))];
            for (label, op, value) in matchers {
                if ["job", "instance", "grpc_code"].contains(&label.as_str()) || op.starts_with('!') {
                    continue;
                }
                let alternatives: Vec<&str> = if op == "=~" { value.split('|').collect() } else { vec![&value] };
                for alternative in alternatives {
                    wanted.push((
                        format!(r#"{metric}{{job="{JOB}",{label}="{alternative}"}}"#),
                        format!("{metric} has no series with {label}=\"{alternative}\""),
                    ));
                }
            }
            for (selector, problem) in wanted {
                if !checked.insert(selector.clone()) {
                    continue;
                }
                match prometheus.query(&format!("count({selector})")).await {
                    Ok(series) if !series.is_empty() => {}
                    Ok(_) => problems.push(format!("{name}: {problem}")),
                    Err(e) => problems.push(format!("{name}: count({selector}) fails: {e}")),
                }
            }
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_series_from_a_real_prometheus_scraping_pullpassd() {
    let started = Instant::now();
    let gw = GatewayWorld::start().await;
    let target = gw.world.server.metrics.clone();
    assert!(!target.is_empty(), "pullpassd printed no metrics address");
    let prometheus = Prometheus::start(&target, &repo_root().join(ALERTS)).await;

    drive_traffic(&gw).await;
    wait_for_scrapes_after(&prometheus, unix_now()).await;

    let dashboard = dashboard();
    let mut problems = Vec::new();
    check_variables(&prometheus, &dashboard, &target, &mut problems).await;

    // Series a little late (the gateway counts a response when its body
    // ends, audit events are committed in batches) come with later
    // scrapes: evaluate again while a query finds nothing, for a while.
    let until = Instant::now() + Duration::from_secs(45);
    let panel_problems = loop {
        let (problems, empty) = check_panels(&prometheus, &dashboard).await;
        if problems.is_empty() || !empty || Instant::now() > until {
            break problems;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    problems.extend(panel_problems);

    let rules = evaluated_rules(&prometheus).await;
    problems.extend(check_alerts(&prometheus, &rules).await);
    let queries = targets(&dashboard).len();
    eprintln!(
        "checked {queries} panel queries and {} alert rules against a real Prometheus in {:.1} s",
        rules.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "{} problem(s) with the dashboard and alerts on real data:\n{}\n\nprometheus' log:\n{}",
        problems.len(),
        problems.join("\n"),
        prometheus.logs()
    );
}
