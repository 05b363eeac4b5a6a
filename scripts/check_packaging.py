"""Static checks of packaging/ (run by scripts/check-packaging.sh, offline).

  unit FILE            the systemd unit keeps what a network service needs and
                       what the packaging promises (the exposure score itself
                       comes from systemd-analyze, in the shell script)
  env FILE             the environment file example names real variables
  manifests DIR K8S_VERSION...
                       every manifest under DIR validates strictly against the
                       Kubernetes schemas bundled in kubernetes-validate (no
                       network), has no duplicate keys, and hangs together
                       (selectors, ports, volumes, flags, variables, security);
                       a kubelet CredentialProviderConfig (a node file, which
                       kubernetes-validate has no schema for) is checked field
                       by field against the kubelet's types instead, its plugin
                       flags and variables against the plugin's sources, and
                       its token audience against the RBAC of its directory
  containerfile FILE IGNOREFILE
                       stages, COPY --from, the non-root user, the binaries
                       (checked against the workspace's [[bin]] targets), exec
                       forms, flags and the build-context ignore file

Each command prints one `key=value` summary line on success, or every problem
found and exits 1. Flags and PULLPASS_* variables are checked against the Rust
sources (clap attributes and string literals), so the packaging cannot drift
from the binaries silently.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY_DIR = "/usr/local/bin"


class Problems:
    def __init__(self, what: str):
        self.what = what
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def check(self, condition: bool, message: str) -> bool:
        if not condition:
            self.add(message)
        return condition

    def finish(self, summary: str) -> int:
        if self.items:
            for item in self.items:
                print(f"check-packaging: {self.what}: {item}", file=sys.stderr)
            return 1
        print(summary)
        return 0


# --- what the Rust sources define --------------------------------------------


def rust_sources() -> list[Path]:
    return [p for d in ("server/src", "client-sdk/src", "src") for p in sorted((ROOT / d).rglob("*.rs"))]


def known_variables() -> set[str]:
    """Every PULLPASS_* string literal in the sources (clap env = and consts)."""
    names: set[str] = set()
    for path in rust_sources():
        names.update(re.findall(r'"(PULLPASS_[A-Z0-9_]+)"', path.read_text(encoding="utf-8")))
    return names


def known_flags() -> set[str]:
    """Long flags of pullpassd and the clients, from the clap derive attributes."""
    flags = {"--help", "--version"}
    arg = re.compile(r"#\[arg\((.*?)\)\]\s*(?:#\[[^\]]*\]\s*|///[^\n]*\n\s*)*(?:pub\s+)?(\w+)\s*:", re.DOTALL)
    for path in rust_sources():
        for attrs, field in arg.findall(path.read_text(encoding="utf-8")):
            named = re.search(r'\blong\s*=\s*"([^"]+)"', attrs)
            if named:
                flags.add("--" + named.group(1))
            elif re.search(r"\blong\b", attrs):
                flags.add("--" + field.replace("_", "-"))
    return flags


def known_subcommands() -> set[str]:
    """Subcommand names of pullpassd (enum variants in cli.rs, kebab-case)."""
    text = (ROOT / "server/src/cli.rs").read_text(encoding="utf-8")
    names: set[str] = set()
    for body in re.findall(r"pub enum \w*Command \{(.*?)\n\}", text, re.DOTALL):
        for variant in re.findall(r"^    ([A-Z]\w*)\b", body, re.MULTILINE):
            names.add(re.sub(r"(?<!^)(?=[A-Z])", "-", variant).lower())
    return names


def workspace_bins() -> tuple[dict[str, list[str]], str]:
    """{package name: [binary names]} of the workspace members, and rust-version."""
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))
    workspace = manifest["workspace"]
    members = ["."] + list(workspace.get("members", []))
    packages: dict[str, list[str]] = {}
    for member in members:
        directory = ROOT / member
        package = tomllib.loads((directory / "Cargo.toml").read_text(encoding="utf-8"))
        name = package["package"]["name"]
        bins = [b["name"] for b in package.get("bin", [])]
        autobins = package["package"].get("autobins", True)
        if autobins:
            if (directory / "src/main.rs").is_file() and not any(
                b.get("path") == "src/main.rs" for b in package.get("bin", [])
            ):
                bins.append(name)
            for path in sorted((directory / "src/bin").glob("*.rs")) if (directory / "src/bin").is_dir() else []:
                if path.stem not in bins and not any(
                    b.get("path") == f"src/bin/{path.name}" for b in package.get("bin", [])
                ):
                    bins.append(path.stem)
            for path in sorted((directory / "src/bin").glob("*/main.rs")) if (directory / "src/bin").is_dir() else []:
                stem = path.parent.name
                if stem not in bins and not any(
                    b.get("path") == f"src/bin/{stem}/main.rs" for b in package.get("bin", [])
                ):
                    bins.append(stem)
        for b in package.get("bin", []):
            path = directory / b.get("path", f"src/bin/{b['name']}.rs")
            if not path.is_file():
                raise SystemExit(f"check-packaging: [[bin]] {b['name']} of {name}: {path} does not exist")
        packages[name] = bins
    rust_version = workspace.get("package", {}).get("rust-version", "")
    return packages, rust_version


def binary_flags(source: str) -> set[str]:
    """Long flags of one binary, from the clap attributes of its source file."""
    flags = {"--help", "--version"}
    arg = re.compile(r"#\[arg\((.*?)\)\]\s*(?:#\[[^\]]*\]\s*|///[^\n]*\n\s*)*(?:pub\s+)?(\w+)\s*:", re.DOTALL)
    for attrs, field in arg.findall((ROOT / source).read_text(encoding="utf-8")):
        named = re.search(r'\blong\s*=\s*"([^"]+)"', attrs)
        if named:
            flags.add("--" + named.group(1))
        elif re.search(r"\blong\b", attrs):
            flags.add("--" + field.replace("_", "-"))
    return flags


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def check_command(problems: Problems, where: str, argv: list[str], flags: set[str], subcommands: set[str]) -> None:
    """Flags of a pullpassd command line exist; its subcommand (if any) too."""
    for token in argv:
        if token.startswith("--"):
            flag = token.split("=", 1)[0]
            problems.check(flag in flags, f"{where}: unknown flag {flag}")
    if argv and argv[0].endswith("pullpassd") and "healthcheck" in argv:
        problems.check("healthcheck" in subcommands, f"{where}: pullpassd has no `healthcheck` subcommand")


# --- the systemd unit --------------------------------------------------------


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    logical = ""
    for raw in text.splitlines():
        line = logical + raw
        if line.rstrip().endswith("\\"):
            logical = line.rstrip()[:-1] + " "
            continue
        logical = ""
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("["):
            current = stripped.strip("[]")
            sections.setdefault(current, [])
            continue
        key, _, value = stripped.partition("=")
        sections.setdefault(current, []).append((key.strip(), value.strip()))
    return sections


def last(entries: list[tuple[str, str]], key: str) -> str | None:
    values = [v for k, v in entries if k == key]
    return values[-1] if values else None


def cmd_unit(path: str) -> int:
    problems = Problems("unit")
    text = Path(path).read_text(encoding="utf-8")
    sections = parse_unit(text)
    service = sections.get("Service", [])
    flags, subcommands = known_flags(), known_subcommands()
    expect = {
        "Type": "simple",
        "DynamicUser": "yes",
        "StateDirectory": "pullpass",
        "ProtectSystem": "strict",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
        "Restart": "on-failure",
        "TimeoutStopSec": "45",
        "NoNewPrivileges": "yes",
        "EnvironmentFile": "-/etc/pullpass/pullpassd.env",
    }
    for key, value in expect.items():
        got = last(service, key)
        problems.check(got == value, f"{key}= is {got!r}, expected {value!r}")
    credentials = [v for k, v in service if k == "LoadCredential"]
    problems.check(
        "master.key:/etc/pullpass/master.key" in credentials, "no LoadCredential=master.key:/etc/pullpass/master.key"
    )
    execs = [v for k, v in service if k == "ExecStart"]
    if problems.check(len(execs) == 1, f"expected one ExecStart=, got {len(execs)}"):
        argv = shlex.split(execs[0].lstrip("-@:+!"))
        problems.check(argv[0] == "/usr/bin/pullpassd", f"ExecStart= runs {argv[0]}, expected /usr/bin/pullpassd")
        problems.check(
            "--data-dir" in argv and argv[argv.index("--data-dir") + 1 :][:1] == ["${STATE_DIRECTORY}"],
            "ExecStart= must pass --data-dir ${STATE_DIRECTORY}",
        )
        problems.check(
            "--key-file" not in argv, "ExecStart= must not pass --key-file (the key comes from LoadCredential=)"
        )
        check_command(problems, "ExecStart=", argv, flags, subcommands)
    # Still a network service: it listens on TCP and dials registries and
    # PostgreSQL, so these must not be taken away.
    families = " ".join(v for k, v in service if k == "RestrictAddressFamilies").split()
    for family in ("AF_INET", "AF_INET6"):
        problems.check(
            family in families and "~" not in "".join(families), f"RestrictAddressFamilies= must allow {family}"
        )
    problems.check(
        last(service, "PrivateNetwork") in (None, "no", "false"), "PrivateNetwork= would cut the service off"
    )
    denied = " ".join(v for k, v in service if k == "IPAddressDeny").split()
    allowed = " ".join(v for k, v in service if k == "IPAddressAllow").split()
    problems.check(
        not ({"any", "0.0.0.0/0", "::/0"} & set(denied)) or bool({"any", "0.0.0.0/0", "::/0"} & set(allowed)),
        "IPAddressDeny= denies every address: registries could not be reached",
    )
    filters = [v for k, v in service if k == "SystemCallFilter"]
    allowed_calls = {w for v in filters if not v.startswith("~") for w in v.split()}
    denied_calls = {w for v in filters if v.startswith("~") for w in v[1:].split()}
    problems.check("@system-service" in allowed_calls, "SystemCallFilter= does not allow @system-service")
    problems.check("@privileged" in denied_calls, "SystemCallFilter= does not deny @privileged")
    problems.check("@network-io" not in denied_calls, "SystemCallFilter= denies @network-io: no sockets")
    problems.check(
        any(k == "WantedBy" for k, _ in sections.get("Install", [])), "[Install] has no WantedBy= (enable would fail)"
    )
    return problems.finish(f"unit_directives={sum(len(v) for v in sections.values())}")


# --- the environment file ------------------------------------------------------


def cmd_env(path: str) -> int:
    problems = Problems("env file")
    variables = known_variables()
    count = 0
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        setting = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if not setting:
            problems.check(not line or line.startswith("#"), f"line {number}: not VARIABLE=value: {raw!r}")
            continue
        name = setting.group(1)
        count += 1
        problems.check(name in variables, f"line {number}: {name} is not a variable pullpassd reads")
    for needed in (
        "PULLPASS_LISTEN",
        "PULLPASS_GATEWAY_LISTEN",
        "PULLPASS_METRICS_LISTEN",
        "PULLPASS_DATABASE_URL",
        "PULLPASS_TLS_CERT",
        "PULLPASS_TLS_KEY",
        "PULLPASS_LOG",
    ):
        problems.check(
            re.search(rf"^#?{needed}=", Path(path).read_text(encoding="utf-8"), re.MULTILINE) is not None,
            f"{needed} is not documented",
        )
    return problems.finish(f"env_variables={count}")


# --- Kubernetes manifests ----------------------------------------------------------


def load_yaml_documents(path: Path) -> list[dict]:
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.load_all(f, Loader=UniqueKeyLoader) if d is not None]


def pod_spec(resource: dict) -> dict | None:
    if resource.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return resource.get("spec", {}).get("template", {}).get("spec")
    return None


def selector_matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_workload(
    problems: Problems, where: str, resource: dict, flags: set[str], subcommands: set[str], variables: set[str]
) -> None:
    spec = resource["spec"]
    template = spec["template"]
    labels = template.get("metadata", {}).get("labels", {})
    pod = template["spec"]
    problems.check(
        selector_matches(spec.get("selector", {}).get("matchLabels", {}), labels),
        f"{where}: spec.selector does not match the pod template's labels",
    )
    problems.check(
        pod.get("terminationGracePeriodSeconds", 30) >= 45,
        f"{where}: terminationGracePeriodSeconds below 45 (drain 5 s + grace 30 s)",
    )
    security = pod.get("securityContext", {})
    problems.check(security.get("runAsNonRoot") is True, f"{where}: pod securityContext.runAsNonRoot is not true")
    problems.check(security.get("runAsUser", 0) != 0, f"{where}: pod runs as uid 0")
    annotations = template.get("metadata", {}).get("annotations", {})
    for key, value in (("prometheus.io/scrape", "true"), ("prometheus.io/path", "/metrics")):
        problems.check(annotations.get(key) == value, f"{where}: annotation {key} is not {value!r}")
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    containers = pod.get("initContainers", []) + pod["containers"]
    ports = {}
    for container in containers:
        name = f"{where}: container {container['name']}"
        sc = container.get("securityContext", {})
        problems.check(sc.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation is not false")
        problems.check(sc.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem is not true")
        problems.check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: capabilities do not drop ALL")
        problems.check(not sc.get("capabilities", {}).get("add"), f"{name}: adds capabilities")
        seccomp = sc.get("seccompProfile", security.get("seccompProfile", {})).get("type")
        problems.check(seccomp == "RuntimeDefault", f"{name}: seccompProfile is {seccomp!r}, expected RuntimeDefault")
        problems.check("limits" in container.get("resources", {}), f"{name}: no resource limits")
        for mount in container.get("volumeMounts", []):
            problems.check(
                mount["name"] in volumes or mount["name"] in claims,
                f"{name}: volumeMount {mount['name']} names no volume",
            )
        for env in container.get("env", []):
            if env["name"].startswith("PULLPASS_"):
                problems.check(env["name"] in variables, f"{name}: {env['name']} is not a variable pullpassd reads")
        for port in container.get("ports", []):
            if "name" in port:
                ports[port["name"]] = port["containerPort"]
        if container in pod["containers"]:
            argv = [f"{BINARY_DIR}/pullpassd"] + container.get("command", [])[1:] + container.get("args", [])
            check_command(problems, f"{name} args", argv, flags, subcommands)
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                problems.check(probe in container, f"{name}: no {probe}")
                command = container.get(probe, {}).get("exec", {}).get("command")
                if command:
                    problems.check(command[0].startswith(BINARY_DIR + "/"), f"{name}: {probe} runs {command[0]}")
                    check_command(problems, f"{name} {probe}", command, flags, subcommands)
            for mount in container.get("volumeMounts", []):
                source = volumes.get(mount["name"], {})
                if ("secret" in source or "emptyDir" in source) and mount["mountPath"].startswith("/etc/pullpass"):
                    problems.check(mount.get("readOnly") is True, f"{name}: {mount['mountPath']} is not readOnly")
    problems.check(
        str(ports.get("metrics")) == annotations.get("prometheus.io/port"),
        f"{where}: prometheus.io/port is not the metrics containerPort",
    )
    for port_name in ("grpc", "gateway", "metrics"):
        problems.check(port_name in ports, f"{where}: no container port named {port_name}")
    resource["_ports"] = ports
    resource["_labels"] = labels


# kubelet.config.k8s.io/v1 CredentialProviderConfig, as the kubelet's Go types
# have it (KEP-4412 added tokenAttributes).
PROVIDER_CONFIG_FIELDS = {"apiVersion", "kind", "providers"}
PROVIDER_FIELDS = {"name", "matchImages", "defaultCacheDuration", "apiVersion", "args", "env", "tokenAttributes"}
TOKEN_ATTRIBUTE_FIELDS = {
    "serviceAccountTokenAudience",
    "cacheType",
    "requireServiceAccount",
    "requiredServiceAccountAnnotationKeys",
    "optionalServiceAccountAnnotationKeys",
}
KUBELET_PLUGIN = "pullpass-kubelet-credential-provider"
KUBELET_PLUGIN_SOURCE = f"client-sdk/src/bin/{KUBELET_PLUGIN}.rs"


def check_credential_provider_config(problems: Problems, where: str, config: dict, variables: set[str]) -> set[str]:
    """The kubelet's credential provider config; returns the token audiences it asks for."""
    audiences: set[str] = set()
    problems.check(config.get("apiVersion") == "kubelet.config.k8s.io/v1", f"{where}: apiVersion is not kubelet.config.k8s.io/v1")
    for key in set(config) - PROVIDER_CONFIG_FIELDS:
        problems.add(f"{where}: unknown field {key}")
    providers = config.get("providers") or []
    problems.check(isinstance(providers, list) and bool(providers), f"{where}: no providers")
    plugin_flags = binary_flags(KUBELET_PLUGIN_SOURCE)
    plugin_text = (ROOT / KUBELET_PLUGIN_SOURCE).read_text(encoding="utf-8")
    for index, provider in enumerate(providers if isinstance(providers, list) else []):
        at = f"{where}: providers[{index}]"
        for key in set(provider) - PROVIDER_FIELDS:
            problems.add(f"{at}: unknown field {key}")
        problems.check(provider.get("name") == KUBELET_PLUGIN, f"{at}: name is not {KUBELET_PLUGIN}")
        problems.check(
            provider.get("apiVersion") == "credentialprovider.kubelet.k8s.io/v1",
            f"{at}: apiVersion is not credentialprovider.kubelet.k8s.io/v1",
        )
        problems.check(bool(provider.get("matchImages")), f"{at}: no matchImages")
        problems.check(
            re.fullmatch(r"(\d+h)?(\d+m)?(\d+s)?", str(provider.get("defaultCacheDuration", ""))) is not None
            and bool(provider.get("defaultCacheDuration")),
            f"{at}: defaultCacheDuration is not a duration such as 5m",
        )
        for token in provider.get("args", []):
            if str(token).startswith("--"):
                flag = str(token).split("=", 1)[0]
                problems.check(flag in plugin_flags, f"{at}: {KUBELET_PLUGIN} has no flag {flag}")
        for env in provider.get("env", []):
            problems.check(set(env) == {"name", "value"}, f"{at}: env entries have exactly name and value")
            if str(env.get("name", "")).startswith("PULLPASS_"):
                problems.check(env["name"] in variables, f"{at}: {env['name']} is not a variable the plugin reads")
        attributes = provider.get("tokenAttributes")
        if attributes is None:
            continue
        for key in set(attributes) - TOKEN_ATTRIBUTE_FIELDS:
            problems.add(f"{at}: tokenAttributes: unknown field {key}")
        audience = attributes.get("serviceAccountTokenAudience")
        if problems.check(isinstance(audience, str) and bool(audience), f"{at}: tokenAttributes: no serviceAccountTokenAudience"):
            audiences.add(audience)
        problems.check(
            attributes.get("cacheType") in ("Token", "ServiceAccount"),
            f"{at}: tokenAttributes: cacheType must be Token or ServiceAccount (required since Kubernetes 1.34)",
        )
        problems.check(
            isinstance(attributes.get("requireServiceAccount"), bool),
            f"{at}: tokenAttributes: requireServiceAccount must be set, true or false",
        )
        if attributes.get("requiredServiceAccountAnnotationKeys"):
            problems.check(
                attributes.get("requireServiceAccount") is True,
                f"{at}: tokenAttributes: required annotation keys need requireServiceAccount: true",
            )
        for key in attributes.get("requiredServiceAccountAnnotationKeys", []) + attributes.get(
            "optionalServiceAccountAnnotationKeys", []
        ):
            problems.check(f'"{key}"' in plugin_text, f"{at}: tokenAttributes: the plugin does not read the annotation {key}")
    return audiences


