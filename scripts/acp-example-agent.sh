#!/bin/sh
# acp-example-agent.sh [DIR] -- installs the ACP SDK's example agent (the third-party
# agent the specs talk to) as a self-contained stdio agent.
#
# Fetches (npm registry only, exact pins):
#   @zed-industries/agent-client-protocol@0.4.5  (ships typescript/examples/agent.ts + the SDK's .ts sources)
#   zod@3.25.76                                   (the SDK's only runtime dependency, "^3.0.0")
#   esbuild@0.28.2 (+ @esbuild/<platform>@0.28.2) (build-time only)
# then bundles agent.ts once into DIR/agent.mjs: a single ESM file that needs nothing but node (>= 18).
# Run it with:  node DIR/agent.mjs
#
# Idempotent: if DIR/agent.mjs was built from the same pins, npm is not called again (works offline).
# Set ACP_EXAMPLE_FORCE=1 to reinstall and rebuild anyway.
set -eu

ACP_VERSION=0.4.5
ZOD_VERSION=3.25.76
ESBUILD_VERSION=0.28.2
STAMP_TEXT="acp=$ACP_VERSION zod=$ZOD_VERSION esbuild=$ESBUILD_VERSION"

say() { printf 'acp-example-agent: %s\n' "$*"; }
die() { printf 'acp-example-agent: ERROR: %s\n' "$*" >&2; exit 1; }

DIR=${1:-${KIRO_ACP_EXAMPLE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiro-rt/acp-example}}

# --- prerequisites -----------------------------------------------------------
command -v node >/dev/null 2>&1 || die "node not found in PATH (need Node.js >= 18; on Debian: apt-get install nodejs)"
command -v npm  >/dev/null 2>&1 || die "npm not found in PATH (on Debian: apt-get install npm)"
NODE_VERSION=$(node --version 2>/dev/null) || die "'node --version' failed"
NODE_MAJOR=$(printf '%s' "$NODE_VERSION" | sed -n 's/^v\([0-9][0-9]*\)\..*/\1/p')
[ -n "$NODE_MAJOR" ] || die "cannot parse node version '$NODE_VERSION'"
[ "$NODE_MAJOR" -ge 18 ] || die "node $NODE_VERSION is too old (need >= 18 for web streams)"
NPM_VERSION=$(npm --version 2>/dev/null) || die "'npm --version' failed"
say "using node $NODE_VERSION, npm $NPM_VERSION"

mkdir -p "$DIR" || die "cannot create $DIR"
DIR=$(cd "$DIR" && pwd -P) || die "cannot enter $DIR"
AGENT="$DIR/agent.mjs"
STAMP="$DIR/.acp-example-stamp"

self_test() {
    # One initialize request on stdin, then EOF: the agent answers and exits.
    req='{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":1}}'
    if command -v timeout >/dev/null 2>&1; then
        out=$(printf '%s\n' "$req" | timeout 20 node "$AGENT" 2>/dev/null) || return 1
    else
        out=$(printf '%s\n' "$req" | node "$AGENT" 2>/dev/null) || return 1
    fi
    case $out in
        *'"id":0,"result":{"protocolVersion":1'*) return 0 ;;
        *) printf 'acp-example-agent: self-test got: %s\n' "$out" >&2; return 1 ;;
    esac
}

# --- already installed? ----------------------------------------------------------
if [ "${ACP_EXAMPLE_FORCE:-0}" != 1 ] && [ -f "$AGENT" ] && [ -f "$STAMP" ] \
   && [ "$(cat "$STAMP")" = "$STAMP_TEXT" ]; then
    say "already installed in $DIR ($STAMP_TEXT)"
    say "self-test: initialize ..."
    self_test || die "self-test of existing $AGENT failed; rerun with ACP_EXAMPLE_FORCE=1"
    say "ok. run: node $AGENT"
    exit 0
fi

# --- install packages ----------------------------------------------------------
say "writing $DIR/package.json (exact pins: $STAMP_TEXT)"
cat > "$DIR/package.json" <<EOF
{
  "name": "acp-example-agent",
  "private": true,
  "description": "ACP SDK example agent, bundled for stdio use",
  "dependencies": {
    "@zed-industries/agent-client-protocol": "$ACP_VERSION",
    "zod": "$ZOD_VERSION",
    "esbuild": "$ESBUILD_VERSION"
  }
}
EOF

say "npm install into $DIR/node_modules (cold: ~13 MB download incl. metadata, ~21 MB unpacked) ..."
# --ignore-scripts: esbuild's postinstall is an optional speed-up; its JS launcher finds the
#   platform binary in @esbuild/<platform> without it.
# --include=optional: the platform binary is an optionalDependency; don't let a user config omit it.
# --prefer-offline: versions are exact, so cached metadata/tarballs are fine.
npm install --prefix "$DIR" --no-audit --no-fund --ignore-scripts --include=optional \
    --prefer-offline --no-omit-lockfile-registry-resolved --loglevel=error \
    || die "npm install failed (is https://registry.npmjs.org reachable? see npm's message above)"

SRC="$DIR/node_modules/@zed-industries/agent-client-protocol/typescript/examples/agent.ts"
[ -f "$SRC" ] || die "$SRC missing after npm install"
ESBUILD="$DIR/node_modules/esbuild/bin/esbuild"
[ -f "$ESBUILD" ] || die "$ESBUILD missing after npm install"

# --- bundle ----------------------------------------------------------------------
say "bundling agent.ts (+ SDK .ts sources + zod) into $AGENT ..."
rm -f "$AGENT.tmp"
# (run from DIR so the "// node_modules/..." source comments in the bundle don't depend on the caller's cwd)
(cd "$DIR" && node "$ESBUILD" "$SRC" --bundle --platform=node --format=esm --target=node18 \
    --log-level=warning --outfile="$AGENT.tmp") \
    || die "esbuild failed (platform binary @esbuild/* missing? try ACP_EXAMPLE_FORCE=1 after rm -rf $DIR/node_modules)"
chmod +x "$AGENT.tmp"
mv -f "$AGENT.tmp" "$AGENT"

say "self-test: initialize ..."
self_test || die "self-test failed: $AGENT did not answer initialize"
printf '%s\n' "$STAMP_TEXT" > "$STAMP"
say "ok: $AGENT ($(wc -c < "$AGENT" | tr -d ' ') bytes). run: node $AGENT"
