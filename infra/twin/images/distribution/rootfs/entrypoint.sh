#!/bin/sh
# As in the official registry:2 image: a config file or a subcommand as the
# first argument runs the registry with it.
set -e
case "$1" in
  *.yaml | *.yml) set -- registry serve "$@" ;;
  serve | garbage-collect | help | -*) set -- registry "$@" ;;
esac
exec "$@"
