# Sourced by the scripts in this folder: messages on stderr, prefixed with the script's name.

# die MESSAGE [DETAIL...]: the error, each detail on an indented line of its own, then exit 1
die() {
  printf '%s: error: %s\n' "${0##*/}" "$1" >&2
  shift
  for line in "$@"; do printf '  %s\n' "$line" >&2; done
  exit 1
}

note() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
