"""Checks deploy/ against the Kubernetes schemas and against the binary.

Run through scripts/check-deploy (it provides the venv with
kubernetes-validate and PyYAML). Exits non-zero with one line per problem.
"""

import glob
import os
import re
import shutil
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import settings  # noqa: E402

REPO = settings.REPO
K8S = os.path.join(REPO, "deploy", "k8s")
DOCKERFILE = os.path.join(REPO, "deploy", "Dockerfile")
# Oldest and newest Kubernetes versions the manifests must be valid for.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
# Standard OpenTelemetry SDK variables the binary (through the SDK) reads.
OTEL_ENV = {
    "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SDK_DISABLED",
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_BSP_SCHEDULE_DELAY", "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
}

problems: list[str] = []


def problem(where: str, what: str) -> None:
    problems.append(f"{os.path.relpath(where, REPO)}: {what}")


def load(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def manifests() -> dict[str, list[dict]]:
    files = sorted(glob.glob(os.path.join(K8S, "*.yaml")))
    return {f: load(f) for f in files if os.path.basename(f) != "kustomization.yaml"}


def validate_schemas(files: list[str]) -> None:
    for version in KUBERNETES_VERSIONS:
        run = subprocess.run(["kubernetes-validate", "--strict", "--quiet", "-k", version, *files],
                             capture_output=True, text=True)
        for line in (run.stdout + run.stderr).splitlines():
            if line.strip():
                problems.append(f"schema {version}: {line.strip()}")
        if run.returncode != 0 and not (run.stdout + run.stderr).strip():
            problems.append(f"schema {version}: kubernetes-validate failed ({run.returncode})")


def check_kustomization(docs: dict[str, list[dict]]) -> None:
    path = os.path.join(K8S, "kustomization.yaml")
    kustomization = load(path)[0]
    listed = set(kustomization.get("resources", []))
    for name in listed:
        if not os.path.exists(os.path.join(K8S, name)):
            problem(path, f"lists {name}, which does not exist")
    for f in docs:
        name = os.path.basename(f)
        if name not in listed and name != "secret.example.yaml":
            problem(path, f"does not list {name}")
    kubectl = shutil.which("kubectl")
    if kubectl:
        run = subprocess.run([kubectl, "kustomize", K8S], capture_output=True, text=True)
        if run.returncode != 0:
            problem(path, f"kubectl kustomize failed: {run.stderr.strip()}")
        else:
            rendered = os.path.join(REPO, ".data", "deploy-rendered.yaml")
            with open(rendered, "w", encoding="utf-8") as f:
                f.write(run.stdout)
            validate_schemas([rendered])
    else:
        print("kubectl not found: skipping the rendered-kustomization check (each file is still validated)")


def by_kind(docs: dict[str, list[dict]], kind: str) -> list[tuple[str, dict]]:
    return [(f, d) for f, ds in docs.items() for d in ds if d.get("kind") == kind]


def pod_spec(doc: dict) -> dict:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def seconds(duration: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)", duration):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def flush_timeout_seconds() -> float:
    with open(os.path.join(REPO, "src", "telemetry", "mod.rs"), encoding="utf-8") as f:
        m = re.search(r"pub const FLUSH_TIMEOUT: Duration = Duration::from_secs\((\d+)\);", f.read())
    if not m:
        problems.append("src/telemetry/mod.rs: FLUSH_TIMEOUT not found (check_deploy.py reads it)")
        return 0
    return float(m.group(1))


def health_names() -> set[str]:
    with open(os.path.join(REPO, "src", "app.rs"), encoding="utf-8") as f:
        source = f.read()
    return {""} | set(re.findall(r'pub const (?:SERVICE_NAME|LIVENESS_NAME): &str = "([^"]*)";', source))


def check_security(path: str, doc: dict) -> None:
    spec = pod_spec(doc)
    pod = spec.get("securityContext", {})
    name = f"{doc['kind']}/{doc['metadata']['name']}"
    if not pod.get("runAsNonRoot"):
        problem(path, f"{name}: pod securityContext.runAsNonRoot must be true")
    if spec.get("automountServiceAccountToken") is not False:
        problem(path, f"{name}: automountServiceAccountToken must be false")
    for c in spec["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            problem(path, f"{name}/{c['name']}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problem(path, f"{name}/{c['name']}: allowPrivilegeEscalation must be false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problem(path, f"{name}/{c['name']}: capabilities must drop ALL")
        if "memory" not in c.get("resources", {}).get("limits", {}):
            problem(path, f"{name}/{c['name']}: needs a memory limit")


def check_env_names(path: str, container: dict, accepted: set[str], what: str) -> None:
    defined = {e["name"] for e in container.get("env", [])}
    referenced = set()
    for e in container.get("env", []):
        referenced |= set(re.findall(r"\$\(([A-Z_][A-Z0-9_]*)\)", str(e.get("value", ""))))
    for name in defined:
        if name not in accepted and name not in OTEL_ENV and name not in referenced:
            problem(path, f"{what}: env {name} is not a setting of the binary")


def check_binary_contract(docs: dict[str, list[dict]]) -> None:
    serve = settings.parse(settings.help_text("serve"))
    serve_env = settings.accepted_env(serve)
    migrate_env = settings.accepted_env(settings.parse(settings.help_text("migrate")))

    config = {}
    for path, cm in by_kind(docs, "ConfigMap"):
        config.update(cm.get("data", {}))
        for key in cm.get("data", {}):
            if key not in serve_env and key not in OTEL_ENV:
                problem(path, f"ConfigMap key {key} is not a setting of `invitations serve`")
    # Keys a CronJob (the admin CLI) reads through a secretKeyRef are checked
    # against that CLI in check_cli_args, not against `serve`.
    cli_secret_keys = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                       for _, cron in by_kind(docs, "CronJob") for c in pod_spec(cron)["containers"]
                       for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    for path, secret in by_kind(docs, "Secret"):
        for key in {**secret.get("stringData", {}), **secret.get("data", {})}:
            if key not in serve_env and (secret["metadata"]["name"], key) not in cli_secret_keys:
                problem(path, f"Secret key {key} is not a setting of `invitations serve`")
    required = ("INVITATIONS_SHUTDOWN_DELAY", "INVITATIONS_DRAIN_TIMEOUT", "INVITATIONS_LISTEN",
                "INVITATIONS_ADMIN_LISTEN")
    missing = [name for name in required if name not in config]
    for name in missing:
        problems.append(f"deploy/k8s: the ConfigMap must set {name} (the checks below rely on it)")
    if missing:
        return
    grpc_port, admin_port = port_of(config["INVITATIONS_LISTEN"]), port_of(config["INVITATIONS_ADMIN_LISTEN"])
    # Liveness and startup may ask the health-only listener (outside the
    # connection limit); readiness must ask the API port it vouches for.
    health_port = port_of(config["INVITATIONS_HEALTH_LISTEN"]) if "INVITATIONS_HEALTH_LISTEN" in config else None
    probe_ports = {"readinessProbe": {grpc_port}, "startupProbe": {grpc_port, health_port},
                   "livenessProbe": {grpc_port, health_port}}
    grace_needed = (seconds(config["INVITATIONS_SHUTDOWN_DELAY"]) + seconds(config["INVITATIONS_DRAIN_TIMEOUT"])
                    + 2 * flush_timeout_seconds())  # spans, then metrics, after the drain
    names = health_names()
    container_ports: set[str] = set()

    for path, deploy in by_kind(docs, "Deployment"):
        spec = pod_spec(deploy)
        check_security(path, deploy)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if not grace > grace_needed:
            problem(path, f"terminationGracePeriodSeconds {grace} must exceed shutdown delay + drain + telemetry flush ({grace_needed:g}s)")
        if deploy["spec"].get("replicas", 1) < 2:
            problem(path, "run at least two replicas")
        annotations = deploy["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/port") not in (None, str(admin_port)):
            problem(path, f"prometheus.io/port must be the admin port {admin_port}")
        for c in spec["containers"]:
            if c.get("args", [None])[0] != "serve":
                problem(path, f"container {c['name']} must run `serve`")
            check_env_names(path, c, serve_env, f"container {c['name']}")
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            if ports.get("grpc") != grpc_port:
                problem(path, f"containerPort grpc must be {grpc_port} (INVITATIONS_LISTEN)")
            if ports.get("admin") != admin_port:
                problem(path, f"containerPort admin must be {admin_port} (INVITATIONS_ADMIN_LISTEN)")
            if health_port is not None and ports.get("health") != health_port:
                problem(path, f"containerPort health must be {health_port} (INVITATIONS_HEALTH_LISTEN)")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                grpc = c.get(probe, {}).get("grpc")
                if grpc is None:
                    problem(path, f"{probe} must be a native gRPC probe")
                    continue
                if grpc.get("port") not in probe_ports[probe]:
                    problem(path, f"{probe} probes port {grpc.get('port')}, the service answers it on "
                                  f"{sorted(p for p in probe_ports[probe] if p)}")
                if grpc.get("service", "") not in names:
                    problem(path, f"{probe} asks for health service {grpc.get('service')!r}; "
                                  f"the binary reports {sorted(names)}")
            container_ports |= set(ports)
    for path, svc in by_kind(docs, "Service"):
        for p in svc["spec"]["ports"]:
            if p.get("targetPort") not in container_ports:
                problem(path, f"Service port {p['name']} targets {p.get('targetPort')!r}, not a container port name")
            if p["name"] == "grpc" and p.get("appProtocol") != "grpc":
                problem(path, "the grpc port needs appProtocol: grpc")

    for path, job in by_kind(docs, "Job"):
        check_security(path, job)
        for c in pod_spec(job)["containers"]:
            if c.get("args") != ["migrate"]:
                problem(path, f"container {c['name']} must run `migrate`")
            check_env_names(path, c, migrate_env, f"container {c['name']}")

    for path, cron in by_kind(docs, "CronJob"):
        check_security(path, cron)
        for c in pod_spec(cron)["containers"]:
            check_cli_args(path, cron, c)


def check_cli_args(path: str, cron: dict, container: dict) -> None:
    """The CronJob's CLI flags exist in the binary; while the CLI is missing
    (pending issue 3) the CronJob must stay suspended."""
    args = container.get("args", [])
    words = [a for a in args if not a.startswith("-")][:2]
    run = subprocess.run([settings.binary(), *words, "--help"], capture_output=True, text=True)
    if run.returncode != 0:
        if cron["spec"].get("suspend") is not True:
            problem(path, f"`invitations {' '.join(words)}` does not exist yet: keep the CronJob suspended")
        else:
            print(f"pending: `invitations {' '.join(words)}` is not in this binary yet; the CronJob stays suspended")
        return
    cli = settings.parse(run.stdout)
    accepted = {s.flag for s in cli}
    for flag in (a.split("=", 1)[0] for a in args if a.startswith("--")):
        if flag not in accepted:
            problem(path, f"`invitations {' '.join(words)}` has no flag {flag}")
    # The admin CLI reads its bearer token from the environment only.
    cli_env = settings.accepted_env(cli) | ({"INVITATIONS_TOKEN"} if words[:1] == ["admin"] else set())
    check_env_names(path, container, cli_env, f"container {container['name']}")


def check_dockerfile() -> None:
    with open(DOCKERFILE, encoding="utf-8") as f:
        text = f.read()
    with open(os.path.join(REPO, "Cargo.toml"), encoding="utf-8") as f:
        msrv = re.search(r'^rust-version = "([^"]+)"', f.read(), re.M).group(1)
    arg = re.search(r"^ARG RUST_VERSION=(\S+)", text, re.M)
    if not arg or arg.group(1) != msrv:
        problem(DOCKERFILE, f"ARG RUST_VERSION must match Cargo.toml rust-version {msrv}")
    if "cargo build --locked --release" not in text:
        problem(DOCKERFILE, "must build with `cargo build --locked --release`")
    stages = re.split(r"^FROM ", text, flags=re.M)
    if len(stages) < 3:
        problem(DOCKERFILE, "must be multi-stage (build, runtime)")
        return
    final = stages[-1]
    if re.search(r"^RUN ", final, re.M):
        problem(DOCKERFILE, "the runtime stage must not RUN anything (no package manager or build tools)")
    user = re.findall(r"^USER (\S+)", final, re.M)
    if not user or user[-1].split(":")[0] in ("root", "0"):
        problem(DOCKERFILE, "the runtime stage must switch to a non-root USER")
    serve_env = settings.accepted_env(settings.parse(settings.help_text("serve")))
    for name in re.findall(r"\b([A-Z][A-Z0-9_]+)=", " ".join(re.findall(r"^ENV (.*(?:\\\n.*)*)", final, re.M))):
        if name not in serve_env:
            problem(DOCKERFILE, f"ENV {name} is not a setting of the binary")


def main() -> int:
    docs = manifests()
    validate_schemas(list(docs))
    check_kustomization(docs)
    check_binary_contract(docs)
    check_dockerfile()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"deploy/: {len(docs)} manifests valid for Kubernetes {', '.join(KUBERNETES_VERSIONS)}, "
          "consistent with the binary and the Dockerfile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
