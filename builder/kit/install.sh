#!/bin/sh
# Install the edgebundle device runtime from this kit, with no network.
#
# Each kit installs into a venv of its own, PREFIX/venvs/KIT_ID, and PREFIX/current points at
# the one in use: re-running the same kit changes nothing, a newer kit is installed beside the
# running one and switched to only once it is complete and has opened the store, and the
# previous venv is kept for a rollback by hand. The store is created once and never touched
# again here. As root on a systemd machine the service runs as the system user edgebundle.
#
# A kit for 32-bit ARM (KIT_SYSTEM_SITE=yes) carries Debian's python3-onnxruntime, numpy,
# cryptography and venv with what they need beyond a minimal Debian trixie: run as root, it
# installs those of them the system lacks (dpkg -i, as debs/order.txt says), and the venv
# sees the system's packages.
set -eu

usage() {
    cat <<'EOF'
usage: install.sh [--prefix DIR] [--store DIR] [--python PYTHON] [--memory-max SIZE]
                  [--no-service] [--no-debs] [--print-unit]

  --prefix DIR       where the runtime goes (default /opt/edgebundle)
  --store DIR        the model store, created if missing or empty (default /var/lib/edgebundle)
  --python PYTHON    the Python to run on (default: pythonX.Y of this kit, else python3)
  --memory-max SIZE  the service's MemoryMax= (default 192M)
  --no-service       install no systemd service even as root on a systemd machine
  --no-debs          install none of the kit's Debian packages (32-bit ARM kits): stop
                     with what is missing if the system lacks them
  --print-unit       print the service's unit for these options and exit
EOF
}

die() {
    echo "install.sh: $*" >&2
    exit 1
}

KIT=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$KIT/kit.conf"

PREFIX=/opt/edgebundle
STORE=/var/lib/edgebundle
PYTHON=
MEMORY_MAX=192M
SERVICE=yes
PRINT_UNIT=no
DEBS=yes
SERVICE_USER=edgebundle
UNIT=/etc/systemd/system/edgebundle.service

while [ $# -gt 0 ]; do
    case $1 in
        --prefix | --store | --python | --memory-max)
            [ $# -ge 2 ] || die "$1 needs a value"
            case $1 in
                --prefix) PREFIX=$2 ;;
                --store) STORE=$2 ;;
                --python) PYTHON=$2 ;;
                --memory-max) MEMORY_MAX=$2 ;;
            esac
            shift 2
            ;;
        --no-service) SERVICE=no; shift ;;
        --no-debs) DEBS=no; shift ;;
        --print-unit) PRINT_UNIT=yes; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

