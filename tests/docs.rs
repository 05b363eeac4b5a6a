//! The docs say true things about the code. README.md, ARCHITECTURE.md and
//! every page under docs/ are read as markdown, and:
//!
//! * every relative link (`[x](path)`, `[x](path#anchor)`, `![x](path)`)
//!   leads to a file or directory that exists, and every anchor to a heading
//!   of its target (GitHub's slugs);
//! * every `--flag` they name exists in the `--help` of the binary it belongs
//!   to: in a command line of a code block (or an inline code span that
//!   starts with one of our binaries), the help of that binary and the
//!   subcommand the flag follows; anywhere else, the help of at least one of
//!   our binaries or their subcommands, unless it is a foreign tool's flag
//!   listed in [`FOREIGN_FLAGS`];
//! * every `pullpass.v1.…` name (message, enum, service, method, field, enum
//!   value), every `SomethingService.Method` and every backticked RPC name
//!   exists in the contract's descriptor set.
//!
//! Hidden flags (the testing hooks, such as `--fault-audit-fail`) are in no
//! `--help`, so the docs must not name them.
//!
//! Each test names every offender (file:line) in one failure. The binaries
//! must be built first (`cargo build --workspace --bins`; scripts/test.sh
//! does).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message as _;
use prost_types::{DescriptorProto, FileDescriptorSet};
use pullpass_tests::{binary, repo_root};

/// Our binaries, whose flags the docs must name correctly.
const BINARIES: &[&str] =
    &["pullpassd", "pullpass", "docker-credential-pullpass", "pullpass-kubelet-credential-provider"];

/// Commands that run another command: their own flags are not checked, and
/// the first of our binaries after them starts the command that is.
const WRAPPERS: &[&str] = &["sudo", "env", "exec", "eval", "nice", "time", "systemd-run", "timeout"];

/// Other programs: an inline code span that runs one of them is not
/// checked. (A code block's command line is checked only when it runs one of
/// ours.)
const FOREIGN_PROGRAMS: &[&str] = &[
    "cargo",
    "az",
    "aws",
    "gcloud",
    "kubectl",
    "skopeo",
    "podman",
    "docker",
    "ctr",
    "crictl",
    "buildah",
    "promtool",
    "grpcurl",
    "systemd-analyze",
    "apptainer",
    "curl",
    "jq",
];

/// Flags of other programs that the docs name in prose, with the program
/// they belong to. (In code blocks, a command line that starts with another
/// program is skipped as a whole.)
const FOREIGN_FLAGS: &[(&str, &str)] = &[
    ("--registry-token", "skopeo"),
    ("--creds", "skopeo, podman"),
    ("--user", "ctr (containerd)"),
    ("--image-credential-provider-bin-dir", "kubelet"),
    ("--sanitizer", "cargo fuzz"),
];

/// CamelCase names in backticks that start like an RPC of ours but are
/// another API's.
const FOREIGN_RPCS: &[(&str, &str)] = &[("GetAuthorizationToken", "the AWS ECR API")];

/// Verbs the contract's RPC names start with: a backticked CamelCase word
/// starting with one of them is taken for an RPC name.
const RPC_VERBS: &[&str] = &["Create", "Get", "List", "Update", "Delete", "Import", "Issue", "Test", "Revoke"];

// ---------------------------------------------------------------- the docs

/// One markdown file of the docs.
#[derive(Debug)]
struct Doc {
    /// Relative to the repository root, such as `docs/gateway.md`.
    path: PathBuf,
    text: String,
}

impl Doc {
    fn location(&self, line: usize) -> String {
        format!("{}:{line}", self.path.display())
    }
}

fn docs() -> Vec<Doc> {
    let root = repo_root();
    let mut paths = vec![PathBuf::from("README.md"), PathBuf::from("ARCHITECTURE.md")];
    let mut pending = vec![PathBuf::from("docs")];
    let mut found = Vec::new();
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(root.join(&dir)).expect("docs/ is readable") {
            let entry = entry.expect("docs/ entry");
            let relative = dir.join(entry.file_name());
            if entry.file_type().expect("file type").is_dir() {
                pending.push(relative);
            } else if relative.extension().is_some_and(|e| e == "md") {
                found.push(relative);
            }
        }
    }
    found.sort();
    paths.extend(found);
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(root.join(&path))
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            Doc { path, text }
        })
        .collect()
}

