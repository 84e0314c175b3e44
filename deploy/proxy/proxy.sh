#!/usr/bin/env bash
# The Dagster UI behind nginx with basic authentication (production profile).
#   deploy/proxy/proxy.sh htpasswd USER   # add or replace USER; password from stdin (or a prompt)
#   deploy/proxy/proxy.sh run             # nginx in the foreground: LISTEN -> UPSTREAM
# Settings (environment):
#   MLPLATFORM_PROXY_HOME      folder of htpasswd, rendered config, logs (default .dagster_proxy)
#   MLPLATFORM_PROXY_LISTEN    what nginx listens on (default 127.0.0.1:3080; e.g. 0.0.0.0:3080
#                              to open the UI to the network, behind TLS: basic auth is cleartext)
#   MLPLATFORM_PROXY_UPSTREAM  the webserver, bound to loopback (default 127.0.0.1:3000):
#                              dagster-webserver -h 127.0.0.1 -p 3000 -w workspace.yaml
# Needs nginx (Debian: apt-get install nginx) and openssl (for the password hash).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
HOME_DIR=${MLPLATFORM_PROXY_HOME:-$PWD/.dagster_proxy}
LISTEN=${MLPLATFORM_PROXY_LISTEN:-127.0.0.1:3080}
UPSTREAM=${MLPLATFORM_PROXY_UPSTREAM:-127.0.0.1:3000}

die() { echo "proxy.sh: $*" >&2; exit 2; }

add_user() {
  local user=${1:-} password hash
  [[ $user =~ ^[A-Za-z0-9._@-]+$ ]] || die "usage: proxy.sh htpasswd USER (letters, digits, ._@-)"
  command -v openssl >/dev/null || die "openssl not found (Debian: apt-get install openssl)"
  if [ -t 0 ]; then read -rsp "password for $user: " password && echo >&2; else
    IFS= read -r password || true; fi
  [ ${#password} -ge 12 ] || die "the password needs 12 characters at least"
  hash=$(printf '%s' "$password" | openssl passwd -6 -stdin)  # SHA-512 crypt, salted
  mkdir -p "$HOME_DIR"
  umask 077
  { grep -v "^$user:" "$HOME_DIR/htpasswd" 2>/dev/null || true; echo "$user:$hash"; } \
    >"$HOME_DIR/htpasswd.new"
  mv "$HOME_DIR/htpasswd.new" "$HOME_DIR/htpasswd"
  echo "user $user written to $HOME_DIR/htpasswd" >&2
}

render() {  # $1 template, $2 output
  sed -e "s|@@HOME@@|$HOME_DIR|g" -e "s|@@LISTEN@@|$LISTEN|g" \
    -e "s|@@UPSTREAM@@|$UPSTREAM|g" -e "s|@@USER@@|$(id -un) $(id -gn)|g" "$1" >"$2"
}

run() {
  local nginx
  nginx=$(command -v nginx || echo /usr/sbin/nginx)
  [ -x "$nginx" ] || die "nginx not found (Debian: apt-get install nginx)"
  [ -s "$HOME_DIR/htpasswd" ] || die "no users yet: deploy/proxy/proxy.sh htpasswd USER"
  [[ $HOME_DIR$LISTEN$UPSTREAM != *[\|\;\ ]* ]] || die "no spaces, ; or | in the settings"
  mkdir -p "$HOME_DIR/tmp"
  render "$HERE/nginx.conf.template" "$HOME_DIR/nginx.conf"
  render "$HERE/upstream.conf.template" "$HOME_DIR/upstream.conf"
  exec "$nginx" -e stderr -p "$HOME_DIR" -c "$HOME_DIR/nginx.conf"
}

case "${1:-}" in
  htpasswd) add_user "${2:-}" ;;
  run) run ;;
  *) die "usage: proxy.sh htpasswd USER | run" ;;
esac