# Both go into the unit's command line and through sed: plain absolute paths only.
for path in "$PREFIX" "$STORE"; do
    case $path in
        /*) ;;
        *) die "$path: give an absolute path" ;;
    esac
    case $path in
        *[!A-Za-z0-9._/-]*) die "$path: use only letters, digits and . _ / - in paths" ;;
    esac
done
case $MEMORY_MAX in
    *[!0-9KMG]* | '') die "--memory-max $MEMORY_MAX: give a size such as 192M" ;;
esac

state_directory() {
    case $STORE in
        /var/lib/?*) echo "${STORE#/var/lib/}" ;;
        *) die "the service keeps its store under /var/lib (StateDirectory=); use --no-service for $STORE" ;;
    esac
}

render_unit() {
    state_dir=$(state_directory)
    sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@STORE@|$STORE|g" \
        -e "s|@STATE_DIRECTORY@|$state_dir|g" -e "s|@USER@|$SERVICE_USER|g" \
        -e "s|@MEMORY_MAX@|$MEMORY_MAX|g" "$KIT/systemd/edgebundle.service.in"
}

if [ "$PRINT_UNIT" = yes ]; then
    render_unit
    exit 0
fi
if [ "$SERVICE" = yes ] && [ "$(id -u)" = 0 ] && [ -d /run/systemd/system ]; then
    state_directory >/dev/null
else
    SERVICE=no
fi

find_python() {
    if [ -n "$PYTHON" ]; then
        echo "$PYTHON"
    elif command -v "python$KIT_PYTHON" >/dev/null 2>&1; then
        command -v "python$KIT_PYTHON"
    elif command -v python3 >/dev/null 2>&1; then
        command -v python3
    fi
}

check_python() {
    # The interpreter's own machine, not uname's: a 32-bit userland on a 64-bit kernel says
    # aarch64 to uname, and its wheels would not load.
    found=$("$1" -c 'import platform, sys; print(platform.machine(), "%d.%d" % sys.version_info[:2])') ||
        die "$1 does not run"
    [ "$found" = "$KIT_MACHINE $KIT_PYTHON" ] ||
        die "this kit is for Python $KIT_PYTHON on $KIT_MACHINE, but $1 is Python ${found#* } on ${found%% *}: use the kit for it, or pass --python"
}

# What the runtime needs from the system that Python $1 lacks, in words; nothing if all is there.
system_missing() {
    if [ -z "$1" ]; then
        echo "Python $KIT_PYTHON"
        return
    fi
    # The specs hold no blanks or glob characters: split them into arguments.
    # shellcheck disable=SC2086
    "$1" - $KIT_REQUIRES <<'EOF'
import importlib, re, sys

def version(text):
    parts = [int(part) for part in re.findall(r"\d+", text)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))  # Debian's onnxruntime says "1.21"

missing = []
try:  # Debian's venv needs its scripts, packaged with ensurepip in python3-venv
    import ensurepip
except ImportError:
    missing.append("venv (python3-venv)")
for spec in sys.argv[1:]:
    name, _, least = spec.partition(">=")
    try:
        found = importlib.import_module(name).__version__
    except Exception as e:  # a missing module or a library it cannot load
        missing.append("%s >= %s (%s)" % (name, least, str(e).splitlines()[0]))
        continue
    if version(found) < version(least):
        missing.append("%s >= %s (found %s)" % (name, least, found))
print(", ".join(missing))
EOF
}

# The kit's packages that dpkg does not have installed, one dpkg -i per line of order.txt: a
# package whose pre-dependency is unpacked in the same call could not be unpacked.
install_debs() {
    while read -r step; do
        set --
        for deb in $step; do
            status=$(dpkg-query -W -f '${db:Status-Status}' "${deb%%_*}" 2>/dev/null || true)
            [ "$status" = installed ] || set -- "$@" "$KIT/debs/$deb"
        done
        if [ $# -gt 0 ]; then
            echo "installing $# Debian packages from the kit"
            DEBIAN_FRONTEND=noninteractive dpkg -i "$@" </dev/null ||
                die "dpkg could not install the kit's packages (see above); run install.sh again once that is fixed"
        fi
    done <"$KIT/debs/order.txt"
}

PYTHON=$(find_python)
[ -z "$PYTHON" ] || check_python "$PYTHON"
if [ "$KIT_SYSTEM_SITE" = yes ]; then
    missing=$(system_missing "$PYTHON")
    advice="run this as root to install the kit's Debian packages, or apt-get install $KIT_DEBIAN_PACKAGES"
    if [ -n "$missing" ] && [ "$DEBS" = yes ] && [ "$(id -u)" = 0 ] &&
        command -v dpkg >/dev/null 2>&1; then
        install_debs
        PYTHON=$(find_python)
        [ -z "$PYTHON" ] || check_python "$PYTHON"
        missing=$(system_missing "$PYTHON")
        advice="the kit's Debian packages are for Debian trixie (or a system built on it)"
    fi
    [ -z "$missing" ] || die "missing $missing: $advice"
fi
[ -n "$PYTHON" ] || die "no Python found: install Python $KIT_PYTHON or pass --python"

# A device's own pip configuration (an index, extra find-links) must not reach this install.
for variable in $(env | sed -n 's/^\(PIP_[A-Za-z0-9_]*\)=.*/\1/p'); do
    unset "$variable"