def check_audience_rbac(problems: Problems, where: str, audiences: set[str], resources: list[tuple[str, dict]]) -> None:
    """Each audience is granted to the nodes by a ClusterRole bound to system:nodes in the same directory."""
    roles = {
        r["metadata"]["name"]: r
        for _, r in resources
        if r.get("kind") == "ClusterRole" and r.get("apiVersion", "").startswith("rbac.authorization.k8s.io/")
    }
    granted: set[str] = set()
    for _, binding in resources:
        if binding.get("kind") != "ClusterRoleBinding":
            continue
        to_nodes = any(s.get("kind") == "Group" and s.get("name") == "system:nodes" for s in binding.get("subjects", []))
        role = roles.get(binding.get("roleRef", {}).get("name"))
        if not to_nodes or role is None:
            continue
        for rule in role.get("rules", []):
            if "request-serviceaccounts-token-audience" in rule.get("verbs", []) and "" in rule.get("apiGroups", []):
                granted.update(rule.get("resources", []))
    for audience in sorted(audiences):
        problems.check(
            audience in granted or "*" in granted,
            f"{where}: no ClusterRole bound to system:nodes grants request-serviceaccounts-token-audience on {audience!r}",
        )


def cmd_manifests(directory: str, versions: list[str]) -> int:
    import importlib.metadata

    import kubernetes_validate
    import yaml
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError, VersionNotSupportedError

    problems = Problems("kubernetes")
    flags, subcommands, variables = known_flags(), known_subcommands(), known_variables()
    files = sorted(Path(directory).rglob("*.yaml")) + sorted(Path(directory).rglob("*.yml"))
    problems.check(bool(files), f"no manifests under {directory}")
    count = 0
    by_dir: dict[Path, list[tuple[str, dict]]] = {}
    kubelet_configs: list[tuple[Path, str, set[str]]] = []
    for path in files:
        try:
            documents = load_yaml_documents(path)
        except yaml.YAMLError as e:  # carries the position
            problems.add(f"{path}: {e}")
            continue
        for index, resource in enumerate(documents):
            where = f"{path}[{index}]"
            if not problems.check(
                isinstance(resource, dict) and "kind" in resource and "apiVersion" in resource,
                f"{where}: not a Kubernetes object",
            ):
                continue
            where = f"{path}: {resource['kind']}/{resource.get('metadata', {}).get('name', '?')}"
            count += 1
            if resource["kind"] == "CredentialProviderConfig" and str(resource["apiVersion"]).startswith(
                "kubelet.config.k8s.io/"
            ):
                audiences = check_credential_provider_config(problems, where, resource, variables)
                kubelet_configs.append((path.parent, where, audiences))
                continue
            for version in versions:
                try:
                    kubernetes_validate.validate(resource, version, strict=True)
                except ValidationError as e:
                    location = ".".join(str(p) for p in e.path)
                    problems.add(f"{where}: Kubernetes {version}: {location}: {e.message}")
                except SchemaNotFoundError as e:
                    problems.add(f"{where}: {e.message}")
                except VersionNotSupportedError as e:
                    problems.add(f"kubernetes-validate has no schemas for Kubernetes {e.version}")
            by_dir.setdefault(path.parent, []).append((where, resource))
            if pod_spec(resource) is not None:
                try:
                    check_workload(problems, where, resource, flags, subcommands, variables)
                except (KeyError, TypeError, AttributeError) as e:
                    problems.add(f"{where}: malformed workload ({e!r})")
    # Services and budgets select the workloads of their own directory.
    for directory_path, resources in by_dir.items():
        workloads = [r for _, r in resources if "_labels" in r]
        for where, resource in resources:
            kind = resource["kind"]
            if kind == "Service":
                selector = resource.get("spec", {}).get("selector", {})
                targets = [w for w in workloads if selector_matches(selector, w["_labels"])]
                if problems.check(bool(targets), f"{where}: selects no workload in {directory_path}"):
                    for port in resource["spec"].get("ports", []):
                        target = port.get("targetPort", port["port"])
                        for workload in targets:
                            known = target in workload["_ports"] or target in workload["_ports"].values()
                            problems.check(known, f"{where}: targetPort {target} is not a port of the workload")
            if kind == "PodDisruptionBudget":
                selector = resource.get("spec", {}).get("selector", {}).get("matchLabels", {})
                problems.check(
                    any(selector_matches(selector, w["_labels"]) for w in workloads),
                    f"{where}: selects no workload in {directory_path}",
                )
            if kind == "StatefulSet":
                problems.check(resource["spec"].get("replicas") == 1, f"{where}: SQLite allows exactly one replica")
                names = {
                    r["metadata"]["name"]
                    for _, r in resources
                    if r["kind"] == "Service" and r["spec"].get("clusterIP") == "None"
                }
                problems.check(
                    resource["spec"].get("serviceName") in names,
                    f"{where}: serviceName names no headless Service in {directory_path}",
                )
    for directory_path, where, audiences in kubelet_configs:
        check_audience_rbac(problems, where, audiences, by_dir.get(directory_path, []))
    version = importlib.metadata.version("kubernetes-validate")
    return problems.finish(
        f"manifests={count} files={len(files)} validator=kubernetes-validate {version} "
        f"kubernetes={','.join(versions)} strict=yes"
    )


