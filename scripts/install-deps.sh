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

# --- ClickHouse cluster (internal/chcluster, veil dev --clickhouse-shards) ---
# A replicated, sharded ClickHouse needs ZooKeeper: Debian's `zookeeper`
# (3.8, Java) is run by Veil itself from /usr/share/java/zookeeper.jar, never
# as the packaged service.
if [ ! -f /usr/share/java/zookeeper.jar ] || ! have java; then
	apt_install zookeeper
fi
# --- end ClickHouse cluster --------------------------------------------------

# --- Prometheus (observability tests) ---------------------------------------
# internal/obstest scrapes a running stack with a real Prometheus and checks
# deploy/prometheus and deploy/grafana against it: Debian's `prometheus`
# package provides both `prometheus` and `promtool`.
if ! have prometheus || ! have promtool; then
	apt_install prometheus
fi
# --- end Prometheus ----------------------------------------------------------

# --- SDK compatibility tests (sdktest/) --------------------------------------
# sdktest/ runs the official Mixpanel SDKs against Veil: the Node library with
# node, and mixpanel-browser in Debian's headless `chromium` (npm never
# downloads a browser). The npm packages come from the committed lockfile;
# node_modules is reinstalled when it is missing or was installed from
# another lockfile.
sdk_missing=()
have node || sdk_missing+=(nodejs)
have npm || sdk_missing+=(npm)
have chromium || sdk_missing+=(chromium)
if [ ${#sdk_missing[@]} -gt 0 ]; then
	apt_install "${sdk_missing[@]}"
fi
sdk_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/sdktest"
sdk_stamp="$sdk_dir/node_modules/.veil-lockfile.sha256"
sdk_lock_sum="$(sha256sum "$sdk_dir/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$sdk_stamp" ] || [ "$(cat "$sdk_stamp")" != "$sdk_lock_sum" ]; then
	echo "install-deps: npm ci in sdktest/"
	(cd "$sdk_dir" && npm ci --no-audit --no-fund --loglevel=error)
	echo "$sdk_lock_sum" >"$sdk_stamp"
fi
# --- end SDK compatibility tests ---------------------------------------------
