#!/usr/bin/env bash
# Re-vendor the scripts, styles and fonts GX's Data Docs load from CDNs (tasks/data_docs.py
# points the pages here, so they render offline). Needs npm and its registry.
#   tasks/data_docs_assets/refresh.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
packages=(bootstrap@4.3.1 jquery@3.7.1 popper.js@1.12.9 bootstrap-table@1.19.1
          bootstrap-datepicker@1.9.0 @fortawesome/fontawesome-free@6.6.0
          @forevolve/bootstrap-dark@1.1.0 vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0)
npm pack --silent "${packages[@]}" >/dev/null
for tgz in *.tgz; do mkdir -p "${tgz%.tgz}" && tar -xzf "$tgz" -C "${tgz%.tgz}"; done
put() { mkdir -p "$here/$(dirname "$2")" && cp "$1" "$here/$2"; }
put bootstrap-4.3.1/package/dist/css/bootstrap.min.css bootstrap/bootstrap.min.css
put bootstrap-4.3.1/package/dist/js/bootstrap.min.js bootstrap/bootstrap.min.js
put bootstrap-4.3.1/package/LICENSE bootstrap/LICENSE
put jquery-3.7.1/package/dist/jquery.min.js jquery/jquery.min.js
put jquery-3.7.1/package/LICENSE.txt jquery/LICENSE.txt
put popper.js-1.12.9/package/dist/umd/popper.min.js popper/popper.min.js
t=bootstrap-table-1.19.1/package
put $t/dist/bootstrap-table.min.css bootstrap-table/bootstrap-table.min.css
put $t/dist/bootstrap-table.min.js bootstrap-table/bootstrap-table.min.js
put $t/dist/extensions/filter-control/bootstrap-table-filter-control.min.css \
    bootstrap-table/bootstrap-table-filter-control.min.css
put $t/dist/extensions/filter-control/bootstrap-table-filter-control.min.js \
    bootstrap-table/bootstrap-table-filter-control.min.js
put $t/LICENSE bootstrap-table/LICENSE
d=bootstrap-datepicker-1.9.0/package
put $d/dist/css/bootstrap-datepicker.min.css bootstrap-datepicker/bootstrap-datepicker.min.css
put $d/dist/js/bootstrap-datepicker.min.js bootstrap-datepicker/bootstrap-datepicker.min.js
put $d/LICENSE bootstrap-datepicker/LICENSE
f=fortawesome-fontawesome-free-6.6.0/package
put $f/css/all.min.css fontawesome/css/all.min.css
for font in $f/webfonts/*.woff2; do put "$font" "fontawesome/webfonts/$(basename "$font")"; done
put $f/LICENSE.txt fontawesome/LICENSE.txt
put forevolve-bootstrap-dark-1.1.0/package/dist/css/bootstrap-prefers-dark.min.css \
    bootstrap-dark/bootstrap-prefers-dark.min.css
put forevolve-bootstrap-dark-1.1.0/package/LICENSE bootstrap-dark/LICENSE
put vega-5.33.1/package/build/vega.min.js vega/vega.min.js
put vega-lite-5.23.0/package/build/vega-lite.min.js vega/vega-lite.min.js
put vega-lite-5.23.0/package/LICENSE vega/LICENSE
put vega-embed-6.29.0/package/build/vega-embed.min.js vega/vega-embed.min.js