/// What a line of markdown is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Prose,
    /// The opening or closing line of a fenced block.
    Fence,
    /// Inside a fenced block.
    Fenced,
    /// An indented code block (four spaces, after a blank line).
    Indented,
}

/// A line with its kind, its 1-based number and the code block it belongs to.
#[derive(Debug)]
struct Line<'a> {
    number: usize,
    text: &'a str,
    kind: Kind,
    /// Numbers the code blocks of a file; 0 for prose.
    block: usize,
    /// The info string of the fenced block (`yaml`, `toml`…).
    lang: &'a str,
}

fn classify(text: &str) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    let mut fence: Option<(char, usize, &str)> = None;
    let mut block = 0;
    let mut indented = false;
    let mut previous_blank = true;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let blank = trimmed.is_empty();
        let (kind, lang) = if let Some((ch, len, lang)) = fence {
            let run = trimmed.chars().take_while(|c| *c == ch).count();
            if indent < 4 && run >= len && trimmed[run..].trim().is_empty() {
                fence = None;
                (Kind::Fence, lang)
            } else {
                (Kind::Fenced, lang)
            }
        } else if indent < 4 && (trimmed.starts_with("```") || trimmed.starts_with("~~~")) {
            let ch = trimmed.chars().next().expect("a fence character");
            let len = trimmed.chars().take_while(|c| *c == ch).count();
            let lang = trimmed[len..].trim();
            fence = Some((ch, len, lang));
            block += 1;
            indented = false;
            (Kind::Fence, lang)
        } else if !blank && indent >= 4 && (indented || previous_blank) {
            if !indented {
                block += 1;
            }
            indented = true;
            (Kind::Indented, "")
        } else if blank && indented {
            (Kind::Indented, "")
        } else {
            indented = false;
            (Kind::Prose, "")
        };
        let block = if kind == Kind::Prose { 0 } else { block };
        lines.push(Line { number, text: line, kind, block, lang });
        previous_blank = blank;
    }
    lines
}

/// The prose of a file, with code blocks blanked out (line numbers kept).
fn prose(text: &str) -> String {
    classify(text).iter().map(|l| if l.kind == Kind::Prose { l.text } else { "" }).collect::<Vec<_>>().join("\n")
}

/// An inline code span: its text and the line it starts on.
#[derive(Debug)]
struct Span {
    line: usize,
    text: String,
}

/// Splits prose into its inline code spans and the text outside them (the
/// spans replaced by spaces, newlines kept). A span may continue on the next
/// line, never past a blank line.
fn code_spans(prose: &str) -> (Vec<Span>, String) {
    let bytes = prose.as_bytes();
    let mut spans = Vec::new();
    let mut outside = String::with_capacity(prose.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            let next = prose[i..].find('`').map_or(prose.len(), |n| i + n);
            outside.push_str(&prose[i..next]);
            i = next;
            continue;
        }
        let run = bytes[i..].iter().take_while(|b| **b == b'`').count();
        let body_start = i + run;
        let mut j = body_start;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j..].starts_with(b"\n\n") {
                break;
            }
            if bytes[j] == b'`' {
                let other = bytes[j..].iter().take_while(|b| **b == b'`').count();
                if other == run {
                    close = Some(j);
                    break;
                }
                j += other;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                let line = prose[..i].matches('\n').count() + 1;
                spans.push(Span { line, text: prose[body_start..end].replace('\n', " ") });
                for ch in prose[i..end + run].chars() {
                    outside.push(if ch == '\n' { '\n' } else { ' ' });
                }
                i = end + run;
            }
            None => {
                outside.push_str(&prose[i..body_start]);
                i = body_start;
            }
        }
    }
    (spans, outside)
}

