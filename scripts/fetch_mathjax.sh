#!/usr/bin/env bash
# Fetch MathJax 3 from the npm registry into book/_static/mathjax/ so that the
# built book renders math without any CDN.
#
#   scripts/fetch_mathjax.sh            # no-op if the pinned version is already there
#   scripts/fetch_mathjax.sh --force    # fetch again
#
# Needs `npm` (only `npm pack` is used: nothing is installed, no node_modules).
# The tarball is checked against the pinned sha512 integrity before use.
# book/_static/mathjax/ is generated: it is git-ignored, never committed.
set -euo pipefail

MATHJAX_VERSION="3.2.2"
MATHJAX_INTEGRITY="sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/book/_static/mathjax"
stamp="$dest/VERSION"

if [[ "${1:-}" != "--force" && -f "$stamp" && "$(cat "$stamp")" == "$MATHJAX_VERSION" \
      && -f "$dest/tex-svg.js" ]]; then
    echo "MathJax $MATHJAX_VERSION already in book/_static/mathjax/"
    exit 0
fi

command -v npm >/dev/null 2>&1 || {
    echo "error: npm not found; install Node.js/npm (e.g. apt-get install npm)" >&2
    exit 1
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "Fetching mathjax@$MATHJAX_VERSION from the npm registry ..."
(cd "$tmp" && npm pack --silent "mathjax@$MATHJAX_VERSION" >/dev/null)
tarball="$tmp/mathjax-$MATHJAX_VERSION.tgz"
[[ -f "$tarball" ]] || { echo "error: npm pack produced no $tarball" >&2; exit 1; }

actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [[ "$actual" != "$MATHJAX_INTEGRITY" ]]; then
    echo "error: integrity mismatch for mathjax@$MATHJAX_VERSION" >&2
    echo "  expected $MATHJAX_INTEGRITY" >&2
    echo "  got      $actual" >&2
    exit 1
fi

tar -xzf "$tarball" -C "$tmp"
es5="$tmp/package/es5"

# tex-svg.js needs no web fonts. Keep the pieces it loads on demand
# (TeX extensions, menu/accessibility, speech rules, svg output) and
# leave out the other combined bundles.
rm -rf "$dest"
mkdir -p "$dest"
cp "$es5/tex-svg.js" "$dest/"
cp -r "$es5/input" "$es5/output" "$es5/a11y" "$es5/sre" "$es5/ui" "$dest/"
rm -rf "$dest/output/chtml" "$dest/output/chtml.js"
cp "$tmp/package/LICENSE" "$dest/LICENSE"
echo "$MATHJAX_VERSION" > "$stamp"

echo "MathJax $MATHJAX_VERSION -> book/_static/mathjax/ ($(du -sh "$dest" | cut -f1))"
