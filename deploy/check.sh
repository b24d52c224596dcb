#!/usr/bin/env bash
# Static checks of everything under deploy/ (make deploy-check; tests/it/deploy.rs
# runs it with a live scrape):
#
#   deploy/check.sh [--metrics SCRAPE_FILE]
#   deploy/check.sh --check-tools      only: are the tools there? (exit 0 or 77)
#
# SCRAPE_FILE is the text of aica's /metrics; with it, every metric the alert
# rules and the dashboard name must appear in it (or come from a source listed
# in prometheus/external-metrics.txt). Without it, that comparison is skipped.
#
# Exit 0: all passed. 1: a check failed. 2: usage. 77: a needed tool is missing
# (the message says how to install it; .ci/run installs them all).
#
# Tools: promtool (Debian prometheus), amtool (prometheus-alertmanager),
# prometheus-blackbox-exporter, and a virtualenv with deploy/requirements.txt
# (kubernetes-validate, checkov) at deploy/.venv or $DEPLOY_VENV. kubectl is
# optional: when present, the manifests rendered by deploy/tools/deploycheck.py
# must equal `kubectl kustomize`'s rendering.
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

metrics=""
tools_only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --metrics) metrics="${2:?--metrics needs a file}"; shift 2 ;;
    --check-tools) tools_only=1; shift ;;
    -h|--help) sed -n '2,19p' "$here/check.sh"; exit 0 ;;
    *) echo "usage: deploy/check.sh [--metrics SCRAPE_FILE] | --check-tools" >&2; exit 2 ;;
  esac
done
if [ -n "$metrics" ]; then
  case "$metrics" in /*) ;; *) metrics="$OLDPWD/$metrics" ;; esac
  [ -f "$metrics" ] || { echo "deploy/check.sh: no such file: $metrics" >&2; exit 2; }
fi

venv="${DEPLOY_VENV:-$here/.venv}"
py="$venv/bin/python"
# Kubernetes version of the schemas (bundled in kubernetes-validate, so offline).
k8s_version="${K8S_VERSION:-1.32.0}"

missing=()
command -v promtool >/dev/null 2>&1 || missing+=("promtool (apt-get install prometheus)")
command -v amtool >/dev/null 2>&1 || missing+=("amtool (apt-get install prometheus-alertmanager)")
command -v prometheus-blackbox-exporter >/dev/null 2>&1 || missing+=("prometheus-blackbox-exporter (apt-get install prometheus-blackbox-exporter)")
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/checkov" ]; then
  missing+=("kubernetes-validate and checkov (python3 -m venv deploy/.venv && deploy/.venv/bin/pip install -r deploy/requirements.txt)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "deploy/check.sh: cannot run, missing:"
  printf '  - %s\n' "${missing[@]}"
  echo "(.ci/run installs all of them)"
  exit 77
fi
[ -z "$tools_only" ] || { echo "deploy/check.sh: all tools present"; exit 0; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

passed=()
failed=()
# step NAME COMMAND...: run it, show its output, remember the outcome.
step() {
  local name="$1"; shift
  echo "== $name"
  if "$@" >"$tmp/out" 2>&1; then
    sed 's/^/   /' "$tmp/out"
    passed+=("$name")
  else
    sed 's/^/   /' "$tmp/out"
    echo "   -> FAILED: $name"
    failed+=("$name")
  fi
}

checkov() {
  # --skip-download: no calls to the vendor's API (offline, no token).
  "$venv/bin/checkov" --quiet --compact --skip-download "$@"
}

# -- Prometheus, Alertmanager, blackbox exporter
step "promtool check config" promtool check config prometheus/prometheus.yml
step "promtool check rules" promtool check rules prometheus/rules/*.yml
step "promtool test rules (each alert fires on its condition)" promtool test rules prometheus/tests/*.yml
step "dashboard queries parse (as recording rules)" \
  bash -c '"$1" tools/deploycheck.py dashboard-rules "$2/dashboard-rules.yml" && promtool check rules "$2/dashboard-rules.yml"' _ "$py" "$tmp"
step "amtool check-config" amtool check-config alertmanager/alertmanager.yml
step "blackbox exporter config" prometheus-blackbox-exporter --config.check --config.file=blackbox/blackbox.yml

# -- metric names against a live scrape
if [ -n "$metrics" ]; then
  step "metrics named in rules and dashboard are exported" "$py" tools/deploycheck.py metrics --scrape "$metrics"
else
  step "metrics named in rules and dashboard (no scrape given: names not compared)" "$py" tools/deploycheck.py metrics
fi

# -- the image and the files that refer to each other
step "Dockerfile builds like make build" "$py" tools/deploycheck.py dockerfile
step "compose, nginx, Prometheus, Grafana, Kubernetes agree" "$py" tools/deploycheck.py consistency

# -- Kubernetes: render base and overlay, validate against the schemas
kubectl_flag=()
if command -v kubectl >/dev/null 2>&1; then kubectl_flag=(--kubectl); fi
mkdir -p "$tmp/k8s"
step "render k8s/base${kubectl_flag:+ (and compare with kubectl kustomize)}" \
  "$py" tools/deploycheck.py render k8s/base "$tmp/k8s/base.yaml" "${kubectl_flag[@]}"
step "render k8s/overlays/production${kubectl_flag:+ (and compare with kubectl kustomize)}" \
  "$py" tools/deploycheck.py render k8s/overlays/production "$tmp/k8s/production.yaml" "${kubectl_flag[@]}"
cp k8s/secret.example.yaml "$tmp/k8s/secret.example.yaml"
step "kubernetes-validate --strict (Kubernetes $k8s_version schemas)" \
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$k8s_version" "$tmp/k8s/base.yaml" "$tmp/k8s/production.yaml" "$tmp/k8s/secret.example.yaml"

# -- policy scanner (suppressions are in place, each with its reason)
step "checkov: Dockerfile" checkov --framework dockerfile -f Dockerfile
step "checkov: rendered Kubernetes manifests" checkov --framework kubernetes -d "$tmp/k8s"
step "checkov: secrets in deploy/" checkov --framework secrets -d . --skip-path '\.venv' --skip-path '/\.env$'

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "deploy/check.sh: ${#failed[@]} of $(( ${#passed[@]} + ${#failed[@]} )) checks FAILED:"
  printf '  - %s\n' "${failed[@]}"
  exit 1
fi
echo "deploy/check.sh: all ${#passed[@]} checks ok"
