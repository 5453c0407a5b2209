#!/usr/bin/env bash
# Installs what Veil's `make run` and `make test` need and the machine lacks:
# clickhouse-server and clickhouse-client from Debian, the official Mixpanel
# SDKs the compatibility tests in sdktest/ drive, and the npm packages and
# tools of the other test suites below. Idempotent: it does nothing when
# everything is present, and runs `apt-get update` at most once.
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

# --- Schema tests on a current ClickHouse engine (internal/chdbtest/) -------
# internal/chdbtest runs Veil's schema on chDB's libchdb.so (ClickHouse 26.x
# as a shared library), loaded in-process by github.com/chdb-io/chdb-go. The
# library comes from the npm package @chdb/lib-linux-x64-gnu at the version
# the committed lockfile pins; node_modules is reinstalled when it is missing
# or was installed from another lockfile. `make test` points CHDB_LIB_PATH at
# it.
chdb_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/internal/chdbtest"
chdb_lib="$chdb_dir/node_modules/@chdb/lib-linux-x64-gnu/libchdb.so"
chdb_stamp="$chdb_dir/node_modules/.veil-lockfile.sha256"
chdb_lock_sum="$(sha256sum "$chdb_dir/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$chdb_lib" ] || [ ! -f "$chdb_stamp" ] || [ "$(cat "$chdb_stamp")" != "$chdb_lock_sum" ]; then
	echo "install-deps: npm ci in internal/chdbtest/ (libchdb.so, about 570 MB)"
	(cd "$chdb_dir" && npm ci --no-audit --no-fund --loglevel=error)
	if [ ! -f "$chdb_lib" ]; then
		echo "install-deps: npm ci did not install $chdb_lib (chDB ships it for linux x64 with glibc)" >&2
		exit 1
	fi
	echo "$chdb_lock_sum" >"$chdb_stamp"
fi
# --- end schema tests on a current ClickHouse engine -------------------------

# --- Python and Java SDKs (sdktest/) ----------------------------------------
# The Python library runs in a venv of Debian's python3 (python3-venv brings
# ensurepip), installed from the committed requirements file, which pins
# every package to an exact version. The venv is made anew when the file
# changes, so a package dropped from it does not linger.
py=/usr/bin/python3
if [ ! -x "$py" ] || ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
	apt_install python3 python3-venv
fi
py_dir="$sdk_dir/python"
py_venv="$py_dir/.venv"
py_stamp="$py_venv/.veil-requirements.sha256"
py_req_sum="$(sha256sum "$py_dir/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$py_venv/bin/python" ] || [ ! -f "$py_stamp" ] || [ "$(cat "$py_stamp")" != "$py_req_sum" ]; then
	echo "install-deps: pip install -r sdktest/python/requirements.txt (in sdktest/python/.venv)"
	rm -rf "$py_venv"
	"$py" -m venv "$py_venv"
	"$py_venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$py_dir/requirements.txt"
	echo "$py_req_sum" >"$py_stamp"
fi

# The Java library comes from Maven Central through the committed
# sdktest/java/pom.xml: its jars are copied to sdktest/java/target/lib, again
# whenever pom.xml changes. The test runs the driver's source file with
# `java`, which compiles it in memory, so no build output can go stale.
java_missing=()
have java || java_missing+=(openjdk-17-jdk-headless)
have javac || java_missing+=(openjdk-17-jdk-headless)
have mvn || java_missing+=(maven)
if [ ${#java_missing[@]} -gt 0 ]; then
	apt_install $(printf '%s\n' "${java_missing[@]}" | sort -u)
fi
java_dir="$sdk_dir/java"
java_stamp="$java_dir/target/.veil-pom.sha256"
java_pom_sum="$(sha256sum "$java_dir/pom.xml" | cut -d' ' -f1)"
if [ ! -f "$java_stamp" ] || [ "$(cat "$java_stamp")" != "$java_pom_sum" ]; then
	echo "install-deps: mvn dependency:copy-dependencies in sdktest/java/"
	rm -rf "$java_dir/target/lib"
	# Maven prints colour resets even with -q -B: show its output only when
	# it failed.
	if ! mvn_out="$(cd "$java_dir" && mvn -q -B dependency:copy-dependencies 2>&1)"; then
		echo "$mvn_out" >&2
		exit 1
	fi
	echo "$java_pom_sum" >"$java_stamp"
fi
# --- end Python and Java SDKs -----------------------------------------------

# --- Apache Kafka (internal/kafkacluster) ------------------------------------
# The integration tests that must hold on a real cluster, and
# `veil dev --kafka apache`, run Apache Kafka's broker from the jars Maven
# Central publishes: internal/kafkacluster/pom.xml pins the version, and
# `mvn dependency:copy-dependencies` puts the broker and its dependencies in
# .cache/kafka/<version>/libs. A stamp holds the pom's hash: while it matches,
# nothing is run (no network needed); a changed pom resolves again.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kafka_pom="$root/internal/kafkacluster/pom.xml"
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$kafka_pom")"
if [ -z "$kafka_version" ]; then
	echo "install-deps: no <kafka.version> in $kafka_pom" >&2
	exit 1
fi
kafka_dir="${VEIL_KAFKA_CACHE:-$root/.cache/kafka}/$kafka_version"
kafka_stamp="$kafka_dir/pom.sha256"
kafka_pom_sum="$(sha256sum "$kafka_pom" | cut -d' ' -f1)"
# The brokers run on Java 17; Maven is needed only to resolve the jars.
have java || apt_install openjdk-17-jre-headless
if [ ! -f "$kafka_stamp" ] || [ "$(cat "$kafka_stamp")" != "$kafka_pom_sum" ] || [ ! -d "$kafka_dir/libs" ]; then
	have mvn || apt_install maven
	echo "install-deps: Apache Kafka $kafka_version from Maven Central into $kafka_dir/libs"
	mkdir -p "$kafka_dir"
	tmp="$(mktemp -d "$kafka_dir/libs.XXXXXX")"
	if ! mvn -q -B -f "$kafka_pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$kafka_dir/mvn.log" 2>&1; then
		echo "install-deps: mvn failed; see $kafka_dir/mvn.log" >&2
		rm -rf "$tmp"
		exit 1
	fi
	rm -rf "$kafka_dir/libs"
	mv "$tmp" "$kafka_dir/libs"
	echo "$kafka_pom_sum" >"$kafka_stamp"
fi
# --- end Apache Kafka ---------------------------------------------------------
