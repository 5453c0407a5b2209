#!/usr/bin/env bash
# Installs what Veil's `make run` and `make test` need and the machine lacks:
# clickhouse-server and clickhouse-client from Debian. Idempotent: it does
# nothing when everything is present, and runs `apt-get update` at most once.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_updated=""
apt_install() {
	if [ -z "$apt_updated" ]; then
		echo "install-deps: apt-get update"
		$SUDO apt-get update -qq
		apt_updated=1
	fi
	echo "install-deps: apt-get install $*"
	# policy-rc.d or a missing init system may refuse to start the packaged
	# service; Veil runs its own clickhouse-server, so that is fine.
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

missing=()
have clickhouse-server || missing+=(clickhouse-server)
have clickhouse-client || missing+=(clickhouse-client)
if [ ${#missing[@]} -gt 0 ]; then
	apt_install "${missing[@]}"
fi