done
PIP_CONFIG_FILE=/dev/null
export PIP_CONFIG_FILE

VENV=$PREFIX/venvs/$KIT_ID
if [ -f "$VENV/.complete" ]; then
    echo "runtime $KIT_ID is already installed in $VENV"
else
    rm -rf "$VENV"
    mkdir -p "$PREFIX/venvs"
    # --without-pip: Debian's python3 has no ensurepip without python3-venv; pip runs from
    # the kit's own wheel instead and stays out of the venv.
    if [ "$KIT_SYSTEM_SITE" = yes ]; then
        # The dependencies are the system's, checked above: pip adds edgebundle alone.
        "$PYTHON" -m venv --without-pip --system-site-packages "$VENV"
        set -- --no-deps
    else
        "$PYTHON" -m venv --without-pip "$VENV"
        set --
    fi
    "$VENV/bin/python" "$KIT/pip/$KIT_PIP/pip" install --quiet --no-index \
        --find-links "$KIT/wheels" --require-hashes -r "$KIT/requirements.txt" "$@"
    : >"$VENV/.complete"
    echo "installed runtime $KIT_ID in $VENV"
fi

# The new runtime must open the existing store before it replaces the running one.
if [ -d "$STORE" ] && [ -n "$(ls -A "$STORE")" ]; then
    "$VENV/bin/bundle-runtime" status --store "$STORE" >/dev/null ||
        die "$STORE is not a store this runtime can open; nothing was switched"
    echo "kept the store $STORE"
else
    set --
    for key in "$KIT"/trust/*; do
        set -- "$@" --trust "$key"
    done
    "$VENV/bin/bundle-runtime" init --store "$STORE" "$@"
fi

# os.replace swaps the link atomically; POSIX mv would move the new link into the old target.
previous=$("$VENV/bin/python" - "$PREFIX/current" "venvs/$KIT_ID" <<'EOF'
import os, sys
link, target = sys.argv[1:]
previous = os.readlink(link) if os.path.islink(link) else ""
if previous != target:
    if os.path.lexists(link + ".new"):  # left by an install that was cut off
        os.remove(link + ".new")
    os.symlink(target, link + ".new")
    os.replace(link + ".new", link)
print(previous)
EOF
)
if [ "$previous" = "venvs/$KIT_ID" ]; then
    echo "$PREFIX/current is venvs/$KIT_ID already"
else
    # The one just replaced stays for a rollback by hand (ln -sfn it back, then restart).
    for venv in "$PREFIX"/venvs/*; do
        case $venv in
            "$PREFIX/venvs/$KIT_ID" | "$PREFIX/$previous") ;;
            *) rm -rf "$venv" ;;
        esac
    done
    echo "$PREFIX/current -> venvs/$KIT_ID${previous:+ (previous: $previous)}"
fi

if [ "$SERVICE" = no ]; then
    echo "no service installed: run $PREFIX/current/bin/bundle-runtime serve --store $STORE"
    exit 0
fi
if ! id "$SERVICE_USER" >/dev/null 2>&1; then
    if command -v useradd >/dev/null 2>&1; then
        useradd --system --home-dir "$STORE" --no-create-home --shell /usr/sbin/nologin \
            "$SERVICE_USER"
    else
        adduser -S -D -H -h "$STORE" -s /sbin/nologin "$SERVICE_USER"
    fi
fi
# Also returns to the service what a root shell created in the store by hand.
chown -R "$SERVICE_USER:$(id -g "$SERVICE_USER")" "$STORE"
render_unit >"$UNIT.new"
mv "$UNIT.new" "$UNIT"
systemctl daemon-reload
systemctl enable --quiet edgebundle.service
systemctl restart edgebundle.service
echo "edgebundle.service runs $PREFIX/current as $SERVICE_USER"
