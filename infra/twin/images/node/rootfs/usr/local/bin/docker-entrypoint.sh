#!/bin/sh
# As in the official node images: run the command with node if the first
# argument is a flag, or not a command, or a file that is not executable.
set -e
if [ "${1#-}" != "${1}" ] || [ -z "$(command -v "${1}")" ] || { [ -f "${1}" ] && ! [ -x "${1}" ]; }; then
  set -- node "$@"
fi
exec "$@"