# --- the Containerfile ---------------------------------------------------------


def containerfile_instructions(text: str) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments) with continuations joined."""
    out: list[tuple[int, str, str]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = pending + stripped
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((start, word.upper(), rest.strip()))
    return out


def exec_form(problems: Problems, where: str, arguments: str) -> list[str]:
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        problems.add(f"{where}: not in exec (JSON array) form: {arguments}")
        return []
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value) and value):
        problems.add(f"{where}: not a JSON array of strings")
        return []
    return value


def cmd_containerfile(path: str, ignorefile: str) -> int:
    problems = Problems("containerfile")
    flags, subcommands = known_flags(), known_subcommands()
    packages, rust_version = workspace_bins()
    instructions = containerfile_instructions(Path(path).read_text(encoding="utf-8"))
    stages: list[dict] = []
    for number, word, arguments in instructions:
        where = f"{path}:{number} {word}"
        if word == "FROM":
            parts = arguments.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            problems.check(name is None or all(s["name"] != name for s in stages), f"{where}: stage {name} twice")
            stages.append({"image": parts[0], "name": name, "lines": [], "copied": {}, "text": ""})
            continue
        if not problems.check(bool(stages), f"{where}: before any FROM"):
            continue
        stage = stages[-1]
        stage["lines"].append((number, word, arguments))
        stage["text"] += f"\n{word} {arguments}"
        if word == "COPY" or word == "ADD":
            tokens = shlex.split(arguments)
            options = [t for t in tokens if t.startswith("--")]
            paths = [t for t in tokens if not t.startswith("--")]
            source = next((o.split("=", 1)[1] for o in options if o.startswith("--from=")), None)
            if source is not None:
                index = len(stages) - 1
                earlier = stages[:index]
                ok = (source.isdigit() and int(source) < index) or any(s["name"] == source for s in earlier)
                if problems.check(ok, f"{where}: --from={source} is not an earlier stage"):
                    origin = (
                        earlier[int(source)] if source.isdigit() else next(s for s in earlier if s["name"] == source)
                    )
                    for src in paths[:-1]:
                        parent, _, base = src.rstrip("/").rpartition("/")
                        made = src in origin["text"] or (parent in origin["text"] and base in origin["text"])
                        problems.check(made, f"{where}: {src} is not made in stage {source}")
            if len(paths) >= 2:
                dest = paths[-1]
                for src in paths[:-1]:
                    base = src.rstrip("/").rsplit("/", 1)[-1]
                    target = dest.rstrip("/") + "/" + base if dest.endswith("/") or len(paths) > 2 else dest
                    stage["copied"][target] = src
    if not problems.check(len(stages) >= 2, "expected a build stage and a runtime stage"):
        return problems.finish("")
    build, final = stages[0], stages[-1]
    # The build stage: the pinned Rust toolchain and the workspace's binaries.
    rust = re.match(r"^(?:docker\.io/)?(?:library/)?rust:(\d+\.\d+)(?:\.\d+)?(?:-[a-z0-9.-]+)?$", build["image"])
    if problems.check(rust is not None, f"build stage image {build['image']} is not a rust:X.Y image"):
        problems.check(
            version_tuple(rust.group(1)) >= version_tuple(rust_version),
            f"rust {rust.group(1)} is older than the workspace's rust-version {rust_version}",
        )
    cargo = [a for _, w, a in build["lines"] if w == "RUN" and "cargo build" in a]
    wanted_bins: set[str] = set()
    if problems.check(len(cargo) == 1, "expected one RUN with cargo build in the build stage"):
        run = cargo[0]
        for option in ("--locked", "--bins"):
            problems.check(option in run.split(), f"cargo build lacks {option}")
        # The image's profile (Cargo.toml's [profile.image]: release with LTO,
        # as scripts/build-image.sh builds by default); its binaries are in
        # target/image.
        named = re.search(r"(?:^|\s)--profile[\s=](\S+)", run)
        profile = named.group(1) if named else ("release" if "--release" in run.split() else "dev")
        problems.check(profile == "image", f"cargo build with the {profile} profile, expected --profile image")
        profiles = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8")).get("profile", {})
        problems.check(
            profiles.get("image", {}).get("inherits") == "release",
            "Cargo.toml has no [profile.image] inheriting release",
        )
        directory = {"dev": "debug"}.get(profile, profile)
        for package in re.findall(r"(?:^|\s)-p\s+(\S+)", run):
            if problems.check(package in packages, f"cargo build -p {package}: no such workspace package"):
                wanted_bins.update(packages[package])
        built = set(re.findall(rf"target/{re.escape(directory)}/([A-Za-z0-9_-]+)", run))
        problems.check(
            built == wanted_bins,
            f"binaries taken from target/{directory} {sorted(built)} are not the packages' binaries {sorted(wanted_bins)}",
        )
    # The runtime stage: minimal (from scratch, with the files
    # scripts/image-rootfs.sh lays out, as scripts/build-image.sh does), non-root.
    problems.check(final["image"] == "scratch", f"runtime image {final['image']} is not scratch")
    problems.check(
        any(w == "RUN" and "scripts/image-rootfs.sh" in a for _, w, a in build["lines"]),
        "the build stage does not lay the files out with scripts/image-rootfs.sh",
    )
    problems.check(
        any(w == "COPY" and shlex.split(a)[-1] == "/" for _, w, a in final["lines"]),
        "the runtime stage copies no root file system (scripts/image-rootfs.sh --rootfs) to /",
    )
    in_bin = {
        dest.rsplit("/", 1)[-1]: src for dest, src in final["copied"].items() if dest.startswith(BINARY_DIR + "/")
    }
    problems.check(set(in_bin) == wanted_bins, f"{BINARY_DIR} gets {sorted(in_bin)}, expected {sorted(wanted_bins)}")
    for name, src in in_bin.items():
        problems.check(src.rsplit("/", 1)[-1] == name, f"{BINARY_DIR}/{name} is copied from {src}")
    words = [w for _, w, _ in final["lines"]]
    users = [a for _, w, a in final["lines"] if w == "USER"]
    if problems.check(bool(users), "the runtime stage sets no USER"):
        user = users[-1]
        uid, _, gid = user.partition(":")
        problems.check(uid.isdigit() and int(uid) != 0, f"USER {user} is not a numeric non-root uid")
        problems.check(not gid or (gid.isdigit() and int(gid) != 0), f"USER {user}: group is not a non-root gid")
        if "ENTRYPOINT" in words:
            problems.check(words.index("USER") < words.index("ENTRYPOINT"), "USER comes after ENTRYPOINT")
    for word, expected in (("WORKDIR", "/var/lib/pullpass"), ("VOLUME", "/var/lib/pullpass")):
        values = [a for _, w, a in final["lines"] if w == word]
        problems.check(values[-1:] == [expected], f"{word} is {values[-1:]}, expected {expected}")
    exposed = {p.split("/")[0] for _, w, a in final["lines"] if w == "EXPOSE" for p in a.split()}
    problems.check({"50051", "50052", "9464"} <= exposed, f"EXPOSE {sorted(exposed)} lacks 50051, 50052 or 9464")
    entry: list[str] = []
    for number, word, arguments in final["lines"]:
        where = f"{path}:{number} {word}"
        if word == "ENTRYPOINT":
            entry = exec_form(problems, where, arguments)
            if entry:
                problems.check(
                    entry[0].rsplit("/", 1)[-1] in in_bin and entry[0].startswith(BINARY_DIR),
                    f"{where}: {entry[0]} is not a binary copied into the image",
                )
        if word == "CMD":
            check_command(problems, where, entry[:1] + exec_form(problems, where, arguments), flags, subcommands)
        if word == "HEALTHCHECK":
            command = re.search(r"\bCMD\s+(.*)$", arguments)
            if problems.check(command is not None, f"{where}: no CMD"):
                argv = exec_form(problems, where, command.group(1))
                if argv:
                    problems.check(argv[0].rsplit("/", 1)[-1] in in_bin, f"{where}: {argv[0]} is not in the image")
                    check_command(problems, where, argv, flags, subcommands)
    problems.check(entry[:1] == [f"{BINARY_DIR}/pullpassd"], f"ENTRYPOINT is {entry}, expected pullpassd")
    problems.check("HEALTHCHECK" in words, "no HEALTHCHECK")
    # The build context (the repository root) keeps what cargo needs.
    patterns = [
        line.strip()
        for line in Path(ignorefile).read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]

    def ignored(name: str) -> bool:
        # A pattern matching a directory excludes what is in it too.
        parts = name.split("/")
        paths = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            body = pattern.lstrip("!").strip("/")
            if any(fnmatch.fnmatch(p, body) or fnmatch.fnmatch(p, body.removeprefix("**/")) for p in paths):
                result = not negate
        return result

    needed = ["Cargo.toml", "Cargo.lock", "build.rs", "proto", "src", "scripts/image-rootfs.sh"]
    needed += [m for m in tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))["workspace"]["members"]]
    for name in needed:
        problems.check(not ignored(name), f"{ignorefile} excludes {name}, which the build needs")
    for name in ("target", ".git", ".tools"):
        problems.check(ignored(name), f"{ignorefile} does not exclude {name}")
    return problems.finish(
        f"stages={len(stages)} binaries={len(in_bin)} user={users[-1] if users else '?'} runtime={final['image']}"
    )


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "unit":
        return cmd_unit(argv[1])
    if len(argv) >= 2 and argv[0] == "env":
        return cmd_env(argv[1])
    if len(argv) >= 3 and argv[0] == "manifests":
        return cmd_manifests(argv[1], argv[2:])
    if len(argv) == 3 and argv[0] == "containerfile":
        return cmd_containerfile(argv[1], argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
