#!/usr/bin/env bash
# Makes up the secrets of the Compose trial in deploy/compose/secrets/, once:
# files that exist are kept, so the pseudonyms and the project's token stay
# the same from one run to the next. The directory is yours alone (0700);
# its files are readable inside the containers, which run as other users.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/secrets"
mkdir -p "$dir"
chmod 0700 "$dir"

random() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

make_secret() {
	local name="$1" value="$2"
	if [ ! -s "$dir/$name" ]; then
		printf '%s\n' "$value" >"$dir/$name"
		echo "secrets.sh: made up $name"
	fi
	chmod 0644 "$dir/$name"
}

make_secret project_token "$(random 16)"
make_secret project_secret "$(random 16)"
make_secret clickhouse_password "$(random 24)"
make_secret admin_token "$(random 32)"
make_secret grafana_admin_password "$(random 16)"
# deidentify/pseudonym's key file: EPOCH:BASE64KEY:CREATED
make_secret pseudonym_keys "1:$(head -c 32 /dev/urandom | base64 -w0):$(date -u +%Y-%m-%dT%H:%M:%SZ)"
# The key that seals the envelopes in Kafka (seal.key_file), same format.
make_secret seal_keys "1:$(head -c 32 /dev/urandom | base64 -w0):$(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "secrets.sh: the project token is $(cat "$dir/project_token")"
