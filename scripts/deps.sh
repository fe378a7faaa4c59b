#!/bin/sh
# Install what kiro-rt needs to build, test and benchmark on Debian (run as root).
set -eu
pkgs="build-essential cmake pkg-config lua5.4 liblua5.4-dev lua-cjson libuv1-dev \
libjansson-dev libyajl-dev libcurl4-openssl-dev libwebsockets-dev libwebsockets-evlib-uv libedit-dev lua-busted lua-check clang-format hyperfine procps util-linux \
prometheus curl openssl binutils lua-luv lua-cqueues luarocks prosody python3-slixmpp lua-copas"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# node and npm run the ACP SDK's example agent (the specs' third-party ACP
# peer): Debian's, unless the machine has them already.
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -z "$missing" ]; then
  echo "scripts/deps.sh: all packages present"
elif [ "$(id -u)" -ne 0 ]; then
  echo "scripts/deps.sh: missing:$missing; run this as root (it uses apt-get)" >&2
  exit 2
else
  echo "scripts/deps.sh: installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  # The services packages bring (prosody) are not started: the specs run
  # their own. A policy-rc.d of ours says so while apt installs, unless the
  # machine has one.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing
fi
# The example agent, from the npm registry (idempotent; offline once built).
sh "$(dirname "$0")/acp-example-agent.sh"
