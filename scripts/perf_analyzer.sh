#!/usr/bin/env bash
# Run Triton's perf_analyzer with every argument passed through unchanged:
#   bash scripts/perf_analyzer.sh -m generator --input-data perf/generator.json --concurrency-range 1:4
#
# Which perf_analyzer:
#   1. $PERF_ANALYZER, when set (a path to a perf_analyzer binary);
#   2. `perf_analyzer` from PATH when it runs (the Triton SDK container has it);
#   3. otherwise the pinned PyPI wheel (perf-analyzer==2.60.0, hash-checked), unpacked into
#      ${SCAFFOLDING_CACHE:-$HOME/.cache/triton-scaffolding}/perf_analyzer/. Its binary needs
#      glibc >= 2.38; where the machine's is older (Debian 12 has 2.36) it runs under Debian
#      trixie's dynamic loader, C library and C++ runtime (libc6, libstdc++6, libgcc-s1), fetched
#      once with apt-get through a private sources list and private state and cache directories
#      and unpacked with dpkg-deb -x: nothing on the system changes.
# The first run needs the network (PyPI, and deb.debian.org or $SCAFFOLDING_DEBIAN_MIRROR); later
# runs use the cache. Each piece is built in a temporary directory and renamed into place, so an
# interrupted run leaves nothing half-made and two runs may race.
set -euo pipefail

PA_VERSION=2.60.0
# sha256 of the PyPI wheels of $PA_VERSION (pip checks the one it downloads against these)
PA_WHEEL_HASHES="--hash=sha256:23ef56b107ae9233e5cf09fbdf508dd9b936a52f1bae2f63f53c8117087b3f25 --hash=sha256:c2ece0adb7760ea1abc258222d80bf8e367fa9639401406b96da2c9b55131d29"
DEBIAN_SUITE=trixie
DEBIAN_MIRROR=${SCAFFOLDING_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${SCAFFOLDING_CACHE:-${HOME:?HOME is not set; set SCAFFOLDING_CACHE}/.cache/triton-scaffolding}/perf_analyzer

# shellcheck source=messages.sh
. "$REPO_ROOT/scripts/messages.sh"
HINT="Alternatives: run inside the Triton SDK container (nvcr.io/nvidia/tritonserver:<yy.mm>-py3-sdk), where perf_analyzer is on PATH, or set PERF_ANALYZER=/path/to/perf_analyzer."

# a perf_analyzer that runs prints its version; pip's 0.1.0 placeholder and a wheel binary
# that needs a newer glibc do not (the wheel's Python wrapper even exits 0 then)
runs() {
  local out
  out=$("$@" --version 2>&1) || true  # it prints the version on stderr
  [[ $out == *"Perf Analyzer Version"* ]]
}

if [ -n "${PERF_ANALYZER:-}" ]; then
  runs "$PERF_ANALYZER" || die "PERF_ANALYZER=$PERF_ANALYZER does not run ('$PERF_ANALYZER --version' printed no version)."
  exec "$PERF_ANALYZER" "$@"
fi
if command -v perf_analyzer >/dev/null 2>&1; then
  runs perf_analyzer && exec perf_analyzer "$@"
  note "the perf_analyzer on PATH ($(command -v perf_analyzer)) does not run here; using the pinned wheel instead."
fi

case "$(uname -m)" in
  x86_64) wheel_platform=manylinux_2_38_x86_64 triplet=x86_64-linux-gnu loader=ld-linux-x86-64.so.2 ;;
  aarch64) wheel_platform=manylinux_2_38_aarch64 triplet=aarch64-linux-gnu loader=ld-linux-aarch64.so.1 ;;
  *) die "perf-analyzer wheels exist for x86_64 and aarch64 only, this machine is $(uname -m)." "$HINT" ;;
esac

mkdir -p "$CACHE" || die "cannot create the cache directory $CACHE (set SCAFFOLDING_CACHE to a writable place)."
temporaries=()
trap 'for t in ${temporaries[@]+"${temporaries[@]}"}; do rm -rf "$t"; done' EXIT
new_temporary() {  # sets $tmp: a fresh directory inside the cache, removed on exit
  tmp=$(mktemp -d "$CACHE/.tmp.XXXXXX") || die "cannot create a directory in $CACHE."
  temporaries+=("$tmp")
}
publish() {  # rename a finished temporary into place; a concurrent run that got there first wins
  mv -T "$1" "$2" 2>/dev/null || [ -d "$2" ] || die "cannot move $1 to $2."
  rm -rf "$1"
}

