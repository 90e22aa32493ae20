#!/bin/sh
# Kyutai's own web client against moshi-server (docs/server.md, "Kyutai's
# own client"): builds the client if needed, then runs test-kyutai-client.
#
#   tests/test-kyutai-client.sh CLIENT_DIR [vision] [BUILD_DIR]
#
# CLIENT_DIR: the client/ folder of kyutai-labs/moshi (or of
# kyutai-labs/moshivis, with "vision"), e.g. from
#   git clone https://github.com/kyutai-labs/moshi && moshi/client
# When CLIENT_DIR has no dist/ yet it is built with `npm ci && npm run
# build`, which needs the npm registry: this is why it is not part of CI.
# "vision": start the server with --vision (tiny MoshiVis) and pick a
# picture in the client.  Exit status: 0 pass, 1 fail, 77 skipped (no
# client, no npm, no Chromium).
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
client=${1:-${KYUTAI_CLIENT_SRC:-}}
vision=0
build="$here/build"
[ "${2:-}" = vision ] && vision=1
[ -n "${3:-}" ] && build=$3

if [ -z "$client" ] || [ ! -f "$client/package.json" ]; then
  echo "SKIP: give Kyutai's client/ folder (kyutai-labs/moshi or moshivis)"
  exit 77
fi
if [ ! -f "$client/dist/index.html" ]; then
  if ! command -v npm >/dev/null; then
    echo "SKIP: no npm to build $client"
    exit 77
  fi
  echo "building $client (node $(node --version), npm $(npm --version))"
  (cd "$client" && npm ci --no-audit --no-fund && npm run build) || {
    echo "FAIL: npm could not build $client"
    exit 1
  }
fi
test_bin="$build/tests/test-kyutai-client"
if [ ! -x "$test_bin" ]; then
  echo "FAIL: $test_bin not built (meson compile -C $build)"
  exit 1
fi
shot="$build/tests/kyutai-client.png"
[ "$vision" = 1 ] && shot="$build/tests/kyutai-client-vision.png"
KYUTAI_CLIENT_DIST="$client/dist" KYUTAI_CLIENT_VISION=$vision \
  GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$build/elements}" \
  exec "$test_bin" "$shot"
