//! deploy/monitoring/ against the binary: every metric that the alert rules
//! and the Grafana dashboard read is one the running service exports on
//! /metrics, and every label they match with `=` carries that value there
//! once the service has done what the alert watches for. A renamed metric
//! or label value fails here instead of leaving an alert that never fires.
//! (`promtool check rules` and `promtool test rules` check the rules
//! themselves: scripts/check-monitoring.)

use std::collections::BTreeSet;
use std::path::PathBuf;

use invitations::pb;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::events::{WAIT, relay_args, spawn, wait_relay};
use crate::metrics::Scrape;
use crate::nats::NatsServer;

/// One vector selector of a PromQL expression: the metric name and the
/// label matchers written with `=`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Selector {
    metric: String,
    equal: Vec<(String, String)>,
}

/// Aggregations, keywords and set operators: identifiers that are not
/// metric names even when no `(` follows them.
const KEYWORDS: [&str; 10] =
    ["by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"];

/// The selectors of a PromQL expression (Grafana's `$variables` allowed):
/// a small scanner, enough for the expressions in deploy/monitoring/.
fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found: Vec<Selector> = Vec::new();
    let mut i = 0;
    // The metric name just read, waiting to see whether `{` or `(` follows.
    let mut pending: Option<String> = None;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '{' {
            let end = closing(&chars, i, '{', '}');
            let equal = matchers(&chars[i + 1..end].iter().collect::<String>());
            let metric = pending.take().unwrap_or_default();
            found.push(Selector { metric, equal });
            i = end + 1;
        } else if c == '(' {
            // A function or an aggregation: the name before it is not a metric.
            pending = None;
            i += 1;
        } else if c.is_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word == "by" || word == "without" {
                // `sum by (x) (...)`: the word before was an aggregation.
                pending = None;
            } else {
                flush(&mut pending, &mut found);
            }
            if ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&word.as_str()) {
                // Their label list is not metrics.
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                if j < chars.len() && chars[j] == '(' {
                    i = closing(&chars, j, '(', ')') + 1;
                }
            } else if !KEYWORDS.contains(&word.as_str()) {
                pending = Some(word);
            }
        } else {
            flush(&mut pending, &mut found);
            if c == '[' {
                i = closing(&chars, i, '[', ']') + 1;
            } else if c == '"' || c == '\'' {
                i = string_end(&chars, i) + 1;
            } else if c == '$' {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || "_{}".contains(chars[i])) {
                    i += 1;
                }
            } else if c.is_ascii_digit() || c == '.' {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            } else {
                i += 1;
            }
        }
    }
    flush(&mut pending, &mut found);
    found
}

fn flush(pending: &mut Option<String>, found: &mut Vec<Selector>) {
    if let Some(metric) = pending.take() {
        found.push(Selector { metric, equal: Vec::new() });
    }
}

/// The index of the bracket closing the one at `open`.
fn closing(chars: &[char], open: usize, left: char, right: char) -> usize {
    let mut depth = 0;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' => i = string_end(chars, i),
            c if c == left => depth += 1,
            c if c == right => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced {left} in {:?}", chars.iter().collect::<String>())
}

fn string_end(chars: &[char], open: usize) -> usize {
    let quote = chars[open];
    let mut i = open + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i
}

/// `a="x", b=~"y|z", c!="w"` → the `=` ones: [(a, x)].
fn matchers(inside: &str) -> Vec<(String, String)> {
    let mut equal = Vec::new();
    let mut rest = inside.trim();
    while !rest.is_empty() {
        let op_at = rest.find(['=', '!']).unwrap_or_else(|| panic!("no operator in {{{inside}}}"));
        let label = rest[..op_at].trim().to_owned();
        let after = &rest[op_at..];
        let (op, value) = after.split_at(if after.starts_with("=~") || after.starts_with("!") { 2 } else { 1 });
        let value = value.trim_start();
        let quote = value.chars().next().unwrap_or_else(|| panic!("no value in {{{inside}}}"));
        let close = value[1..].find(quote).unwrap_or_else(|| panic!("unterminated value in {{{inside}}}")) + 1;
        if op == "=" {
            equal.push((label, value[1..close].to_owned()));
        }
        rest = value[close + 1..].trim_start().trim_start_matches(',').trim_start();
    }
    equal
}

fn monitoring_file(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "deploy", "monitoring", name].iter().collect();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The `expr:` of every rule in alerts.yaml (one line, or a `|` block), and
/// the names its `record:` rules define. The file's YAML is promtool's to
/// check; this reads only these two keys and refuses forms it does not know.
fn rule_expressions(yaml: &str) -> (Vec<String>, BTreeSet<String>) {
    let lines: Vec<&str> = yaml.lines().collect();
    let (mut exprs, mut recorded) = (Vec::new(), BTreeSet::new());
    let mut rules = 0;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let key = line.trim_start().trim_start_matches("- ");
        if let Some(name) = key.strip_prefix("record:") {
            recorded.insert(name.trim().to_owned());
            rules += 1;
        } else if key.starts_with("alert:") {
            rules += 1;
        } else if let Some(value) = key.strip_prefix("expr:") {
            let value = value.trim();
            if value == "|" {
                let indent = line.len() - line.trim_start().len();
                let mut block = String::new();
                while i + 1 < lines.len()
                    && (lines[i + 1].trim().is_empty() || lines[i + 1].len() - lines[i + 1].trim_start().len() > indent)
                {
                    i += 1;
                    block.push_str(lines[i].trim());
                    block.push('\n');
                }
                exprs.push(block);
            } else {
                assert!(!value.starts_with(['>', '|', '"', '\'']), "write expr: as one line or a `|` block: {line}");
                exprs.push(value.to_owned());
            }
        }
        i += 1;
    }
    assert_eq!(exprs.len(), rules, "an expr: for every rule");
    (exprs, recorded)
}

