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

# sid_package PKG EXPECTED: extracts Debian sid's PKG (a package this Debian does not carry at the
# version the tests need: oras, crane, containerd 2.x) once into a directory outside the clone,
# keyed by its version, and prints that directory. The package is fetched with `apt-get download`
# under a private apt configuration whose source list is the machine's own with the suite set to
# sid; nothing is installed and dpkg's database is not touched. EXPECTED is the upstream version
# the tests were written against: another one is used, with a warning, when sid has moved on.
sid_package() {
    local pkg=$1 expected=$2
    local root=${WASM_OCI_TOOLS:-/var/cache/wasm-oci-tools}/sid
    local apt=$root/apt
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/etc/sources.list.d" \
        "$apt/etc/preferences.d" "$apt/etc/apt.conf.d"
    local opts=(-o "Dir::Etc=$apt/etc" -o Dir::Etc::sourcelist=/dev/null
        -o "Dir::Etc::sourceparts=$apt/etc/sources.list.d" -o "Dir::State::Lists=$apt/lists"
        -o "Dir::Cache=$apt/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
    # The machine's own sources, suite set to sid (the security suite has no sid).
    local sources=/etc/apt/sources.list.d/debian.sources
    awk 'BEGIN { RS = ""; ORS = "\n\n" } /-security/ { next } { print }' "$sources" |
        sed -e 's/^Suites:.*/Suites: sid/' >"$apt/etc/sources.list.d/sid.sources"
    # The lists are refreshed once a day at most.
    if [ -z "$(find "$apt/lists" -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
        echo "==> apt-get update (sid lists, private)" >&2
        apt-get "${opts[@]}" update -qq >/dev/null
    fi
    local version
    version=$(apt-cache "${opts[@]}" show --no-all-versions "$pkg" 2>/dev/null |
        awk '/^Version:/ { print $2; exit }')
    if [ -z "$version" ]; then
        echo "sid has no package $pkg" >&2
        return 1
    fi
    case "${version#*:}" in
        "$expected"*) ;;
        *) echo "warning: sid's $pkg is $version, the tests were written against $expected" >&2 ;;
    esac
    local dir=$root/${pkg}_${version//[:~+]/_}
    if [ ! -e "$dir/.done" ]; then
        echo "==> sid package $pkg $version" >&2
        local tmp
        tmp=$(mktemp -d "$root/.tmp.XXXXXX")
        (cd "$tmp" && apt-get "${opts[@]}" download -qq "$pkg=$version" >/dev/null)
        dpkg-deb -x "$tmp"/*.deb "$tmp/root"
        rm -rf "$dir"
        mv "$tmp/root" "$dir"
        rm -rf "$tmp"
        touch "$dir/.done"
    fi
    echo "$dir"
}

# componentize_py VERSION: installs componentize-py VERSION from PyPI once into a venv outside
# the clone, keyed by version, and prints the path of its componentize-py command. A second call
# finds it there and does nothing. The venv is marked complete only after pip succeeded: a
# half-made one is made again.
componentize_py() {
    local version=$1
    local dir=${WASM_OCI_TOOLS:-/var/cache/wasm-oci-tools}/componentize-py/$version
    if [ ! -e "$dir/.done" ]; then
        echo "==> pip install componentize-py==$version (venv)" >&2
        rm -rf "$dir"
        mkdir -p "$(dirname "$dir")"
        python3 -m venv "$dir"
        "$dir/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$version"
        touch "$dir/.done"
    fi
    echo "$dir/bin/componentize-py"
}