// ---------------------------------------------------------------- links

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_`
/// dropped, spaces turned into `-`.
fn slug(heading: &str) -> String {
    // A link in a heading counts by its text.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find("](") {
        let Some(close) = rest[open..].find(')') else { break };
        text.push_str(&rest[..open]);
        rest = &rest[open + close + 1..];
    }
    text.push_str(rest);
    text.trim()
        .chars()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown file's headings, duplicates numbered as GitHub
/// numbers them.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = BTreeSet::new();
    for line in classify(text) {
        if line.kind != Kind::Prose {
            continue;
        }
        let trimmed = line.text.trim_start();
        let hashes = trimmed.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&hashes) || !trimmed[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(trimmed[hashes..].trim().trim_end_matches('#'));
        let count = seen.entry(base.clone()).or_insert(0);
        anchors.insert(if *count == 0 { base.clone() } else { format!("{base}-{count}") });
        *count += 1;
    }
    anchors
}

/// The relative links of a file's prose: (line, target).
fn relative_links(text: &str) -> Vec<(usize, String)> {
    let (_, outside) = code_spans(&prose(text));
    let mut links = Vec::new();
    let mut from = 0;
    while let Some(found) = outside[from..].find("](") {
        let start = from + found + 2;
        let end = outside[start..].find([')', ' ', '\n']).map_or(outside.len(), |n| start + n);
        let target = outside[start..end].trim_start_matches('<').trim_end_matches('>');
        let line = outside[..start].matches('\n').count() + 1;
        let foreign = ["http://", "https://", "mailto:"].iter().any(|scheme| target.starts_with(scheme));
        if !foreign && !target.is_empty() {
            links.push((line, target.to_owned()));
        }
        from = end;
    }
    links
}

#[test]
fn every_relative_link_in_the_docs_resolves_to_a_file_and_its_anchor_to_a_heading() {
    let root = repo_root();
    let docs = docs();
    let mut checked = 0;
    let mut offenders = Vec::new();
    for doc in &docs {
        let dir = doc.path.parent().unwrap_or(Path::new(""));
        for (line, target) in relative_links(&doc.text) {
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() { doc.path.clone() } else { normalize(&dir.join(path)) };
            let on_disk = root.join(&file);
            if !on_disk.exists() {
                offenders.push(format!("{}: {target}: no such file {}", doc.location(line), file.display()));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if on_disk.extension().is_none_or(|e| e != "md") {
                offenders.push(format!("{}: {target}: an anchor into a file that is not markdown", doc.location(line)));
                continue;
            }
            let text = std::fs::read_to_string(&on_disk).expect("link target is readable");
            let headings = anchors(&text);
            if !headings.contains(anchor) {
                offenders.push(format!(
                    "{}: {target}: {} has no heading #{anchor} (it has: {})",
                    doc.location(line),
                    file.display(),
                    headings.iter().map(|a| format!("#{a}")).collect::<Vec<_>>().join(" ")
                ));
            }
        }
    }
    eprintln!("{checked} relative links checked in {} files", docs.len());
    assert!(checked > 20, "only {checked} relative links found: is the link parser broken?");
    assert!(offenders.is_empty(), "{} broken links in the docs:\n{}", offenders.len(), offenders.join("\n"));
}

/// `docs/../README.md` -> `README.md`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn github_slugs_follow_githubs_rules() {
    assert_eq!(slug("Callers, roles and the audit trail"), "callers-roles-and-the-audit-trail");
    assert_eq!(slug("Rust SDK (`client-sdk`, crate `pullpass-client`)"), "rust-sdk-client-sdk-crate-pullpass-client");
    assert_eq!(slug("The kubelet plugin with the pod's own token"), "the-kubelet-plugin-with-the-pods-own-token");
    assert_eq!(slug("Hardening: fuzzing, crash loop"), "hardening-fuzzing-crash-loop");
    assert_eq!(slug("snake_case and [a link](x.md)"), "snake_case-and-a-link");
    let numbered = anchors("# A\n\n## Notes\n\n## Notes\n\n```\n# Notes\n```\n\n## Notes\n");
    assert_eq!(numbered, ["a", "notes", "notes-1", "notes-2"].into_iter().map(String::from).collect());
    let links = relative_links("[a](x.md#y) `[b](code.md)`\n\n    [c](indented.md)\n\n![d](img.png) [e](https://x)\n");
    assert_eq!(links, vec![(1, "x.md#y".to_owned()), (5, "img.png".to_owned())]);
}