/// Every PromQL query of the dashboard: panel targets (rows included) and
/// the query variables (`label_values(<selector>, <label>)`).
fn dashboard_expressions(json: &str) -> Vec<String> {
    let dashboard: serde_json::Value = serde_json::from_str(json).expect("dashboard.json is JSON");
    let mut exprs = Vec::new();
    let mut panels: Vec<&serde_json::Value> = dashboard["panels"].as_array().expect("a panels list").iter().collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("a target without expr: {target}"));
            exprs.push(expr.to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().expect("templating").iter() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).expect("a variable query");
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .map_or(query, |(selector, _label)| selector);
        exprs.push(inner.to_owned());
    }
    exprs
}

#[test]
fn the_scanner_finds_metrics_and_equality_matchers() {
    let found = selectors(
        "sum by (job, le) (rate(a_total{x=\"1\", y=~\"$job\", z!=\"q\"}[$__rate_interval]))\n  / ignoring(state) b \
         > 0.5 and on (job) c:ratio_rate5m > (14.4 * 0.001) unless absent(d{w='v'})",
    );
    let names: Vec<&str> = found.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["a_total", "b", "c:ratio_rate5m", "d"]);
    assert_eq!(found[0].equal, [("x".to_owned(), "1".to_owned())]);
    assert_eq!(found[3].equal, [("w".to_owned(), "v".to_owned())]);
    let (exprs, recorded) = rule_expressions(
        "groups:\n  - name: g\n    rules:\n      - record: r:x\n        expr: |\n          sum(a)\n            / b\n        \
         labels: {}\n      - alert: A\n        expr: r:x > 1\n",
    );
    assert_eq!(exprs, ["sum(a)\n/ b\n", "r:x > 1"]);
    assert_eq!(recorded, BTreeSet::from(["r:x".to_owned()]));
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_read_is_exported() {
    let (rule_exprs, recorded) = rule_expressions(&monitoring_file("alerts.yaml"));
    let dashboard_exprs = dashboard_expressions(&monitoring_file("dashboard.json"));
    assert!(rule_exprs.len() >= 15 && dashboard_exprs.len() >= 15, "the files were read");
    let mut wanted = BTreeSet::new();
    for expr in rule_exprs.iter().chain(&dashboard_exprs) {
        let found = selectors(expr);
        assert!(!found.is_empty(), "no metric in {expr:?}");
        for selector in found {
            assert!(!selector.metric.is_empty(), "a selector without a metric name in {expr:?}");
            if selector.metric.contains(':') {
                assert!(recorded.contains(&selector.metric), "{} is not recorded in alerts.yaml", selector.metric);
            } else {
                wanted.insert(selector);
            }
        }
    }

    // A service with a relay, doing what the alerts watch: calls (OK and
    // refused), a redemption published to JetStream, the attempt limit.
    let nats = NatsServer::start().await;
    let mut args = relay_args(&nats);
    args.extend(["--abuse-attempts", "block", "--attempt-limit", "1"].map(String::from));
    let app = spawn(args, None).await;
    wait_relay(&app, ServingStatus::Serving).await;
    let code = app.mint_one("ayo").await.code;
    app.redeem(&code, "bo").await.expect("redeem");
    app.redeem(&code, "cy").await.expect_err("single use");
    let unknown = || pb::CheckCodeRequest {
        code: invitations::domain::code::CodeGenerator::new(15)
            .expect("length")
            .generate()
            .expect("random")
            .as_str()
            .into(),
        client_ip: "192.0.2.7".into(),
    };
    app.client.clone().check_code(unknown()).await.expect("an unknown code is an answer");
    let limited = app.client.clone().check_code(unknown()).await.expect_err("over the attempt limit");
    crate::helpers::assert_error(&limited, tonic::Code::ResourceExhausted, "TOO_MANY_ATTEMPTS", None);

    let missing = |scrape: &Scrape| -> Vec<String> {
        wanted
            .iter()
            .filter(|s| {
                !scrape
                    .labels_of(&s.metric)
                    .any(|labels| s.equal.iter().all(|(k, v)| labels.get(k).map(String::as_str) == Some(v.as_str())))
            })
            .map(|s| format!("{}{:?}", s.metric, s.equal))
            .collect()
    };
    // Gauges are measured in the background (outbox stats every 100 ms,
    // health every second): wait for them, then say what is still absent.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let scrape = Scrape::fetch(app.admin_addr).await;
        let absent = missing(&scrape);
        if absent.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not on /metrics: {absent:?}\n{}", scrape.text);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(wanted.iter().any(|s| s.metric == "invitations_health_serving"), "the health alerts were checked");
}
