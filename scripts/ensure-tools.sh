#!/usr/bin/env bash
# Installs what building and testing sessiond needs, when it is missing:
# the wasm32-wasip2 Rust target, componentize-py, redis-server, and Chromium
# with its driver and selenium for the console test.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "ensure-tools: adding the wasm32-wasip2 target" >&2
  rustup target add wasm32-wasip2 >&2
fi

if ! command -v componentize-py >/dev/null 2>&1 \
  || [ "$(componentize-py --version 2>/dev/null | awk '{print $2}')" != "$COMPONENTIZE_PY_VERSION" ]; then
  echo "ensure-tools: installing componentize-py $COMPONENTIZE_PY_VERSION" >&2
  python3 -m pip install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION" >&2 \
    || python3 -m pip install --quiet --user --break-system-packages "componentize-py==$COMPONENTIZE_PY_VERSION" >&2
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "ensure-tools: installing redis-server" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2 && apt-get install -y -qq redis-server >&2
  else
    sudo apt-get update -qq >&2 && sudo apt-get install -y -qq redis-server >&2
  fi
fi

# The console test (tests/tests/console.rs) drives Debian's Chromium through
# its ChromeDriver with selenium.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "ensure-tools: installing chromium and chromium-driver" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2 && apt-get install -y -qq chromium chromium-driver >&2
  else
    sudo apt-get update -qq >&2 && sudo apt-get install -y -qq chromium chromium-driver >&2
  fi
fi

if ! python3 -c "import selenium" >/dev/null 2>&1; then
  echo "ensure-tools: installing selenium" >&2
  python3 -m pip install --quiet --disable-pip-version-check "selenium>=4.20,<5" >&2 \
    || python3 -m pip install --quiet --user --break-system-packages "selenium>=4.20,<5" >&2
fi