// ---------------------------------------------------------------- flags

/// What `--help` says about one command: its flags and its subcommands.
#[derive(Debug, Default)]
struct Help {
    flags: BTreeSet<String>,
    subcommands: BTreeSet<String>,
}

/// The help of every binary and every subcommand, by (binary, path).
#[derive(Debug)]
struct HelpTree {
    commands: BTreeMap<(String, Vec<String>), Help>,
}

impl HelpTree {
    fn load() -> Self {
        let mut commands = BTreeMap::new();
        for bin in BINARIES {
            let path = binary(bin);
            let mut pending = vec![Vec::<String>::new()];
            while let Some(subcommand) = pending.pop() {
                let output = Command::new(&path).args(&subcommand).arg("--help").output().expect("the binary runs");
                let text =
                    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
                let help = parse_help(&text);
                for name in &help.subcommands {
                    let mut child = subcommand.clone();
                    child.push(name.clone());
                    pending.push(child);
                }
                commands.insert(((*bin).to_owned(), subcommand), help);
            }
        }
        let tree = HelpTree { commands };
        assert!(tree.help("pullpassd", &["keys".to_owned()]).is_some(), "pullpassd has no `keys`: {tree:?}");
        assert!(tree.help("pullpass", &["auth".to_owned()]).is_some_and(|h| h.flags.contains("--via-gateway")));
        tree
    }

    fn help(&self, bin: &str, path: &[String]) -> Option<&Help> {
        self.commands.get(&(bin.to_owned(), path.to_vec()))
    }

    fn any_has(&self, flag: &str) -> bool {
        self.commands.values().any(|h| h.flags.contains(flag))
    }
}

/// The flags a clap help declares (not those its descriptions mention), and
/// its "Commands:" section.
fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut in_commands = false;
    for line in text.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if !line.starts_with(' ') {
            in_commands = false;
        }
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if in_commands && indent == 2 {
            let name = trimmed.split_whitespace().next().unwrap_or_default();
            if name != "help" && !name.is_empty() {
                help.subcommands.insert(name.to_owned());
            }
        } else if (2..=6).contains(&indent) && trimmed.starts_with('-') {
            // `-h, --help`, `--endpoint <ENDPOINT>`, `--flag=<X>`
            for word in trimmed.split([' ', ',', '=', '[', ']']) {
                if let Some(flag) = long_flag(word) {
                    help.flags.insert(flag);
                }
                if !word.starts_with('-') && !word.is_empty() {
                    break;
                }
            }
        }
    }
    help
}

/// `--flag` out of a word such as `--flag`, `[--flag`, `"--flag",`,
/// `--flag=VALUE` or `--flag`/`: None if the word is not a long flag.
fn long_flag(word: &str) -> Option<String> {
    let word = word.trim_start_matches(['[', '(', '"', '\'', '*']);
    let name = word.strip_prefix("--")?;
    let end = name.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')).unwrap_or(name.len());
    let name = name[..end].trim_end_matches('-');
    let first = name.chars().next()?;
    first.is_ascii_lowercase().then(|| format!("--{name}"))
}

/// Every long flag in free text, with the 0-based line it is on.
fn flags_in(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(at) = line[from..].find("--") {
            let start = from + at;
            let before = line[..start].chars().next_back();
            if before.is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '_' || c == '/'))
                && let Some(flag) = long_flag(&line[start..])
            {
                found.push((index, flag));
            }
            from = start + 2 + line[start + 2..].find(|c: char| c != '-').unwrap_or(0);
        }
    }
    found
}

/// The base name of a token that may be a path (`target/release/pullpassd`).
fn program(token: &str) -> &str {
    token.trim_start_matches(['"', '\'', '(']).rsplit('/').next().unwrap_or(token)
}

