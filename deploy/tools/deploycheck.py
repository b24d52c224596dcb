#!/usr/bin/env python3
"""Checks of the deployment files that no off-the-shelf tool makes; run by deploy/check.sh.

Subcommands (paths are relative to deploy/ unless absolute):

  render DIR OUT            render a kustomization (the subset of kustomize these
                            manifests use) to one YAML stream; with --kubectl,
                            also render with `kubectl kustomize` and require the
                            same objects
  dashboard-rules OUT       the dashboard's queries as a recording-rule file, so
                            `promtool check rules` parses every one of them
  metrics [--scrape FILE]   every metric the rules and the dashboard name (with
                            the labels they match on) is in a live scrape of
                            aica's /metrics, or comes from a source listed in
                            prometheus/external-metrics.txt; every job they name
                            is scraped by prometheus.yml
  dockerfile                deploy/Dockerfile builds the binary with the
                            Makefile's `make build` command and copies the binary
                            from the path that command writes
  consistency               compose, nginx, Prometheus, Grafana and Kubernetes
                            files agree with each other (ports, probes, versions)

Each prints one line per finding and exits 1 if there is any.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent
REPO = DEPLOY.parent

problems: list[str] = []


def fail(msg: str) -> None:
    problems.append(msg)
    print(f"  FAIL {msg}")


def done(what: str) -> int:
    if problems:
        print(f"{what}: {len(problems)} problem(s)")
        return 1
    print(f"{what}: ok")
    return 0


def load_yaml(path: Path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_yaml_all(path: Path) -> list:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# --------------------------------------------------------------------- kustomize

# Strategic-merge keys for the lists these manifests patch (as in Kubernetes'
# own patchMergeKey annotations). Lists without a key are replaced whole.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                  "CustomResourceDefinition", "PriorityClass", "IngressClass"}

SUPPORTED_FIELDS = {"apiVersion", "kind", "namespace", "labels", "resources", "images", "patches"}


def smp(base, patch, key: str | None = None):
    """Strategic merge of `patch` into `base` (maps merge, keyed lists merge by key)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = smp(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        mk = MERGE_KEYS[key]
        out = [copy.deepcopy(x) for x in base]
        for item in patch:
            idx = next((i for i, x in enumerate(out) if isinstance(x, dict) and x.get(mk) == item.get(mk)), None)
            if idx is None:
                out.append(copy.deepcopy(item))
            else:
                out[idx] = smp(out[idx], item, None)
        return out
    return copy.deepcopy(patch)


def pod_specs(obj: dict):
    spec = obj.get("spec", {})
    if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        yield spec.get("template", {}).get("spec", {})
    elif obj["kind"] == "CronJob":
        yield spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    elif obj["kind"] == "Pod":
        yield spec


def set_image(obj: dict, images: list[dict]) -> None:
    for ps in pod_specs(obj):
        for c in ps.get("containers", []) + ps.get("initContainers", []):
            name = re.split(r"[:@]", c["image"], maxsplit=1)[0]
            tag = c["image"][len(name):]
            for img in images:
                if img["name"] != name:
                    continue
                new_name = img.get("newName", name)
                if "digest" in img:
                    tag = "@" + img["digest"]
                elif "newTag" in img:
                    tag = ":" + str(img["newTag"])
                c["image"] = new_name + tag


def render(kdir: Path) -> list[dict]:
    k = load_yaml(kdir / "kustomization.yaml")
    unknown = set(k) - SUPPORTED_FIELDS
    if unknown:
        raise SystemExit(f"{kdir}/kustomization.yaml uses {sorted(unknown)}: teach deploy/tools/deploycheck.py "
                         "render about it, or use only " + ", ".join(sorted(SUPPORTED_FIELDS)))
    objs: list[dict] = []
    for r in k.get("resources", []):
        p = kdir / r
        objs += render(p) if p.is_dir() else load_yaml_all(p)
    for entry in k.get("patches", []):
        if set(entry) != {"path"}:
            raise SystemExit(f"{kdir}: only `patches: - path: FILE` (strategic merge by kind and name) is supported")
        for patch in load_yaml_all(kdir / entry["path"]):
            hits = [i for i, o in enumerate(objs)
                    if o["kind"] == patch["kind"] and o["metadata"]["name"] == patch["metadata"]["name"]]
            if len(hits) != 1:
                raise SystemExit(f"{kdir}/{entry['path']}: patch for {patch['kind']}/{patch['metadata']['name']} "
                                 f"matches {len(hits)} objects")
            objs[hits[0]] = smp(objs[hits[0]], patch)
    for obj in objs:
        md = obj.setdefault("metadata", {})
        if "namespace" in k and obj["kind"] not in CLUSTER_SCOPED:
            md["namespace"] = k["namespace"]
        for lab in k.get("labels", []):
            if lab.get("includeSelectors") or lab.get("includeTemplates"):
                raise SystemExit(f"{kdir}: labels with includeSelectors/includeTemplates are not supported")
            md.setdefault("labels", {}).update(lab["pairs"])
        set_image(obj, k.get("images", []))
    return objs


def key_of(o: dict) -> tuple:
    return (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])


