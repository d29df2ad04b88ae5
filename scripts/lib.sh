# Shared by scripts/demo, scripts/test and scripts/bench: install what is missing, start a registry.

# apt_install PKG...: installs the Debian packages that are not installed yet.
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "==> apt-get install ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# pip_install MODULE PACKAGE: installs a PyPI package when its module does not import.
pip_install() {
    if ! python3 -c "import $1" 2>/dev/null; then
        echo "==> pip install $2" >&2
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$2"
    fi
}

# free_port: a loopback port nothing listens on.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_registry DIR: starts Docker Distribution on a free loopback port with storage in DIR,
# sets REGISTRY (host:port) and REGISTRY_PID, and waits until it answers.
start_registry() {
    local dir=$1 port
    port=$(free_port)
    REGISTRY="127.0.0.1:$port"
    cat >"$dir/config.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: $REGISTRY
YAML
    docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
    REGISTRY_PID=$!
    for _ in $(seq 100); do
        if curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "registry did not start; its log:" >&2
    cat "$dir/registry.log" >&2
    return 1
}

# stop_registry: stops the registry start_registry started, if it runs.
stop_registry() {
    if [ -n "${REGISTRY_PID:-}" ]; then
        kill "$REGISTRY_PID" 2>/dev/null || true
        wait "$REGISTRY_PID" 2>/dev/null || true
        REGISTRY_PID=
    fi
}
