#!/usr/bin/env bash
# Debian's Chromium for the browser checks of the built book (a test tool's own browser download
# does not work offline). Installs it when missing and apt-get is usable; otherwise says how.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
else
  echo "Chromium is missing: install Debian's 'chromium' package (or set MTL_REQUIRE_BOOK=0 to skip the browser checks)." >&2
  exit 1
fi