# --- the wheel --------------------------------------------------------------------------------
wheel_dir=$CACHE/wheel-$PA_VERSION-$wheel_platform
binary=$wheel_dir/perf_analyzer/bin/perf_analyzer
if [ ! -x "$binary" ]; then
  python=${PYTHON:-}
  if [ -z "$python" ]; then
    if [ -x "$REPO_ROOT/.venv/bin/python" ]; then python=$REPO_ROOT/.venv/bin/python; else python=python3; fi
  fi
  "$python" -m pip --version >/dev/null 2>&1 \
    || die "perf_analyzer is not on PATH and '$python -m pip' is not available to download the perf-analyzer wheel." \
      "Set PYTHON to a Python with pip (or run 'bash scripts/setup.sh' to create .venv)." "$HINT"
  note "downloading perf-analyzer==$PA_VERSION ($wheel_platform) from PyPI into $wheel_dir ..."
  new_temporary
  echo "perf-analyzer==$PA_VERSION $PA_WHEEL_HASHES" > "$tmp/requirements.txt"
  # --platform: the wheel is tagged manylinux_2_38, which pip would refuse (or replace with the
  # empty 0.1.0 placeholder) on an older glibc; the pin and the hashes rule out anything else
  if ! "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform "$wheel_platform" --require-hashes -r "$tmp/requirements.txt" -d "$tmp/download" \
    > "$tmp/pip.log" 2>&1; then
    cat "$tmp/pip.log" >&2
    die "could not download perf-analyzer==$PA_VERSION from PyPI (output above)." "$HINT"
  fi
  wheel=
  for file in "$tmp"/download/perf_analyzer-"$PA_VERSION"-*.whl; do [ -f "$file" ] && wheel=$file; done
  [ -n "$wheel" ] || die "pip downloaded no perf_analyzer-$PA_VERSION wheel into $tmp/download."
  "$python" -m zipfile -e "$wheel" "$tmp/wheel" || die "cannot unpack $wheel."
  [ -f "$tmp/wheel/perf_analyzer/bin/perf_analyzer" ] || die "$wheel holds no perf_analyzer/bin/perf_analyzer."
  chmod +x "$tmp/wheel/perf_analyzer/bin/perf_analyzer"
  publish "$tmp/wheel" "$wheel_dir"
  rm -rf "$tmp"
fi

if runs "$binary"; then
  exec "$binary" "$@"
fi

# --- a newer C runtime for an older glibc -----------------------------------------------------
runtime_dir=$CACHE/runtime-$DEBIAN_SUITE-$triplet
libdir=$runtime_dir/usr/lib/$triplet
if [ ! -x "$libdir/$loader" ]; then
  glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null || echo "an unknown glibc")
  why="perf_analyzer $PA_VERSION needs glibc >= 2.38 and GLIBCXX_3.4.32; this machine has $glibc."
  for tool in apt-get dpkg-deb; do
    command -v "$tool" >/dev/null 2>&1 \
      || die "$why Fetching Debian $DEBIAN_SUITE's loader and C runtime needs $tool, which is not installed." "$HINT"
  done
  [ -r "$DEBIAN_KEYRING" ] \
    || die "$why Fetching Debian $DEBIAN_SUITE's loader needs $DEBIAN_KEYRING (package debian-archive-keyring)." "$HINT"
  note "$why"
  note "fetching Debian $DEBIAN_SUITE's libc6, libstdc++6, libgcc-s1 into $runtime_dir (private apt state; the system is not changed) ..."
  new_temporary
  mkdir -p "$tmp/apt/lists/partial" "$tmp/apt/cache/archives/partial" "$tmp/debs" "$tmp/root"
  echo "deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_MIRROR $DEBIAN_SUITE main" > "$tmp/apt/sources.list"
  : > "$tmp/apt/status"
  apt_options=(
    -o "Dir::Etc::SourceList=$tmp/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$tmp/apt/lists" -o "Dir::State::status=$tmp/apt/status"
    -o "Dir::Cache=$tmp/apt/cache" -o Dir::Etc::Preferences=/dev/null
    -o Dir::Etc::PreferencesParts=/dev/null -o "APT::Sandbox::User=$(id -un)"
  )
  if ! apt-get "${apt_options[@]}" -q update > "$tmp/apt.log" 2>&1 \
    || ! (cd "$tmp/debs" && apt-get "${apt_options[@]}" -q download libc6 libstdc++6 libgcc-s1) >> "$tmp/apt.log" 2>&1; then
    cat "$tmp/apt.log" >&2
    die "could not download Debian $DEBIAN_SUITE's libc6, libstdc++6, libgcc-s1 from $DEBIAN_MIRROR (output above)." \
      "SCAFFOLDING_DEBIAN_MIRROR picks another Debian mirror." "$HINT"
  fi
  for deb in "$tmp"/debs/*.deb; do
    dpkg-deb -x "$deb" "$tmp/root" || die "cannot unpack $deb."
    basename "$deb" >> "$tmp/root/PACKAGES"
  done
  [ -x "$tmp/root/usr/lib/$triplet/$loader" ] || die "Debian $DEBIAN_SUITE's libc6 holds no usr/lib/$triplet/$loader."
  "$tmp/root/usr/lib/$triplet/$loader" --library-path "$tmp/root/usr/lib/$triplet" "$binary" --version \
    > "$tmp/check.log" 2>&1 || true
  if ! grep -q "Perf Analyzer Version" "$tmp/check.log"; then
    cat "$tmp/check.log" >&2
    die "perf_analyzer does not run under Debian $DEBIAN_SUITE's loader either (output above)." "$HINT"
  fi
  publish "$tmp/root" "$runtime_dir"
  rm -rf "$tmp"
  note "ready: $(tr '\n' ' ' < "$runtime_dir/PACKAGES")"
fi

exec "$libdir/$loader" --argv0 perf_analyzer --library-path "$libdir" "$binary" "$@"
