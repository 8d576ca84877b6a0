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
PACKAGES=(nginx-light apache2 libapache2-mod-php haproxy wrk curl python3-websockets chromium prometheus)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

# What the tests run: each must be there once the packages are.
check_tools() {
    local absent=()
    local tool
    for tool in nginx apache2 haproxy wrk curl chromium node npm promtool; do
        command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || absent+=("$tool")
    done
    # The Python the tests run (tests/src/ws_echo.rs): Debian's, where
    # python3-websockets installs.
    if ! "${PYTHON:-/usr/bin/python3}" -c 'import websockets' 2>/dev/null; then
        absent+=("python3 websockets module")
    fi
    if [ ${#absent[@]} -ne 0 ]; then
        echo "install-test-deps: still missing: ${absent[*]}" >&2
        exit 1
    fi
}

if [ ${#missing[@]} -eq 0 ]; then
    check_tools
    echo "install-test-deps: all present (${PACKAGES[*]} node npm)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "install-test-deps: installing ${missing[*]}"
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
check_tools
echo "install-test-deps: all present"