/// A command of ours in a shell line: the binary and its arguments, or None
/// when the segment runs another program.
fn our_command(segment: &str) -> Option<(&'static str, Vec<&str>)> {
    let tokens: Vec<&str> = segment.split_whitespace().collect();
    let mut i = 0;
    // VAR=value prefixes
    while i < tokens.len() && is_assignment(tokens[i]) {
        i += 1;
    }
    let first = *tokens.get(i)?;
    if let Some(bin) = BINARIES.iter().find(|b| **b == program(first)) {
        return Some((bin, tokens[i + 1..].to_vec()));
    }
    if first == "cargo" {
        // cargo run … --bin X -- ARGS
        let bin = tokens.windows(2).find(|w| w[0] == "--bin").map(|w| w[1])?;
        let bin = BINARIES.iter().find(|b| **b == bin)?;
        let dashes = tokens.iter().position(|t| *t == "--")?;
        return Some((bin, tokens[dashes + 1..].to_vec()));
    }
    if WRAPPERS.contains(&first) {
        let at = tokens[i + 1..].iter().position(|t| BINARIES.contains(&program(t)))? + i + 1;
        let bin = BINARIES.iter().find(|b| **b == program(tokens[at]))?;
        return Some((bin, tokens[at + 1..].to_vec()));
    }
    None
}