def cmd_render(args: list[str]) -> int:
    kubectl = "--kubectl" in args
    args = [a for a in args if a != "--kubectl"]
    kdir, out = Path(args[0]), Path(args[1])
    if not kdir.is_absolute():
        kdir = DEPLOY / kdir
    objs = render(kdir)
    out.write_text(yaml.safe_dump_all(objs, sort_keys=True), encoding="utf-8")
    print(f"rendered {kdir.relative_to(DEPLOY)}: {len(objs)} objects")
    if kubectl:
        res = subprocess.run(["kubectl", "kustomize", str(kdir)], capture_output=True, text=True)
        if res.returncode != 0:
            fail(f"kubectl kustomize {kdir}: {res.stderr.strip()}")
        else:
            theirs = {key_of(o): o for o in yaml.safe_load_all(res.stdout) if o}
            ours = {key_of(o): o for o in objs}
            for k in sorted(set(theirs) | set(ours)):
                if k not in theirs:
                    fail(f"{'/'.join(k)}: rendered here, not by kubectl kustomize")
                elif k not in ours:
                    fail(f"{'/'.join(k)}: rendered by kubectl kustomize, not here")
                elif theirs[k] != ours[k]:
                    fail(f"{'/'.join(k)}: differs from kubectl kustomize's rendering")
            if not problems:
                print(f"  same {len(ours)} objects as kubectl kustomize")
    return done("render")


# ------------------------------------------------------------------------ PromQL

AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
            "group_right", "inf", "nan", "atan2", "start", "end"}
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}

TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<num>[0-9][0-9a-zA-Z._]*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@])
""", re.X)

GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def tokenize(expr: str) -> list[tuple[str, str]]:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    if "$" in expr:
        raise ValueError(f"unknown Grafana variable in {expr!r}")
    out, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read {expr[pos:pos + 20]!r} in {expr!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


def metric_refs(expr: str) -> list[tuple[str, set[str], dict[str, str]]]:
    """(metric name, label names matched, equality matchers) for each selector in a PromQL expression."""
    return parse_promql(expr)[0]


def parse_promql(expr: str) -> tuple[list[tuple[str, set[str], dict[str, str]]], set[str]]:
    """The selectors of a PromQL expression, and the labels of its by/without/on/... lists."""
    toks = tokenize(expr)
    refs = []
    grouping: set[str] = set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "ident" and text in LABEL_LISTS and nxt == "(":
            end = toks.index(("op", ")"), i)
            grouping.update(t for k, t in toks[i + 2:end] if k == "ident")
            i = end + 1
            continue
        if kind == "ident" and nxt == "(":
            i += 1  # a function call
            continue
        if kind == "ident" and (text in AGGREGATIONS or text in KEYWORDS):
            i += 1
            continue
        if kind == "ident" or (kind == "op" and text == "{"):
            name = text if kind == "ident" else ""
            labels: set[str] = set()
            eq: dict[str, str] = {}
            j = i + 1 if kind == "ident" else i
            if j < len(toks) and toks[j][1] == "{":
                j += 1
                while toks[j][1] != "}":
                    if toks[j][0] == "ident" and toks[j + 1][1] in {"=", "!=", "=~", "!~"}:
                        labels.add(toks[j][1])
                        if toks[j + 1][1] == "=":
                            eq[toks[j][1]] = toks[j + 2][1][1:-1]
                        if toks[j][1] == "__name__" and toks[j + 1][1] == "=":
                            name = toks[j + 2][1][1:-1]
                    j += 1
                j += 1
            if not name:
                raise ValueError(f"a selector without a fixed metric name in {expr!r}: name it, so it can be checked")
            refs.append((name, labels, eq))
            i = j
            continue
        i += 1
    return refs, grouping


def rule_exprs() -> list[tuple[str, str]]:
    out = []
    for f in sorted((DEPLOY / "prometheus/rules").glob("*.yml")):
        for g in load_yaml(f)["groups"]:
            for r in g["rules"]:
                out.append((f"{f.name}:{r.get('alert') or r.get('record')}", r["expr"]))
    return out


def dashboard_files() -> list[Path]:
    return sorted((DEPLOY / "grafana/dashboards").glob("*.json"))


def dashboard_exprs() -> list[tuple[str, str, str]]:
    """(where, rule name, expr) for every query of every dashboard."""
    out = []
    for f in dashboard_files():
        d = json.loads(f.read_text(encoding="utf-8"))
        for p in d["panels"]:
            for t in p.get("targets", []):
                out.append((f"{f.name} panel {p['id']} {p['title']!r} {t['refId']}",
                            f"dashboard:{f.stem}_panel{p['id']}_{t['refId']}", t["expr"]))
    return out


def cmd_dashboard_rules(args: list[str]) -> int:
    rules = []
    for _where, name, expr in dashboard_exprs():
        e = expr
        for var, value in GRAFANA_VARS.items():
            e = e.replace(var, value)
        rules.append({"record": re.sub(r"[^a-zA-Z0-9_:]", "_", name), "expr": e})
    Path(args[0]).write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}),
                             encoding="utf-8")
    print(f"dashboard-rules: {len(rules)} queries written for promtool")
    return 0


def parse_scrape(path: Path) -> dict[str, set[str]]:
    """Metric name -> label names seen, from the Prometheus text format."""
    names: dict[str, set[str]] = {}
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"')
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s", line)
        if not m:
            continue
        names.setdefault(m.group(1), set()).update(label.findall(m.group(2) or ""))
    return names


def external_patterns() -> list[tuple[str, str]]:
    out = []
    for line in (DEPLOY / "prometheus/external-metrics.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pattern, source = line.split(None, 1)
            out.append((pattern, source))
    return out


def scrape_jobs() -> set[str]:
    return {j["job_name"] for j in load_yaml(DEPLOY / "prometheus/prometheus.yml")["scrape_configs"]}


def cmd_metrics(args: list[str]) -> int:
    scrape = None
    if args[:1] == ["--scrape"]:
        scrape = parse_scrape(Path(args[1]))
        if not any(n.startswith("aica_") for n in scrape):
            fail(f"{args[1]} holds no aica_* metric: not a scrape of aica's /metrics")
    externals = external_patterns()
    jobs = scrape_jobs()
    used: dict[str, list[str]] = {}
    uses = [(w, e) for w, e in rule_exprs()] + [(w, e) for w, _n, e in dashboard_exprs()]
    for where, expr in uses:
        try:
            refs, grouping = parse_promql(expr)
        except ValueError as e:
            fail(f"{where}: {e}")
            continue
        if not refs:
            fail(f"{where}: names no metric")
        # by (route), on (instance)...: labels some metric of the expression has.
        if scrape is not None and all(n in scrape for n, _, _ in refs):
            have = set(TARGET_LABELS).union(*(scrape[n] for n, _, _ in refs))
            for lab in sorted(grouping - have):
                fail(f"{where}: groups by {lab!r}, a label none of its metrics has in the scrape")
        for name, labels, eq in refs:
            used.setdefault(name, []).append(where)
            job = eq.get("job")
            if job is None:
                fail(f"{where}: {name} without a job=\"...\" matcher (several jobs may export it)")
            elif job not in jobs:
                fail(f"{where}: job {job!r} is not scraped by prometheus/prometheus.yml (jobs: {sorted(jobs)})")
            source = next((s for p, s in externals if fnmatch.fnmatchcase(name, p)), None)
            if source is not None or scrape is None:
                continue
            if name not in scrape:
                fail(f"{where}: {name} is not in the scrape of aica's /metrics "
                     "(and not listed in prometheus/external-metrics.txt)")
                continue
            for lab in sorted(labels - scrape[name] - TARGET_LABELS):
                fail(f"{where}: {name} has no label {lab!r} in the scrape (it has {sorted(scrape[name])})")
    if scrape is not None:
        for pattern, source in externals:
            hidden = sorted(n for n in scrape if fnmatch.fnmatchcase(n, pattern))
            if hidden:
                fail(f"external-metrics.txt: {pattern} ({source}) also matches aica's own {hidden}: "
                     "make the pattern narrower")
    own = sorted(n for n in used if not any(fnmatch.fnmatchcase(n, p) for p, _ in externals))
    ext = sorted(set(used) - set(own))
    print(f"metrics: {len(uses)} queries name {len(own)} metrics aica exports and {len(ext)} from other sources "
          f"({', '.join(ext)})")
    if scrape is None:
        print("  (no scrape given: the names were not compared with a live /metrics)")
    else:
        present = [n for n in own if n in scrape]
        print(f"  {len(present)} of {len(own)} found in the scrape ({len(scrape)} metric names): {', '.join(present)}")
    return done("metrics")


# -------------------------------------------------------------------- Dockerfile

def dockerfile_instructions(path: Path) -> list[tuple[str, str, int]]:
    """(INSTRUCTION, arguments, line) with continuations joined and comments dropped."""
    out, buf, start = [], "", 0
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip(), start))
        buf = ""
    return out


def make_recipe(target: str) -> list[str]:
    lines = (REPO / "Makefile").read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"^{re.escape(target)}:", line):
            recipe = []
            for nxt in lines[i + 1:]:
                if not nxt.startswith("\t"):
                    break
                recipe.append(nxt.strip())
            return recipe
    raise SystemExit(f"Makefile has no `{target}:` target")


def cmd_dockerfile(_args: list[str]) -> int:
    recipe = make_recipe("build")
    if len(recipe) != 1:
        fail(f"Makefile `build:` has {len(recipe)} recipe lines; expected one cargo command")
        return done("dockerfile")
    make_cmd = shlex.split(recipe[0].replace("$(CARGO)", "cargo"))
    # Where that command leaves the binary: AICA := $(TARGET_DIR)/release/aica, with
    # TARGET_DIR cargo's target directory, `target` unless configured otherwise.
    mk = (REPO / "Makefile").read_text(encoding="utf-8")
    if not re.search(r"^AICA\s*:=\s*\$\(TARGET_DIR\)/release/aica\s*$", mk, re.M):
        fail("Makefile: AICA is no longer $(TARGET_DIR)/release/aica; update this check")
    cargo_cfg = REPO / ".cargo/config.toml"
    if cargo_cfg.exists() and "target-dir" in tomllib.loads(cargo_cfg.read_text()).get("build", {}):
        fail(".cargo/config.toml sets build.target-dir: the release binary is not under target/")
    ins = dockerfile_instructions(DEPLOY / "Dockerfile")
    stages: dict[str, dict] = {}
    current = None
    for word, rest, line in ins:
        if word == "FROM":
            parts = rest.split()
            name = parts[parts.index("AS") + 1] if "AS" in parts else parts[-1]
            current = stages.setdefault(name, {"workdir": "/", "runs": [], "env": [], "line": line})
        elif current is None:
            continue
        elif word == "WORKDIR":
            current["workdir"] = rest
        elif word == "RUN":
            words = shlex.split(rest)
            while words and words[0].startswith("--"):
                words.pop(0)  # --mount=..., --network=...
            current["runs"].append((words, line))
        elif word == "ENV":
            current["env"].append(rest)
    builds = [(name, words, line) for name, s in stages.items() for words, line in s["runs"]
              if words[:2] == ["cargo", "build"]]
    if len(builds) != 1:
        fail(f"Dockerfile: {len(builds)} `cargo build` commands; expected exactly one")
        return done("dockerfile")
    stage, words, line = builds[0]
    if words != make_cmd:
        fail(f"Dockerfile:{line}: `{shlex.join(words)}` is not `make build`'s `{shlex.join(make_cmd)}`")
    if any("CARGO_TARGET_DIR" in e or "CARGO_BUILD" in e for e in stages[stage]["env"]):
        fail(f"Dockerfile: stage {stage} sets CARGO_TARGET_DIR/CARGO_BUILD_*: not how `make build` builds")
    want_src = f"{stages[stage]['workdir'].rstrip('/')}/target/release/aica"
    copies = [(rest, line) for word, rest, line in ins if word == "COPY" and f"--from={stage}" in rest]
    if not any(rest.split()[-2] == want_src for rest, _ in copies):
        fail(f"Dockerfile: no `COPY --from={stage} {want_src} ...` (the binary `make build` writes)")
    entry = [json.loads(rest) for word, rest, _ in ins if word == "ENTRYPOINT"]
    cmd = [json.loads(rest) for word, rest, _ in ins if word == "CMD"]
    if not entry or not cmd or entry[-1] + cmd[-1] != ["aica", "serve"]:
        fail("Dockerfile: the entry point is not `aica serve` (ENTRYPOINT [\"aica\"], CMD [\"serve\"])")
    print(f"  build command `{shlex.join(words)}` = make build; binary {want_src}")
    return done("dockerfile")


# ------------------------------------------------------------------- consistency

def cmd_consistency(_args: list[str]) -> int:
    compose = load_yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    for s in ["backend", "nginx", "postgres", "redis", "prometheus", "alertmanager", "grafana", "blackbox"]:
        if s not in services:
            fail(f"compose.yaml: no service {s}")
    backend = services.get("backend", {})
    for k in ["container_name", "ports"]:
        if k in backend:
            fail(f"compose.yaml: backend has {k}: `--scale backend=3` would collide")
    if backend.get("build", {}).get("dockerfile") != "deploy/Dockerfile":
        fail("compose.yaml: backend is not built from deploy/Dockerfile")
    if not backend.get("read_only"):
        fail("compose.yaml: backend root file system is not read-only")
    for name, svc in services.items():
        for v in svc.get("volumes", []):
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith("./") and not (DEPLOY / src).exists():
                fail(f"compose.yaml: {name} mounts {src}, which does not exist")
    # pg_dump in the image must not be older than the server.
    pg_image = services.get("postgres", {}).get("image", "")
    m = re.match(r"postgres:(\d+)", pg_image)
    df = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    pg_major = re.search(r"^ARG PG_MAJOR=(\d+)", df, re.M)
    if not m or not pg_major or m.group(1) != pg_major.group(1):
        fail(f"compose.yaml postgres image {pg_image!r} and Dockerfile PG_MAJOR "
             f"{pg_major.group(1) if pg_major else None} differ: backups need the same major version")
    # Prometheus finds every replica on the port the backend listens on.
    aica_toml = tomllib.loads((DEPLOY / "aica.toml").read_text(encoding="utf-8"))
    port = aica_toml["server"]["port"]
    prom = load_yaml(DEPLOY / "prometheus/prometheus.yml")
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    sd = jobs.get("aica-backend", {}).get("dns_sd_configs", [])
    if not sd or sd[0].get("names") != ["backend"] or sd[0].get("port") != port:
        fail(f"prometheus.yml: job aica-backend must find every replica by DNS (names [backend], port {port})")
    nginx = (DEPLOY / "nginx/default.conf").read_text(encoding="utf-8")
    if f"http://backend:{port}" not in nginx:
        fail(f"nginx/default.conf does not proxy to http://backend:{port}")
    # Grafana: the dashboards use the provisioned datasource.
    ds = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    uids = {d["uid"] for d in ds}
    for f in dashboard_files():
        d = json.loads(f.read_text(encoding="utf-8"))
        ids = [p["id"] for p in d["panels"]]
        if len(ids) != len(set(ids)):
            fail(f"{f.name}: panel ids repeat")
        for p in d["panels"]:
            if p["type"] == "row":
                continue
            if p.get("datasource", {}).get("uid") not in uids or not p.get("targets"):
                fail(f"{f.name}: panel {p['title']!r} has no query on a provisioned datasource ({sorted(uids)})")
    prov = load_yaml(DEPLOY / "grafana/provisioning/dashboards/aica.yml")["providers"][0]["options"]["path"]
    if f"./grafana/dashboards:{prov}:ro" not in services.get("grafana", {}).get("volumes", []):
        fail(f"compose.yaml: grafana does not mount ./grafana/dashboards at {prov}")
    # Kubernetes: probes on the health routes, ports from aica.toml, shutdown fits.
    for overlay in ["base", "overlays/production"]:
        objs = render(DEPLOY / "k8s" / overlay)
        by = {(o["kind"], o["metadata"]["name"]): o for o in objs}
        dep = by.get(("Deployment", "aica-sys-backend"))
        cm = by.get(("ConfigMap", "aica-sys-config"))
        if not dep or not cm:
            fail(f"k8s/{overlay}: no Deployment aica-sys-backend or ConfigMap aica-sys-config")
            continue
        conf = tomllib.loads(cm["data"]["aica.toml"])
        ps = dep["spec"]["template"]["spec"]
        c = ps["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        if ports.get("http") != conf["server"]["port"] or ports.get("console") != conf["console"]["port"]:
            fail(f"k8s/{overlay}: container ports {ports} are not aica.toml's server.port/console.port")
        probes = {k: c.get(k, {}).get("httpGet", {}).get("path") for k in ["startupProbe", "livenessProbe", "readinessProbe"]}
        if probes != {"startupProbe": "/health/live", "livenessProbe": "/health/live", "readinessProbe": "/health/ready"}:
            fail(f"k8s/{overlay}: probes {probes}: want startup and liveness on /health/live, readiness on /health/ready")
        rp = c["readinessProbe"]
        drain = conf["server"].get("drain_secs", 0)
        if drain <= rp["periodSeconds"] * rp["failureThreshold"]:
            fail(f"k8s/{overlay}: server.drain_secs {drain} is not longer than readiness period x threshold")
        needed = drain + conf["server"].get("shutdown_grace_secs", 10)
        if ps.get("terminationGracePeriodSeconds", 30) <= needed:
            fail(f"k8s/{overlay}: terminationGracePeriodSeconds is not above drain + shutdown grace ({needed} s)")
        if conf.get("backup", {}).get("schedule", "x") != "" or ("CronJob", "aica-sys-backup") not in by:
            fail(f"k8s/{overlay}: backups must come from the CronJob alone (backup.schedule = \"\")")
    return done("consistency")


COMMANDS = {
    "render": cmd_render,
    "dashboard-rules": cmd_dashboard_rules,
    "metrics": cmd_metrics,
    "dockerfile": cmd_dockerfile,
    "consistency": cmd_consistency,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
