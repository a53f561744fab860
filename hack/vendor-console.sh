#!/usr/bin/env bash
# Copies the console's browser libraries, at pinned versions, from their npm packages into
# llmkube/console/static/vendor/ with their licences. Run by hand when a version changes; the
# files are committed, so neither a user nor CI needs npm, and no page loads from a CDN.
set -euo pipefail
cd "$(dirname "$0")/.."

HTMX=2.0.11 HTMX_SSE=2.2.4 UPLOT=1.6.32
vendor=llmkube/console/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "htmx.org@$HTMX" "htmx-ext-sse@$HTMX_SSE" "uplot@$UPLOT" >/dev/null)
for package in "htmx.org-$HTMX" "htmx-ext-sse-$HTMX_SSE" "uplot-$UPLOT"; do
  mkdir -p "$work/$package" && tar xzf "$work/$package.tgz" -C "$work/$package"
done
mkdir -p "$vendor"
cp "$work/htmx.org-$HTMX/package/dist/htmx.min.js" "$vendor/htmx.min.js"
cp "$work/htmx.org-$HTMX/package/LICENSE" "$vendor/htmx.LICENSE"
cp "$work/htmx-ext-sse-$HTMX_SSE/package/dist/sse.min.js" "$vendor/htmx-ext-sse.min.js"
cp "$work/htmx-ext-sse-$HTMX_SSE/package/LICENSE" "$vendor/htmx-ext-sse.LICENSE"
cp "$work/uplot-$UPLOT/package/dist/uPlot.iife.min.js" "$vendor/uPlot.iife.min.js"
cp "$work/uplot-$UPLOT/package/dist/uPlot.min.css" "$vendor/uPlot.min.css"
cp "$work/uplot-$UPLOT/package/LICENSE" "$vendor/uPlot.LICENSE"
cat > "$vendor/VERSIONS" <<VERSIONS
htmx.org $HTMX (BSD Zero Clause): htmx.min.js
htmx-ext-sse $HTMX_SSE (BSD Zero Clause): htmx-ext-sse.min.js
uplot $UPLOT (MIT): uPlot.iife.min.js, uPlot.min.css
VERSIONS
echo "vendored into $vendor:" >&2
cat "$vendor/VERSIONS" >&2