fn is_assignment(token: &str) -> bool {
    token.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

/// The commands of a shell line: split at pipes, `&&`, `;` and command
/// substitutions; a trailing `# comment` dropped.
fn shell_segments(line: &str) -> Vec<&str> {
    let line = match line.find(" #") {
        Some(at) => &line[..at],
        None if line.trim_start().starts_with('#') => "",
        None => line,
    };
    line.split(['|', ';', '`', ')', '&']).flat_map(|s| s.split("$(")).collect()
}

/// Checks the flags of one command of ours against its help, following its
/// subcommands as they appear.
fn check_command(
    tree: &HelpTree,
    bin: &str,
    args: &[&str],
    location: &str,
    offenders: &mut Vec<String>,
    checked: &mut usize,
) {
    let mut path: Vec<String> = Vec::new();
    for arg in args {
        let arg = arg.trim_matches(['[', ']', '"', '\'', ',']);
        let help = tree.help(bin, &path).expect("only known subcommands are followed");
        if let Some(flag) = long_flag(arg).filter(|_| arg.starts_with("--")) {
            *checked += 1;
            if !help.flags.contains(&flag) {
                let command = std::iter::once(bin.to_owned()).chain(path.iter().cloned()).collect::<Vec<_>>().join(" ");
                offenders.push(format!("{location}: {flag} is not in `{command} --help`"));
            }
        } else if help.subcommands.contains(arg) {
            path.push(arg.to_owned());
        }
    }
}

#[test]
fn every_flag_named_in_the_docs_exists_in_the_binarys_help() {
    let tree = HelpTree::load();
    let foreign: HashMap<&str, &str> = FOREIGN_FLAGS.iter().copied().collect();
    let mut offenders = Vec::new();
    let mut checked = 0;
    let mut foreign_used = BTreeSet::new();
    for doc in docs() {
        let lines = classify(&doc.text);
        // Code blocks: command lines of ours, continuation lines joined.
        let mut pending: Option<(usize, String)> = None;
        for line in lines.iter().filter(|l| matches!(l.kind, Kind::Fenced | Kind::Indented)) {
            if line.lang == "yaml" || line.lang == "yml" {
                // A kubelet CredentialProviderConfig: the plugin's args.
                let block: Vec<&Line> = lines.iter().filter(|l| l.block == line.block).collect();
                let is_plugin = block.iter().any(|l| l.text.contains("name: pullpass-kubelet-credential-provider"));
                if is_plugin {
                    let args: Vec<&str> = line
                        .text
                        .split([' ', ',', '[', ']'])
                        .filter(|t| t.trim_matches('"').starts_with("--"))
                        .collect();
                    let args: Vec<&str> = args.iter().map(|a| a.trim_matches('"')).collect();
                    check_command(
                        &tree,
                        "pullpass-kubelet-credential-provider",
                        &args,
                        &doc.location(line.number),
                        &mut offenders,
                        &mut checked,
                    );
                }
                continue;
            }
            if !line.lang.is_empty() && !matches!(line.lang, "sh" | "bash" | "shell" | "console") {
                continue;
            }
            let text = line.text.trim().trim_start_matches("$ ");
            let (start, joined) = match pending.take() {
                Some((start, mut joined)) => {
                    joined.push(' ');
                    joined.push_str(text);
                    (start, joined)
                }
                None => (line.number, text.to_owned()),
            };
            if let Some(stripped) = joined.strip_suffix('\\') {
                pending = Some((start, stripped.to_owned()));
                continue;
            }
            for segment in shell_segments(&joined) {
                if let Some((bin, args)) = our_command(segment) {
                    check_command(&tree, bin, &args, &doc.location(start), &mut offenders, &mut checked);
                }
            }
        }
        // Prose: inline code that starts with one of our binaries is a
        // command; any other flag must be one of ours, or a known foreign one.
        let (spans, outside) = code_spans(&prose(&doc.text));
        for span in &spans {
            let location = doc.location(span.line);
            if let Some((bin, args)) = our_command(&span.text) {
                check_command(&tree, bin, &args, &location, &mut offenders, &mut checked);
                continue;
            }
            let runs = span.text.split_whitespace().find(|t| !is_assignment(t));
            if runs.is_some_and(|program| FOREIGN_PROGRAMS.contains(&program)) {
                continue;
            }
            for (_, flag) in flags_in(&span.text) {
                checked += 1;
                if let Some(tool) = foreign.get(flag.as_str()) {
                    foreign_used.insert((flag.clone(), *tool));
                } else if !tree.any_has(&flag) {
                    offenders.push(format!("{location}: {flag} is in no --help of {}", BINARIES.join(", ")));
                }
            }
        }
        for (index, flag) in flags_in(&outside) {
            checked += 1;
            if let Some(tool) = foreign.get(flag.as_str()) {
                foreign_used.insert((flag.clone(), *tool));
            } else if !tree.any_has(&flag) {
                offenders.push(format!(
                    "{}: {flag} is in no --help of {}",
                    doc.location(index + 1),
                    BINARIES.join(", ")
                ));
            }
        }
    }
    eprintln!("{checked} flags checked against {} --help texts", tree.commands.len());
    assert!(checked > 100, "only {checked} flags found in the docs: is the parser broken?");
    let unused: Vec<&str> = FOREIGN_FLAGS
        .iter()
        .map(|(flag, _)| *flag)
        .filter(|flag| !foreign_used.iter().any(|(f, _)| f == flag))
        .collect();
    assert!(
        offenders.is_empty(),
        "{} flags in the docs that no --help has:\n{}",
        offenders.len(),
        offenders.join("\n")
    );
    assert!(unused.is_empty(), "FOREIGN_FLAGS lists flags the docs no longer name: {unused:?}");
}

#[test]
fn command_lines_are_attributed_to_the_binary_and_subcommand_they_run() {
    assert_eq!(our_command("sudo PULLPASS_X=1 pullpassd keys list"), Some(("pullpassd", vec!["keys", "list"])));
    assert_eq!(our_command("cargo run --release -p x --bin pullpassd -- --dev"), Some(("pullpassd", vec!["--dev"])));
    assert_eq!(our_command("target/release/pullpass auth x"), Some(("pullpass", vec!["auth", "x"])));
    assert_eq!(our_command("skopeo copy --src-creds x docker://y"), None);
    assert_eq!(
        our_command("systemd-run -P pullpassd tokens create-root"),
        Some(("pullpassd", vec!["tokens", "create-root"]))
    );
    let segments = shell_segments("skopeo inspect $(pullpass auth i -w acme --format skopeo-args) docker://i # --no");
    assert!(segments.iter().any(|s| s.trim() == "pullpass auth i -w acme --format skopeo-args"), "{segments:?}");
    assert!(!segments.iter().any(|s| s.contains("--no")), "{segments:?}");
    assert_eq!(long_flag("[--ttl"), Some("--ttl".to_owned()));
    assert_eq!(long_flag("--log-format=json"), Some("--log-format".to_owned()));
    assert_eq!(long_flag("--"), None);
    let found: Vec<String> =
        flags_in("a `--x-y`/`--z`, 2--3 and -- so on, --w=1").into_iter().map(|(_, f)| f).collect();
    assert_eq!(found, ["--x-y", "--z", "--w"]);
}

// ---------------------------------------------------------------- proto names

/// What the contract names: every message, enum and service of
/// `pullpass.v1`, by name relative to the package.
#[derive(Debug, Default)]
struct Contract {
    /// `Credential`, `Credential.Provider`, … -> its fields' names (and
    /// their message types) or, for an enum, its values.
    members: BTreeMap<String, BTreeMap<String, Option<String>>>,
    /// Service -> its methods.
    services: BTreeMap<String, BTreeSet<String>>,
}

impl Contract {
    fn load() -> Self {
        let set = FileDescriptorSet::decode(pullpass::FILE_DESCRIPTOR_SET).expect("the descriptor set decodes");
        let mut contract = Contract::default();
        for file in set.file.iter().filter(|f| f.package() == "pullpass.v1") {
            for message in &file.message_type {
                contract.add_message("", message);
            }
            for enumeration in &file.enum_type {
                let values = enumeration.value.iter().map(|v| (v.name().to_owned(), None)).collect();
                contract.members.insert(enumeration.name().to_owned(), values);
            }
            for service in &file.service {
                let methods = service.method.iter().map(|m| m.name().to_owned()).collect();
                contract.services.insert(service.name().to_owned(), methods);
            }
        }
        assert!(contract.services.contains_key("CredentialService"), "{contract:?}");
        contract
    }

    fn add_message(&mut self, prefix: &str, message: &DescriptorProto) {
        let name = format!("{prefix}{}", message.name());
        let fields = message
            .field
            .iter()
            .map(|f| {
                (
                    f.name().to_owned(),
                    f.type_name.as_deref().and_then(|t| t.strip_prefix(".pullpass.v1.")).map(String::from),
                )
            })
            .collect();
        self.members.insert(name.clone(), fields);
        for nested in &message.nested_type {
            self.add_message(&format!("{name}."), nested);
        }
        for enumeration in &message.enum_type {
            let values = enumeration.value.iter().map(|v| (v.name().to_owned(), None)).collect();
            self.members.insert(format!("{name}.{}", enumeration.name()), values);
        }
    }

    /// Whether `Name`, `Service/Method`, `Service.Method`, `Message.field`,
    /// `Message.Nested`, `Enum.VALUE` or a chain of fields exists.
    fn resolves(&self, name: &str) -> bool {
        let parts: Vec<&str> = name.split(['.', '/']).collect();
        if let Some(methods) = self.services.get(parts[0]) {
            return match parts.as_slice() {
                [_] => true,
                [_, method] => methods.contains(*method),
                _ => false,
            };
        }
        // The longest known type name the parts start with, then fields.
        let mut current: Option<String> = None;
        let mut i = 0;
        for end in (1..=parts.len()).rev() {
            let candidate = parts[..end].join(".");
            if self.members.contains_key(&candidate) {
                current = Some(candidate);
                i = end;
                break;
            }
        }
        let Some(mut current) = current else { return false };
        while i < parts.len() {
            let Some(next) = self.members.get(&current).and_then(|members| members.get(parts[i])) else { return false };
            match next {
                Some(message) if i + 1 < parts.len() => current = message.clone(),
                _ if i + 1 < parts.len() => return false,
                _ => {}
            }
            i += 1;
        }
        true
    }
}

/// Names the docs give the contract: `pullpass.v1.X…`, `XService.Method`,
/// `XService/Method`, and backticked RPC-like names. (line, name as written,
/// name relative to the package)
fn contract_names(text: &str) -> Vec<(usize, String, String)> {
    let mut names = Vec::new();
    let identifier = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '/';
    for (index, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(at) = line[from..].find("pullpass.v1.") {
            let start = from + at + "pullpass.v1.".len();
            let end = line[start..].find(|c: char| !identifier(c)).map_or(line.len(), |n| start + n);
            let name = line[start..end].trim_end_matches(['.', '/']);
            if !name.is_empty() {
                names.push((index + 1, format!("pullpass.v1.{name}"), name.to_owned()));
            }
            from = end;
        }
        // Unqualified `SomethingService.Method` / `SomethingService/Method`.
        let mut from = 0;
        while let Some(at) = line[from..].find("Service") {
            let service_end = from + at + "Service".len();
            let start = line[..from + at].rfind(|c: char| !c.is_ascii_alphanumeric()).map_or(0, |n| n + 1);
            from = service_end;
            let qualified = line[..start].ends_with("pullpass.v1.");
            let separator = line[service_end..].chars().next();
            if qualified || !matches!(separator, Some('.' | '/')) || start == service_end - "Service".len() {
                continue;
            }
            let method_start = service_end + 1;
            let method_end = line[method_start..]
                .find(|c: char| !c.is_ascii_alphanumeric())
                .map_or(line.len(), |n| method_start + n);
            let method = &line[method_start..method_end];
            if method.starts_with(|c: char| c.is_ascii_uppercase()) {
                let name = format!("{}{}{method}", &line[start..service_end], separator.expect("checked"));
                names.push((index + 1, name.clone(), name));
            }
        }
    }
    names
}

#[test]
fn every_pullpass_v1_name_in_the_docs_exists_in_the_contract() {
    let contract = Contract::load();
    let methods: BTreeSet<&str> = contract.services.values().flatten().map(String::as_str).collect();
    let foreign: HashMap<&str, &str> = FOREIGN_RPCS.iter().copied().collect();
    let mut offenders = Vec::new();
    let mut checked = 0;
    for doc in docs() {
        for (line, written, name) in contract_names(&doc.text) {
            checked += 1;
            if !contract.resolves(&name) {
                offenders.push(format!("{}: {written} is not in the contract", doc.location(line)));
            }
        }
        // Backticked RPC names in prose: `IssueRegistryAuth`, `RevokeAccessToken`…
        let (spans, _) = code_spans(&prose(&doc.text));
        for span in spans {
            let word = span.text.trim();
            let looks_like_rpc = RPC_VERBS.iter().any(|verb| {
                word.strip_prefix(verb).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
            }) && word.chars().all(|c| c.is_ascii_alphanumeric());
            if !looks_like_rpc || foreign.contains_key(word) {
                continue;
            }
            checked += 1;
            if !methods.contains(word) {
                offenders.push(format!("{}: `{word}` is no RPC of pullpass.v1", doc.location(span.line)));
            }
        }
    }
    eprintln!("{checked} contract names checked");
    assert!(checked > 30, "only {checked} contract names found in the docs: is the parser broken?");
    assert!(
        offenders.is_empty(),
        "{} names in the docs that the contract lacks:\n{}",
        offenders.len(),
        offenders.join("\n")
    );
}

#[test]
fn contract_names_resolve_as_the_descriptor_set_says() {
    let contract = Contract::load();
    for name in [
        "Credential",
        "CredentialService",
        "CredentialService/CreateCredential",
        "RegistryAuthService.IssueRegistryAuth",
        "Credential.secret",
        "AccessService/TestIdentityToken",
    ] {
        assert!(contract.resolves(name), "{name} should resolve");
    }
    for name in ["Credentials", "CredentialService/CreateCredentials", "Credential.no_such_field", "Nothing.x"] {
        assert!(!contract.resolves(name), "{name} should not resolve");
    }
    let names = contract_names(
        "`pullpass.v1.CredentialService/CreateCredential`. AuditService.ListAuditEvents and grpc.health.v1.Health/Check",
    );
    let written: Vec<&str> = names.iter().map(|(_, w, _)| w.as_str()).collect();
    assert_eq!(written, ["pullpass.v1.CredentialService/CreateCredential", "AuditService.ListAuditEvents"]);
}

// ---------------------------------------------------------------- the README

#[test]
fn the_readme_is_a_front_page_of_at_most_300_lines_that_keeps_the_two_commands() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(lines <= 300, "README.md has {lines} lines; move detail to a page under docs/");
    let mut missing = String::new();
    for needle in [
        "## The two commands",
        "    cargo run --release -p pullpass-server --bin pullpassd -- --dev\n",
        "    scripts/test.sh\n",
    ] {
        if !readme.contains(needle) {
            let _ = writeln!(missing, "{needle:?}");
        }
    }
    assert!(missing.is_empty(), "README.md lost:\n{missing}");
}
