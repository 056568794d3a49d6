#!/usr/bin/env bash
# Installs qvl_agent with every extra (CPU torch pinned first), the contrib plugins and Chromium, then runs
# the default test suite. README's test command; .ci/run calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install -q "torch==2.13.0"
python3 -m pip install -q -e ".[all]"
for pkg in plugins_contrib/*/; do
  [ -f "$pkg/pyproject.toml" ] && python3 -m pip install -q -e "$pkg"
done
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "warning: could not install chromium" >&2
fi

# The reference vectors beside the repo must be exercised whenever they exist.
data="${QVL_TESTDATA:-$(pwd)/../shared/testdata/qwen_vl}"
if [ -f "$data/README.md" ]; then export QVL_REQUIRE_TESTDATA=1; fi

python3 -m ruff check qvl_agent tests plugins_contrib examples benchmarks recipes
python3 -m pytest -q -p no:cacheprovider tests plugins_contrib "$@"
